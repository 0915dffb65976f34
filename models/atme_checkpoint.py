"""Checks and conversion for ATME checkpoints in the authors' release layout.

The release keeps one plain state_dict per network, `<epoch>_net_G.pth` and `<epoch>_net_W.pth`; the files
published with the paper call W `T` (`latest_net_T.pth`). Our G and W have the release's keys at the default
configuration, so conversion is a rename of T to W after a layout check.
"""
import logging
import os

import torch

log = logging.getLogger(__name__)

MAX_LISTED = 10
# Network names as they appear in released files -> our model names.
RELEASE_ALIASES = {"T": "W"}


def layout_of(state_or_module):
    """{key: shape tuple} of a state_dict or module."""
    state = state_or_module.state_dict() if isinstance(state_or_module, torch.nn.Module) else state_or_module
    return {k: tuple(v.shape) for k, v in state.items()}


def default_layouts():
    """Key -> shape of G and W at the release's default configuration (built from our own networks)."""
    from models.atme_blocks import WBlock
    from models.diffusion_unet import DiffusionUNet
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return {"G": layout_of(DiffusionUNet()), "W": layout_of(WBlock())}


def strip_module_prefix(state_dict):
    """Drop a leading 'module.' that DataParallel/DDP wrappers add to every key."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def check_reference_layout(state_dict, expected):
    """Problems of `state_dict` against `expected` {key: shape}: 'missing: k', 'unexpected: k', 'shape: k ...'.

    An empty list means the state_dict loads into a network with that layout.
    """
    have = layout_of(state_dict)
    expected = {k: tuple(v) for k, v in expected.items()}
    problems = [f"missing: {k}" for k in expected if k not in have]
    problems += [f"unexpected: {k}" for k in have if k not in expected]
    problems += [f"shape: {k} is {have[k]}, expected {expected[k]}"
                 for k in expected if k in have and have[k] != expected[k]]
    return problems


def format_problems(problems, limit=MAX_LISTED):
    """Problems grouped by kind, the first `limit` of each, as indented lines."""
    lines = []
    for kind in ("missing", "unexpected", "shape"):
        found = [p for p in problems if p.startswith(kind + ":")]
        if found:
            lines.append(f"  {len(found)} {kind}{' keys' if kind != 'shape' else ' mismatches'}:")
            lines += [f"    {p}" for p in found[:limit]]
            if len(found) > limit:
                lines.append(f"    ... and {len(found) - limit} more")
    return "\n".join(lines)


def load_state_dict_file(path):
    """A plain state_dict from `path` on the CPU, with a clear error for missing or unreadable files."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise RuntimeError(f"could not read checkpoint {path} ({type(err).__name__}: {err}); "
                           f"it should be a plain state_dict saved with torch.save") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RuntimeError(f"checkpoint {path} is not a plain state_dict (a dict of tensors)")
    return strip_module_prefix(state)


def check_or_raise(state_dict, expected, *, path, name):
    """Raise a RuntimeError listing the first problems when `state_dict` does not fit `expected`."""
    problems = check_reference_layout(state_dict, expected)
    if problems:
        raise RuntimeError(
            f"checkpoint {path} does not fit network {name} (it matches neither this configuration nor the "
            f"reference ATME layout):\n{format_problems(problems)}\n"
            f"check the architecture flags (--dim --dim_mults --init_dim --groups --input_nc --output_nc) or that "
            f"the file is an ATME {name}")


def release_file(run_dir, epoch, name):
    """Path of `<epoch>_net_<name>.pth` in run_dir, accepting the release's alias (T for W); None if absent."""
    candidates = [name] + [alias for alias, ours in RELEASE_ALIASES.items() if ours == name]
    for candidate in candidates:
        path = os.path.join(run_dir, f"{epoch}_net_{candidate}.pth")
        if os.path.isfile(path):
            return path
    return None


def _atomic_torch_save(obj, path):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def convert_release(run_dir, epoch="latest", *, out_dir=None, force=False, expected=None):
    """Check a released run dir and write `<epoch>_net_W.pth` from `<epoch>_net_T.pth`.

    W must have the reference layout (it has no size options); a G of another configuration is reported,
    not refused, since test.py loads it given the same architecture flags.

    Returns {name: path} of the files our model loads. Never overwrites an existing W unless `force`.
    `expected` ({'G': layout, 'W': layout}) defaults to the release's default configuration.
    """
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    expected = expected or default_layouts()
    out_dir = out_dir or run_dir
    os.makedirs(out_dir, exist_ok=True)
    result = {}
    for name in ("G", "W"):
        src = release_file(run_dir, epoch, name)
        if src is None:
            raise FileNotFoundError(f"{run_dir} holds no {epoch}_net_{name}.pth"
                                    f"{' or ' + epoch + '_net_T.pth' if name == 'W' else ''}; "
                                    f"pass the folder with the released ATME checkpoints and the right --epoch")
        state = load_state_dict_file(src)
        if name == "G":
            # G's layout depends on --dim/--dim_mults/...; a non-default G still loads with matching flags.
            problems = check_reference_layout(state, expected["G"])
            if problems:
                log.warning("%s does not have the default ATME layout (d=64, R=1,2,4,8); pass the flags it was "
                            "trained with to test.py:\n%s", src, format_problems(problems, limit=3))
        else:
            check_or_raise(state, expected[name], path=src, name=name)
        dst = os.path.join(out_dir, f"{epoch}_net_{name}.pth")
        if os.path.abspath(src) == os.path.abspath(dst):
            result[name] = dst
            continue
        if os.path.exists(dst) and not force:
            raise FileExistsError(f"{dst} already exists; pass --force to overwrite it")
        _atomic_torch_save(state, dst)
        log.info("wrote %s from %s (%d tensors)", dst, src, len(state))
        result[name] = dst
    return result

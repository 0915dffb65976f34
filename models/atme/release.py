"""Checks and conversion for ATME checkpoints in the authors' release layout.

The release keeps one plain state_dict per network, `<epoch>_net_G.pth` and `<epoch>_net_W.pth`; the files
published with the paper call W `T` (`latest_net_T.pth`). `release_layout.json` beside this file lists every
key and shape of the release's G (default configuration), W and D (basic PatchGAN, instance norm, 6 input
channels). Our networks have those keys, so conversion is a rename of T to W after a layout check.
"""
import json
import logging
import os

import torch

from util.run.checkpoint import atomic_save, describe_mismatch, layout_mismatch, load_file, strip_module_prefix

log = logging.getLogger(__name__)

LAYOUT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release_layout.json")
# Network names as they appear in released files -> our model names.
RELEASE_ALIASES = {"T": "W"}


def release_layouts():
    """{'G': {key: shape}, 'W': ..., 'D': ...} of the authors' release, from `release_layout.json`."""
    with open(LAYOUT_FILE) as f:
        return {net: {k: tuple(v) for k, v in keys.items()} for net, keys in json.load(f).items()}


def load_state_dict_file(path):
    """A plain state_dict from `path` on the CPU, with a clear error for missing or unreadable files."""
    state = load_file(path, "checkpoint")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RuntimeError(f"checkpoint {path} is not a plain state_dict (a dict of tensors)")
    return strip_module_prefix(state)


def check_or_raise(state_dict, expected, *, path, name):
    """Raise a RuntimeError listing the first differences when `state_dict` does not fit `expected`."""
    mismatch = layout_mismatch(expected, state_dict)
    if mismatch:
        raise RuntimeError(
            f"checkpoint {path} does not fit network {name} (it matches neither this configuration nor the "
            f"reference ATME layout): {describe_mismatch(mismatch)}. Check the architecture flags (--dim "
            f"--dim_mults --init_dim --groups --input_nc --output_nc) or that the file is an ATME {name}")


def release_file(run_dir, epoch, name):
    """Path of `<epoch>_net_<name>.pth` in run_dir, accepting the release's alias (T for W); None if absent."""
    candidates = [name] + [alias for alias, ours in RELEASE_ALIASES.items() if ours == name]
    for candidate in candidates:
        path = os.path.join(run_dir, f"{epoch}_net_{candidate}.pth")
        if os.path.isfile(path):
            return path
    return None


def convert_release(run_dir, epoch="latest", *, out_dir=None, force=False, expected=None):
    """Check a released run dir and write `<epoch>_net_W.pth` from `<epoch>_net_T.pth`.

    W must have the reference layout (it has no size options); a G of another configuration is reported,
    not refused, since test.py loads it given the same architecture flags.

    Returns {name: path} of the files our model loads. Never overwrites an existing W unless `force`.
    `expected` ({'G': layout, 'W': layout}) defaults to the release's default configuration.
    """
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    expected = expected or release_layouts()
    out_dir = out_dir or run_dir
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
            mismatch = layout_mismatch(expected["G"], state)
            if mismatch:
                log.warning("%s does not have the default ATME layout (d=64, R=1,2,4,8); pass the flags it was "
                            "trained with to test.py: %s", src, describe_mismatch(mismatch, limit=3))
        else:
            check_or_raise(state, expected[name], path=src, name=name)
        dst = os.path.join(out_dir, f"{epoch}_net_{name}.pth")
        if os.path.abspath(src) == os.path.abspath(dst):
            result[name] = dst
            continue
        if os.path.exists(dst) and not force:
            raise FileExistsError(f"{dst} already exists; pass --force to overwrite it")
        os.makedirs(out_dir, exist_ok=True)
        atomic_save(state, dst)
        log.info("wrote %s from %s (%d tensors)", dst, src, len(state))
        result[name] = dst
    return result

"""Export a test-time network to ONNX with a parity check, and find an export again for a runtime.

`export_graph` writes `<tag>_test_graph.onnx` and `<tag>_test_graph.json` into a run folder together (one
transaction): torch.onnx's exporter (torch.export, then onnxscript's graph optimiser) with dynamic batch and
spatial axes; before the files become visible, ONNX Runtime runs the graph on inputs of the exported size and
of another size and batch, and the export is refused, leaving nothing, when the largest absolute difference to
PyTorch exceeds the tolerance. The JSON records what a runtime needs (inputs, layouts, ranges, the size
multiple), the parity figures, the source checkpoints' SHA-256 (so a stale export is recognised) and the
framework's commit.
"""
import hashlib
import json
import logging
import os
import re
import subprocess
import warnings

import torch

from util.run import transaction as transactions

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_TOLERANCE = 1e-4  # fp32, on outputs in [-1, 1]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ExportError(ValueError):
    """An export that could not be made or did not match PyTorch; nothing was written."""


def graph_paths(run_dir, tag):
    """(ONNX path, JSON path) of the export of checkpoint `tag` in `run_dir`."""
    stem = os.path.join(run_dir, f"{tag}_test_graph")
    return stem + ".onnx", stem + ".json"


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def framework_commit():
    """The git commit of this checkout, with `-dirty` when tracked files differ from it; None outside git."""
    try:
        commit = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def dynamic_shapes(feeds):
    """torch.export dynamic axes: a batch shared by all inputs, and free spatial axes of every 4-D input."""
    batch = torch.export.Dim("batch")
    shapes = {}
    for name, tensor in feeds.items():
        axes = {0: batch}
        if tensor.dim() == 4:
            axes.update({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
        shapes[name] = axes
    return shapes


def to_onnx(module, feeds, output_names, path, opset=None):
    """Write `module` called on `feeds` (an ordered {input name: example tensor}) as ONNX to `path`."""
    module.eval()
    names = list(feeds)
    kwargs = {"opset_version": opset} if opset else {}
    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # the exporter's optimiser logs every initialiser it merges
        logger.setLevel(logging.WARNING)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, tuple(feeds.values()), dynamo=True, input_names=names,
                                        output_names=list(output_names), dynamic_shapes=dynamic_shapes(feeds),
                                        optimize=True, verbose=False, **kwargs)
            program.save(path)
    except Exception as err:  # the exporter raises many kinds; the user needs the message, not the kind
        cause = err.__cause__ or err
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip()
        raise ExportError(f"torch.onnx could not export the network: {type(cause).__name__}: "
                          f"{text.splitlines()[0] if text else ''} (--verbose shows the whole report)") from err
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def max_difference(reference, outputs):
    """{output name: max |a - b|} over the outputs both hold."""
    return {name: float((reference[name].float() - outputs[name].float()).abs().max()) for name in reference}


def parity(module, run, check_feeds, output_names):
    """[(shape of the image, {output: max abs difference})] of `run` against `module` on each feed."""
    results = []
    with torch.no_grad():
        for feeds in check_feeds:
            expected = module(*feeds.values())
            expected = expected if isinstance(expected, (tuple, list)) else (expected,)
            reference = dict(zip(output_names, expected))
            results.append((list(feeds["image"].shape), max_difference(reference, run(feeds))))
    return results


def export_graph(spec, run_dir, tag, metadata, *, sources, tolerance=DEFAULT_TOLERANCE, export_size, opset=None):
    """Export `spec` (a models.export_graph.GraphSpec) for checkpoint `tag` of the run in `run_dir`.

    `sources` are the checkpoint files the weights came from, `metadata` goes into the JSON as it is, and
    `export_size` is the (H, W) the example input has. Returns (ONNX path, JSON path, payload).
    """
    from util.export.runtimes import OnnxRuntimeRunner
    onnx_path, json_path = graph_paths(run_dir, tag)
    output_names = [o.name for o in spec.outputs]
    height, width = export_size
    m = spec.size_multiple
    # Batch 2 at the exported size; then batch 1 at a size the export never saw, which the dynamic axes must serve.
    check_feeds = [spec.example_inputs(2, height, width, seed=1),
                   spec.example_inputs(1, height + m, width + 2 * m, seed=2)]
    payload = {
        "format_version": FORMAT_VERSION, "file": os.path.basename(onnx_path), "family": spec.family,
        "inputs": [i.as_json() for i in spec.inputs], "outputs": [o.as_json() for o in spec.outputs],
        "dynamic_axes": "B, H, W (and h, w of disc_prev) are free; C and nz are fixed",
        "size_multiple": m, "min_size": spec.min_size, "size_rule": spec.size_description,
        "padding": f"pad H and W up to multiples of {m} (at least {spec.min_size}); crop the output back",
        "export_size": [height, width], "tolerance": tolerance, **spec.extra, **metadata,
        "sources": [{"file": os.path.basename(p), "sha256": file_sha256(p), "bytes": os.path.getsize(p)}
                    for p in sources],
        "framework_commit": framework_commit(),
        "versions": {"torch": torch.__version__, **_package_versions()},
    }
    with transactions.Transaction(run_dir, f"{tag}_test_graph") as transaction:
        def fill(tmp):
            to_onnx(spec.module, spec.example_inputs(2, height, width, seed=0), output_names, tmp, opset=opset)
            results = parity(spec.module, OnnxRuntimeRunner(tmp), check_feeds, output_names)
            worst = max(max(d.values()) for _, d in results)
            payload["parity"] = [{"image_shape": shape, "max_abs_difference": d} for shape, d in results]
            payload["opset"] = _opset_of(tmp)
            for shape, d in results:
                log.info("parity with PyTorch on ONNX Runtime, image %s: %s", "x".join(map(str, shape)),
                         ", ".join(f"{k} max |diff| {v:.2e}" for k, v in d.items()))
            if not worst <= tolerance:
                raise ExportError(f"the exported graph differs from PyTorch by up to {worst:.3e} (tolerance "
                                  f"{tolerance:.0e}): nothing was written. Check the exporter versions, or pass a "
                                  f"larger --tolerance if the difference is acceptable")
        transaction.fill(onnx_path, fill)
        transaction.write(json_path, lambda handle: handle.write((json.dumps(payload, indent=1) + "\n").encode()))
    return onnx_path, json_path, payload


def _opset_of(path):
    import onnx
    model = onnx.load(path, load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)


def _package_versions():
    from importlib import metadata
    found = {}
    for name in ("onnx", "onnxruntime", "onnxscript", "openvino"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def load_export(run_dir, tag, sources, export_command):
    """The ONNX path and JSON payload of checkpoint `tag`'s export, checked against the current checkpoint files.

    Refuses (FileNotFoundError / ValueError) with `export_command` when the export is missing or was made from
    other weights.
    """
    onnx_path, json_path = graph_paths(run_dir, tag)
    if not (os.path.isfile(onnx_path) and os.path.isfile(json_path)):
        raise FileNotFoundError(f"no exported graph of checkpoint '{tag}' in {run_dir} ({os.path.basename(onnx_path)}"
                                f" and {os.path.basename(json_path)}). Export it first:\n  {export_command}")
    try:
        with open(json_path) as handle:
            payload = json.load(handle)
        recorded = {s["file"]: s["sha256"] for s in payload["sources"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{json_path} is unreadable ({err}). Export again:\n  {export_command}") from None
    for path in sources:
        name = os.path.basename(path)
        if recorded.get(name) != file_sha256(path):
            raise ValueError(f"{onnx_path} was exported from other weights than the current {path}. Export "
                             f"again:\n  {export_command}")
    return onnx_path, payload

"""Export a test-time network to ONNX with a parity check, and find an export again for a runtime.

`export_graph` writes `<tag>_test_graph.onnx` and `<tag>_test_graph.json` into a run folder together (one
transaction): torch.onnx's exporter (torch.export, then onnxscript's graph optimiser) with dynamic batch and
spatial axes; before the files become visible, ONNX Runtime runs the graph on inputs of the exported size and
of another size and batch, and the export is refused, leaving nothing, when the largest absolute difference to
PyTorch exceeds the tolerance. The JSON records what a runtime needs (inputs, layouts, ranges, the size
multiple), the parity figures, the graph's own SHA-256, the source checkpoints' SHA-256 (so a stale export is
recognised) and the framework's commit. `open_export` checks both before a runtime reads the graph: a damaged,
truncated or stale graph is refused naming the file and the command that exports it again.
"""
import json
import logging
import os
import re
import subprocess
import warnings

import torch

from util.export.runtimes import RuntimeUnavailable, open_runner
from util.run import transaction as transactions
from util.run.integrity import sha256_of

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: the graph's own SHA-256 ("graph")
DEFAULT_TOLERANCE = 1e-4  # fp32, on outputs in [-1, 1]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ExportError(ValueError):
    """An export that could not be made or did not match PyTorch; nothing was written."""


class ExportRefused(ValueError):
    """An export that is missing, stale, damaged or unreadable; the message names the file and the command that
    exports it again."""
    refusal = True  # util.command_line.cli: no traceback hint


def graph_paths(run_dir, tag):
    """(ONNX path, JSON path) of the export of checkpoint `tag` in `run_dir`."""
    stem = os.path.join(run_dir, f"{tag}_test_graph")
    return stem + ".onnx", stem + ".json"


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


def parity(reference, run, check_feeds):
    """[(shape of the image, {output: max abs difference})] of `run` against `reference` (both {input name:
    tensor} -> {output name: tensor}) on each feed."""
    results = []
    with torch.no_grad():
        for feeds in check_feeds:
            expected = reference(feeds)
            results.append((list(next(iter(feeds.values())).shape), max_difference(expected, run(feeds))))
    return results


def export_graph(spec, run_dir, tag, metadata, *, sources, tolerance=DEFAULT_TOLERANCE, export_size, opset=None):
    """Export `spec` (a util.export.graph_spec.GraphSpec, from `model.export_graph()`) for checkpoint `tag` of the
    run in `run_dir`.

    `sources` are the checkpoint files the weights came from, `metadata` goes into the JSON as it is, and
    `export_size` is the (H, W) the example input has. Returns (ONNX path, JSON path, payload).
    """
    onnx_path, json_path = graph_paths(run_dir, tag)
    height, width = export_size
    rule = spec.size_rule
    m = rule.multiple
    # Batch 2 at the exported size; then batch 1 at a size the export never saw, which the dynamic axes must serve.
    check_feeds = [spec.example_inputs(2, height, width, seed=1),
                   spec.example_inputs(1, height + m, width + 2 * m, seed=2)]
    payload = {
        "format_version": FORMAT_VERSION, "file": os.path.basename(onnx_path),
        "inputs": [i.as_json() for i in spec.inputs], "outputs": [o.as_json() for o in spec.outputs],
        "dynamic_axes": "B, H, W (and the spatial axes of every other 4-D input) are free; channels are fixed",
        "size_multiple": m, "min_size": rule.min_size, "size_rule": rule.description,
        "padding": f"pad H and W up to multiples of {m} (at least {rule.min_size}); crop the output back",
        "export_size": [height, width], "tolerance": tolerance, **spec.extra, **metadata,
        "sources": [{"file": os.path.basename(p), "sha256": sha256_of(p), "bytes": os.path.getsize(p)}
                    for p in sources],
        "framework_commit": framework_commit(),
        "versions": {"torch": torch.__version__, **_package_versions()},
    }
    with transactions.Transaction(run_dir, f"{tag}_test_graph") as transaction:
        def fill(tmp):
            to_onnx(spec.module, spec.example_inputs(2, height, width, seed=0), spec.output_names, tmp, opset=opset)
            results = parity(spec.torch_runner(), open_runner(tmp, "onnxruntime"), check_feeds)
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
            # The staged file is complete: its checksum is that of the graph a runtime will read.
            payload["graph"] = {"file": os.path.basename(onnx_path), "sha256": sha256_of(tmp),
                                "bytes": os.path.getsize(tmp)}
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
    """The ONNX path and JSON payload of checkpoint `tag`'s export, checked before any runtime reads the graph:
    the graph's bytes against the SHA-256 its JSON recorded, and the JSON's source checksums against the current
    checkpoint files `sources`. Refuses (ExportRefused, naming the file and `export_command`) a missing, damaged,
    truncated or stale export."""
    onnx_path, json_path = graph_paths(run_dir, tag)
    again = f"Export it again:\n  {export_command}"
    if not (os.path.isfile(onnx_path) and os.path.isfile(json_path)):
        raise ExportRefused(f"no exported graph of checkpoint '{tag}' in {run_dir} ({os.path.basename(onnx_path)} "
                            f"and {os.path.basename(json_path)}). Export it first:\n  {export_command}")
    try:
        with open(json_path) as handle:
            payload = json.load(handle)
        recorded = {s["file"]: s["sha256"] for s in payload["sources"]}
        graph = payload.get("graph")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ExportRefused(f"{json_path} is unreadable ({err}). {again}") from None
    if not (isinstance(graph, dict) and isinstance(graph.get("sha256"), str)):
        raise ExportRefused(f"{json_path} records no SHA-256 of {os.path.basename(onnx_path)} (an export of an "
                            f"earlier version), so the graph cannot be checked. {again}")
    size, digest = os.path.getsize(onnx_path), sha256_of(onnx_path)
    if digest != graph["sha256"]:
        state = (f"truncated: {size} bytes of the {graph.get('bytes')} exported" if size != graph.get("bytes")
                 else "damaged: its SHA-256 differs from the one recorded at export")
        raise ExportRefused(f"{onnx_path} is not the graph that was exported ({state}; recorded in {json_path}). "
                            f"{again}")
    for path in sources:
        name = os.path.basename(path)
        if recorded.get(name) != sha256_of(path):
            raise ExportRefused(f"{onnx_path} was exported from other weights than the current {path}. "
                                f"{again}")
    return onnx_path, payload


def open_graph(path, backend, precision, export_command):
    """The runner of `backend` for the checked graph `path` (`load_export`); a graph the runtime cannot read is
    refused naming the file and `export_command`."""
    try:
        return open_runner(path, backend, precision)
    except RuntimeUnavailable:
        raise
    except Exception as err:  # the runtimes raise their own kinds, with long reports
        text = str(err).strip().splitlines()
        raise ExportRefused(f"{backend} cannot read {path}: {type(err).__name__}: {text[0] if text else ''}. "
                            f"Export it again:\n  {export_command}") from err

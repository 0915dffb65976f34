"""Export a run's test-time generator to ONNX next to its checkpoints, checked against PyTorch.

    python -m scripts.tools.export --name facades_atme [--epoch latest] [--checkpoints_dir ./checkpoints]

Writes `<checkpoints_dir>/<name>/<epoch>_test_graph.onnx` and `<epoch>_test_graph.json` (inputs, layouts,
value ranges, the size multiple, options, commit, parity figures). The architecture comes from the run's
train_opt.json, as for test.py; the other test.py flags that pick the checkpoint (--epoch, --load_iter) apply.
The export is refused, leaving nothing behind, when ONNX Runtime's outputs differ from PyTorch's by more than
--tolerance on inputs of the exported size and of another size.
"""
import argparse
import logging
import os
import sys

if not __package__:  # run as `python scripts/tools/export.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import create_model
from models.export_graph import checkpoint_files, export_command, graph_spec, mode_dependent_layers
from options.test_options import TestOptions
from util.command_line.cli import run_main
from util.export.onnx_export import DEFAULT_TOLERANCE, export_graph
from util.run.run_logs import setup_logging

log = logging.getLogger("export")


def export_parser():
    parser = argparse.ArgumentParser(prog="python -m scripts.tools.export", description=__doc__, add_help=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="file format")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="largest max |torch - ONNX Runtime| accepted on the [-1, 1] outputs")
    parser.add_argument("--export_size", type=int, default=None,
                        help="side of the example input (default: the run's --crop_size, rounded up to the "
                             "generator's size multiple); the file takes any size")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    return parser


def main(args=None):
    args = sys.argv[1:] if args is None else list(args)
    parser = export_parser()
    own, rest = parser.parse_known_args(args)
    if own.help:
        parser.print_help()
        print("\nAlso: --name, --checkpoints_dir, --epoch, --load_iter (as for test.py).")
        return 0
    if not own.tolerance > 0:
        parser.error(f"--tolerance must be positive, got {own.tolerance}")
    setup_logging()
    if "--gpu_ids" not in rest:
        rest += ["--gpu_ids", "-1"]  # the parity check compares with PyTorch on the CPU, as ONNX Runtime runs there
    opt = TestOptions().parse(rest)
    opt.num_threads = 0
    model = create_model(opt)
    model.setup(opt)
    model.eval()
    tag = f"iter_{opt.load_iter}" if opt.load_iter else opt.epoch
    spec = graph_spec(model)
    side = own.export_size or opt.crop_size
    side = max(spec.min_size, -(-side // spec.size_multiple) * spec.size_multiple)
    metadata = {"model": opt.model, "checkpoint": tag, "mode": "eval",
                "mode_dependent_layers": mode_dependent_layers(spec.module),
                "options": {k: getattr(opt, k) for k in model.architecture_flags if hasattr(opt, k)},
                "export_command": export_command(opt, tag)}
    onnx_path, json_path, payload = export_graph(
        spec, model.save_dir, tag, metadata, sources=checkpoint_files(model, tag), tolerance=own.tolerance,
        export_size=(side, side), opset=own.opset)
    worst = max(max(p["max_abs_difference"].values()) for p in payload["parity"])
    log.info("exported %s (opset %s; max |torch - onnxruntime| %.2e <= %.0e) and %s", onnx_path, payload["opset"],
             worst, own.tolerance, json_path)
    log.info("run it: python test.py --checkpoints_dir %s --name %s --epoch %s --backend onnxruntime (or openvino)",
             opt.checkpoints_dir, opt.name, opt.epoch)
    return 0


if __name__ == "__main__":
    run_main(main)

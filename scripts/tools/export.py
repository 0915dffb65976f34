"""Export a run's test-time generator to ONNX next to its checkpoints, checked against PyTorch.

    python -m scripts.tools.export --name facades_atme [--epoch latest] [--checkpoints_dir ./checkpoints]

Writes `<checkpoints_dir>/<name>/<epoch>_test_graph.onnx` and `<epoch>_test_graph.json` (inputs, layouts,
value ranges, the size multiple, options, commit, parity figures, the graph's SHA-256). The architecture comes
from the run's train_opt.json, as for test.py; the other test.py flags that pick the checkpoint (--epoch,
--load_iter) apply. The export is refused, leaving nothing behind, when ONNX Runtime's outputs differ from
PyTorch's by more than --tolerance on inputs of the exported size and of another size. It writes into the run
folder, so it takes the run's lock: while a training runs there, it is refused, naming the training.
"""
import argparse
import logging
import os
import sys

if not __package__:  # run as `python scripts/tools/export.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import create_model
from models.inference import padded_side
from options.test_options import TestOptions
from util.command_line import commands
from util.command_line.cli import run_main
from util.export.graph_spec import mode_dependent_layers
from util.export.onnx_export import DEFAULT_TOLERANCE
from util.run.run_folder import RunFolder, RunFolderError
from util.run.run_logs import setup_logging

log = logging.getLogger("export")


def export_parser():
    parser = argparse.ArgumentParser(prog="python -m scripts.tools.export", description=__doc__, add_help=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="file format")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="largest max |torch - ONNX Runtime| accepted on the [-1, 1] outputs")
    parser.add_argument("--export_size", type=int, default=None,
                        help="side of the example input (default: the run's --crop_size, rounded up to the "
                             "generator's size multiple); the file takes any size")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    return parser


def run_command(model, tag):
    """test.py on the export, as it has to be typed: --eval when the generator has layers that act differently in
    train mode (the graph is the eval-mode network)."""
    extra = ["--backend", "onnxruntime"] + (["--eval"] if mode_dependent_layers(model.export_graph().module) else [])
    return commands.test_command(model.opt.name, model.opt.checkpoints_dir, tag, extra)


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
    tag = f"iter_{opt.load_iter}" if opt.load_iter else opt.epoch  # --epoch is a plain name (options check it)
    opt.num_threads = 0
    folder = RunFolder(opt.run_dir)
    if not os.path.isdir(folder.path):
        raise FileNotFoundError(f"no run folder {folder.path}: check --name and --checkpoints_dir")
    command = commands.export_command(opt.name, opt.checkpoints_dir, tag)
    try:  # the export writes into the run folder: no training may start, save or tidy there meanwhile
        folder.lock([*commands.script_tokens("export"), *args])
    except RunFolderError as err:
        raise RunFolderError(f"{err}\nAn export writes into the run folder and takes its lock; export when the "
                             f"training has ended:\n  {command}") from None
    try:
        model = create_model(opt)
        model.setup(opt)
        model.eval()
        side = padded_side(own.export_size or opt.crop_size, model.size_rule())
        onnx_path, json_path, payload = model.export(tag, (side, side), tolerance=own.tolerance, opset=own.opset)
    finally:
        folder.release()
    worst = max(max(p["max_abs_difference"].values()) for p in payload["parity"])
    log.info("exported %s (opset %s; max |torch - onnxruntime| %.2e <= %.0e) and %s", onnx_path, payload["opset"],
             worst, own.tolerance, json_path)
    log.info("run it (or with --backend openvino):\n  %s", run_command(model, tag))
    return 0


if __name__ == "__main__":
    run_main(main)

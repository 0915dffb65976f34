"""Test flags. Architecture options come from the run's stored `train_opt.json`."""
import logging

from options.base_options import BaseOptions, load_stored_options, run_dir, save_options, stored_values
from models.inference import PAD_MODES
from util.command_line.arg_types import add_bool_flag
from util.export.backends import BACKEND_CHOICES, PRECISIONS, precision_problem
from util.run.run_names import run_path
from util.command_line.flags import ARCHITECTURE, INVOCATION, TAKEN_BY_TEST

log = logging.getLogger(__name__)


class TestOptions(BaseOptions):
    """Run a trained model over a data split and write images plus an HTML page."""

    isTrain = False
    prog = "test.py"
    entry = "test"

    def initialize(self, parser):
        parser = super().initialize(parser)
        # test.py runs one process: the shared --gpu_ids help speaks of training's processes per GPU.
        parser._option_string_actions["--gpu_ids"].help = (
            "GPU id, e.g. 0 (test.py runs one process, on the first id listed); -1 is the CPU. The default fits "
            "this machine: 0 with CUDA, else -1")
        g = parser.add_argument_group("test")
        g.add_argument("--results_dir", lifetime=INVOCATION, type=str, default="./results", help="results go to <results_dir>/<name>/")
        g.add_argument("--aspect_ratio", lifetime=INVOCATION, type=float, default=1.0, help="aspect ratio of saved images")
        g.add_argument("--phase", lifetime=INVOCATION, type=str, default="test", help="train, val, test, ...")
        g.add_argument("--epoch", lifetime=INVOCATION, type=str, default="latest", help="which checkpoint: latest, best or an epoch number")
        g.add_argument("--load_iter", lifetime=INVOCATION, type=int, default=0, help="load 'iter_<N>' when > 0")
        add_bool_flag(g, "--no_verify", lifetime=INVOCATION, help="load the weights without checking them against the SHA-256 sums "
                                             "saved with them (<tag>_checksums.json); for huge files")
        add_bool_flag(g, "--eval", lifetime=INVOCATION, help="networks in eval mode (batch norm statistics, no dropout)")
        g.add_argument("--num_test", lifetime=INVOCATION, type=int, default=None, help="process at most N inputs (default: all)")
        g.add_argument("--amp", lifetime=INVOCATION, type=str, default="none", choices=["none", "bf16", "fp16"], help="mixed precision")
        add_bool_flag(g, "--channels_last", lifetime=INVOCATION, help="channels-last memory format")
        add_bool_flag(g, "--compile", lifetime=INVOCATION, help="torch.compile the networks")
        size = parser.add_argument_group("image size (with --preprocess none results keep each input's size)")
        size.add_argument("--pad_mode", lifetime=INVOCATION, choices=PAD_MODES, default="reflect",
                          help="how inputs are padded to the size the generator takes (constant: mid-grey); "
                               "outputs are cropped back")
        size.add_argument("--tile", lifetime=INVOCATION, type=int, default=0,
                          help="if > 0: run the generator on tiles of this many pixels square and blend them, so "
                               "memory follows the tile, not the image (0: the whole image at once)")
        size.add_argument("--tile_overlap", lifetime=INVOCATION, type=int, default=None,
                          help="pixels shared by neighbouring tiles (default: a quarter of --tile); tiled equals "
                               "whole-image output when the generator's receptive field reaches at most a quarter "
                               "of it")
        g.add_argument("--backend", lifetime=INVOCATION, default="torch", choices=BACKEND_CHOICES,
                       help="what runs the generator: PyTorch, or the run's exported ONNX graph (python -m "
                            "scripts.tools.export) on ONNX Runtime or OpenVINO; auto: the fastest of the three "
                            "in fp32, timed here on one image before the test")
        g.add_argument("--precision", lifetime=INVOCATION, default="fp32", choices=PRECISIONS,
                       help="--backend openvino: bf16 on CPUs with native bf16 (faster, not exact: see docs/export.md)")
        return parser

    def parse(self, args=None):
        import sys
        args = sys.argv[1:] if args is None else list(args)
        parser = self.build_parser(args)
        # Known args only: flags of the stored model (e.g. --n_samples) are unknown to the default one.
        first, _ = parser.parse_known_args([a for a in args if a not in ("-h", "--help")])
        self.named(first)  # --suffix is part of the name: the run's folder is the suffixed one
        stored = load_stored_options(run_dir(first))
        if stored is not None:
            # The stored model may differ from the default: rebuild the parser for it.
            if "model" not in self.explicit_flags(parser, args) and stored.get("model") != first.model:
                args = ["--model", stored["model"]] + args
                parser = self.build_parser(args)
            opt = parser.parse_args(args)
            self.apply_stored(opt, parser, args, stored, run_dir(first))
        else:
            opt = parser.parse_args(args)
            log.info("no train_opt.json in %s: using the flags as given", run_dir(first))
        opt.isTrain = False
        opt = self.resolve(opt, parser, args)
        self.parser = parser
        return opt

    def apply_stored(self, opt, parser, args, stored, directory):
        """Take the run's flags whose lifetime test.py follows (architecture, data) unless typed; a typed
        architecture flag that contradicts the run is refused."""
        explicit = self.explicit_flags(parser, args)
        conflicts, flags = [], []
        architecture = set(parser.flag_table.names(ARCHITECTURE))
        # (flags that test.py owns, --phase or --amp, are run flags of the training that stored them: no note)
        for key, value in stored_values(stored, parser.flag_table, directory, []).items():
            if parser.flag_table.lifetime(key) not in TAKEN_BY_TEST:
                continue
            if isinstance(value, list):
                value = tuple(value)
            current = getattr(opt, key)
            if key in explicit:
                if key in architecture and current != value:
                    conflicts.append(f"--{key} {current} (the run was trained with --{key} {value})")
                    flags.append(f"--{key}")
                continue
            setattr(opt, key, value)
        if conflicts:
            raise ValueError(
                f"these flags contradict the options stored with the run in {directory}/train_opt.json: "
                + "; ".join(conflicts) + ". Drop them (test.py takes them from the run) or pick another --name:\n"
                + f"  {self.retry_command(parser, args, tuple(flags), ())}")
        if "load_size" not in explicit:
            opt.load_size = opt.crop_size  # no random crop at test time
        log.info("architecture and data options taken from %s/train_opt.json", directory)

    def resolve(self, opt, parser, args):
        opt = super().resolve(opt, parser, args)
        if opt.tile_overlap is not None and not opt.tile:
            parser.error(f"--tile_overlap {opt.tile_overlap} applies to tiles, and --tile is off: add --tile N "
                         f"(e.g. --tile 512 --tile_overlap {opt.tile_overlap}), or drop --tile_overlap")
        if opt.tile < 0 or (opt.tile_overlap is not None and not 0 <= opt.tile_overlap < max(opt.tile, 1)):
            parser.error(f"--tile must be 0 (off) or positive and --tile_overlap at least 0 and smaller than --tile, "
                         f"got --tile {opt.tile} --tile_overlap {opt.tile_overlap}; e.g. --tile 512 --tile_overlap 128")
        opt.no_flip = True
        opt.serial_batches = True
        opt.run_dir = run_dir(opt)
        run_path(opt.results_dir, opt.name, "--results_dir")  # test.py writes <results_dir>/<name>/
        if opt.backend != "torch":
            torch_only = [f"--{k}" for k in ("compile", "channels_last") if getattr(opt, k)]
            torch_only += ["--amp"] if opt.amp != "none" else []
            if torch_only:
                parser.error(f"{', '.join(torch_only)} apply to --backend torch; --backend {opt.backend} runs the "
                             f"exported graph (for bf16 use --backend openvino --precision bf16)")
        if precision_problem(opt.backend, opt.precision):
            parser.error(precision_problem(opt.backend, opt.precision))
        return opt

    def save(self, opt, directory):
        """Write test_opt.txt / test_opt.json into `directory` (the results folder: test.py never writes to the
        run folder, which may be read-only)."""
        save_options(opt, self.parser, "test", directory)

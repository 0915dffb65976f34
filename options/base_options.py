"""Options shared by training and testing, with the flag names of the pix2pix code base.

Parsing happens in two passes: the first finds `--model` and `--dataset_mode`, whose
`modify_commandline_options` then add their own flags and change defaults; the second parses everything.
Resolved options are written to the run directory as text (values that differ from the default are marked)
and as JSON, which `test.py` reads back so a user need not repeat architecture flags.
"""
import argparse
import json
import logging
import os
import shlex
import sys

import torch

import data
import models
from options.flag_parser import FlagParser
from options.help_format import HelpFormatter
from util.process import cpu_allocator
from util.command_line.arg_types import BOOL_WORDS, add_bool_flag, gpu_ids
from util.command_line.cli import UsageError
from util.process.devices import missing_gpus, usable_cores
from util.run.atomic import WriteError, atomic_write_text
from util.command_line.registry import available_names
from util.run.run_names import run_path

log = logging.getLogger(__name__)

# Flags that are properties of one invocation (where the data is, which device, how many workers); never
# taken from the stored run.
INVOCATION_FLAGS = ("dataroot", "name", "checkpoints_dir", "gpu_ids", "phase", "batch_size", "num_threads",
                    "serial_batches", "max_dataset_size", "display_winsize", "verbose", "seed", "suffix",
                    "skip_bad_images", "no_flip", "amp", "channels_last", "compile", "cpu_allocator", "epoch",
                    "load_iter", "isTrain", "results_dir", "num_test", "eval", "aspect_ratio", "nproc_per_node",
                    "lock", "no_verify", "reset_pool")


class BaseOptions:
    """Defines the common flags; subclasses add train- or test-specific ones."""

    isTrain = None
    prog = None  # the CLI's name in messages (train.py, test.py)

    def initialize(self, parser):
        g = parser.add_argument_group("basic")
        g.add_argument("--dataroot", default=None,
                       help="dataset folder (aligned: with train/ val/ test/; unaligned: trainA/ trainB/ ...)")
        g.add_argument("--name", default="experiment_name",
                       help="run name: outputs go to <checkpoints_dir>/<name>/")
        g.add_argument("--gpu_ids", default="0" if torch.cuda.is_available() else "-1", type=str,
                       help="GPU ids, e.g. 0 or 0,1; training with several ids starts one process per GPU "
                            "(DistributedDataParallel, see --nproc_per_node); -1 is the CPU. The default fits this "
                            "machine: 0 with CUDA, else -1")
        g.add_argument("--cpu_allocator", default="auto", choices=cpu_allocator.MODES,
                       help="auto/reuse: freed memory stays with the process for the next step (glibc; ATME trains "
                            "1.8x faster at 256x256 on the CPU, at about a third more peak resident memory); "
                            "system: malloc as it is. See util/process/cpu_allocator.py")
        g.add_argument("--checkpoints_dir", default="./checkpoints", help="where run directories live")
        g.add_argument("--seed", type=int, default=None, help="seed Python, NumPy, torch and data order")
        add_bool_flag(g, "--verbose", help="print network architectures and debug logs")
        g.add_argument("--suffix", default="", type=str,
                       help="customised suffix appended to --name, e.g. {model}_{netG}_size{load_size}")

        g = parser.add_argument_group("model")
        g.add_argument("--model", type=str, default="pix2pix",
                       help=f"model family; one of: {', '.join(available_names('models', '_model'))}")
        g.add_argument("--input_nc", type=int, default=3, help="input channels: 3 for RGB, 1 for grayscale")
        g.add_argument("--output_nc", type=int, default=3, help="output channels: 3 for RGB, 1 for grayscale")
        g.add_argument("--ngf", type=int, default=64, help="generator filters in the last conv layer")
        g.add_argument("--ndf", type=int, default=64, help="discriminator filters in the first conv layer")
        g.add_argument("--netD", type=str, default="basic",
                       help="basic (70x70 PatchGAN) | n_layers | pixel")
        g.add_argument("--netG", type=str, default="resnet_9blocks",
                       help="resnet_9blocks | resnet_6blocks | unet_256 | unet_128 | unet (depth follows --crop_size)")
        g.add_argument("--n_layers_D", type=int, default=3, help="discriminator depth when --netD n_layers")
        g.add_argument("--norm", type=str, default="instance", help="instance | batch | none")
        g.add_argument("--init_type", type=str, default="normal", help="normal | xavier | kaiming | orthogonal")
        g.add_argument("--init_gain", type=float, default=0.02, help="scale for normal, xavier and orthogonal")
        add_bool_flag(g, "--no_dropout", help="no dropout in the generator")

        g = parser.add_argument_group("data")
        g.add_argument("--dataset_mode", type=str, default="unaligned",
                       help=f"dataset layout; one of: {', '.join(available_names('data', '_dataset'))}")
        g.add_argument("--direction", type=str, default="AtoB", choices=["AtoB", "BtoA"], help="AtoB or BtoA")
        add_bool_flag(g, "--serial_batches", help="take images in order instead of shuffled")
        g.add_argument("--num_threads", default=usable_cores(), type=int,
                       help="data-loading worker processes (0: in the main process); the default is this machine's "
                            "usable cores, at most 8")
        g.add_argument("--batch_size", type=int, default=1, help="input batch size")
        g.add_argument("--load_size", type=int, default=286, help="scale images to this size")
        g.add_argument("--crop_size", type=int, default=256, help="then crop to this size")
        g.add_argument("--max_dataset_size", type=int, default=float("inf"),
                       help="use at most this many images of the folder")
        g.add_argument("--preprocess", type=str, default="resize_and_crop",
                       help="resize_and_crop | crop | scale_width | scale_width_and_crop | none")
        add_bool_flag(g, "--no_flip", help="no random horizontal flips")
        g.add_argument("--display_winsize", type=int, default=256, help="display size of images in visdom and HTML")
        add_bool_flag(g, "--skip_bad_images",
                      help="decode and check every image at start (pixel format, aligned layout, size for the crop); "
                           "skip the ones that cannot be used and list them (default: every file's header is checked "
                           "at start and a bad one stops the run with its name)")
        return parser

    # ------------------------------------------------------------------ parsing
    def build_parser(self, args):
        """The full parser for `args`: base flags plus the chosen model's and dataset's."""
        # The early passes must not act on --help: the model's and dataset's flags are not there yet.
        early = [a for a in args if a not in ("-h", "--help")]
        parser = FlagParser(formatter_class=HelpFormatter, description=self.__doc__, prog=self.prog,
                            usage=f"%(prog)s --dataroot DIR --name NAME [--model "
                                  f"{'|'.join(available_names('models', '_model'))}] [flags below]")
        self.initialize(parser)
        known, _ = parser.parse_known_args(early)
        try:
            model_class = models.find_model_using_name(known.model)
        except ValueError as err:
            raise UsageError(f"--model: {err}", help_hint=parser.help_hint()) from None
        model_class.modify_commandline_options(parser, self.isTrain)
        parser.flag_owners = self.models_with_flag
        # Flags of the common groups that this model does without are not accepted, nor shown by --help.
        parser.remove_flags(set(model_class.unused_flags), known.model)
        # The flags that define the networks (the model declares them): test.py takes them from the run.
        self.architecture_flags = model_class.architecture_flags
        self.loss_flags = model_class.loss_flags
        known, _ = parser.parse_known_args(early)  # the model may change the dataset_mode default
        data.get_option_setter(known.dataset_mode)(parser, self.isTrain)
        return parser

    def models_with_flag(self, flag):
        """The models (by --model name) whose command line has `flag`; used to say whose a foreign flag is."""
        owners = []
        for name in available_names("models", "_model"):
            try:
                model_class = models.find_model_using_name(name)
            except ValueError:
                continue
            scratch = FlagParser(prog=self.prog)
            self.initialize(scratch)
            model_class.modify_commandline_options(scratch, self.isTrain)
            action = scratch._option_string_actions.get(flag)
            if action is not None and action.dest not in model_class.unused_flags:
                owners.append(name)
        return owners

    def parse(self, args=None):
        """Parse `args` (default: sys.argv[1:]), resolve them and write them to the run directory."""
        args = sys.argv[1:] if args is None else list(args)
        parser = self.build_parser(args)
        opt = parser.parse_args(args)
        opt.isTrain = self.isTrain
        opt = self.resolve(opt, parser, args)
        self.parser = parser
        return opt

    @staticmethod
    def named(opt):
        """`opt` with --suffix appended to --name (call once per namespace)."""
        if opt.suffix:
            opt.name = opt.name + "_" + opt.suffix.format(**vars(opt))
        return opt

    def resolve(self, opt, parser, args):
        """Derived values shared by train and test."""
        self.named(opt)
        opt.gpu_ids = gpu_ids(opt.gpu_ids)
        if "gpu_ids" in self.explicit_flags(parser, args):
            problem = missing_gpus(opt.gpu_ids)
            if problem:
                parser.error(f"--gpu_ids {','.join(map(str, opt.gpu_ids))}: {problem}")
        if opt.batch_size < 1:
            parser.error(f"--batch_size must be at least 1, got {opt.batch_size}")
        if opt.cpu_allocator == "reuse" and cpu_allocator.glibc_version() is None:
            parser.error(cpu_allocator.REUSE_NEEDS_GLIBC)
        return opt

    def retry_command(self, parser, args, drop=(), add=()):
        """The command `python <prog> args` without the flags `drop` (and their values) and with `add` appended:
        what a refusal tells the user to type."""
        kept, tokens = [], list(args)
        while tokens:
            token = tokens.pop(0)
            flag = token.split("=", 1)[0]
            if flag not in drop:
                kept.append(token)
                continue
            action = parser._option_string_actions.get(flag)
            if "=" in token or not tokens or (action is not None and action.nargs == 0):
                continue
            if action is not None and action.nargs == "?":  # a boolean flag: a value follows only sometimes
                if tokens[0].lower() in BOOL_WORDS:
                    tokens.pop(0)
            elif not tokens[0].startswith("--"):
                tokens.pop(0)
        return shlex.join(["python", self.prog] + kept + [str(a) for a in add])

    @staticmethod
    def explicit_flags(parser, args):
        """The dests a user gave on the command line (as opposed to defaults)."""
        sentinel = object()
        probe = argparse.ArgumentParser(add_help=False)
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            kwargs = dict(dest=action.dest, default=sentinel)
            if action.nargs == 0:
                kwargs["action"] = "store_const"
                kwargs["const"] = action.const
            else:
                kwargs["nargs"] = action.nargs
                if action.const is not None:
                    kwargs["const"] = action.const
            probe.add_argument(*action.option_strings, **kwargs)
        given, _ = probe.parse_known_args(args)
        return {k for k, v in vars(given).items() if v is not sentinel}


# -------------------------------------------------------------------------- the run directory's option files
def run_dir(opt):
    """`<checkpoints_dir>/<name>`; a name that would leave --checkpoints_dir is refused (util.run.run_names)."""
    return run_path(opt.checkpoints_dir, opt.name, "--checkpoints_dir")


def options_text(opt, parser):
    lines = ["----------------- Options ---------------"]
    for key, value in sorted(vars(opt).items()):
        default = parser.get_default(key)
        mark = f"\t[default: {default}]" if default is not None and value != default and key != "isTrain" else ""
        lines.append(f"{key:>25}: {value!s:<30}{mark}")
    lines.append("----------------- End -------------------")
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    if isinstance(value, tuple):
        return list(value)
    return value


def save_options(opt, parser, prefix, directory):
    """Write `<prefix>_opt.txt` and `<prefix>_opt.json` to `directory` (atomically)."""
    payload = {k: _jsonable(v) for k, v in sorted(vars(opt).items())}
    try:
        atomic_write_text(os.path.join(directory, f"{prefix}_opt.txt"), options_text(opt, parser) + "\n")
        atomic_write_text(os.path.join(directory, f"{prefix}_opt.json"), json.dumps(payload, indent=1) + "\n")
    except WriteError as err:
        raise err.with_hint("Or pass another --checkpoints_dir.") from err


def load_stored_options(directory):
    """The options a run was trained with, from `train_opt.json`; None when the run has none."""
    path = os.path.join(directory, "train_opt.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise RuntimeError(f"{path} is unreadable ({err}); delete it or pass all architecture flags") from None
    return {k: (float("inf") if v == "inf" else v) for k, v in stored.items()}

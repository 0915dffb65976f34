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
import sys

import torch

import data
import models
from options.flag_parser import FlagParser
from options.help_format import HelpFormatter
from util.process import cpu_allocator
from util.command_line import commands
from util.command_line.arg_types import add_bool_flag, gpu_ids
from util.command_line.cli import UsageError
from util.command_line.flags import INVOCATION
from util.process.devices import missing_gpus, usable_cores
from util.run.atomic import WriteError, atomic_write_text
from util.command_line.registry import available_names
from util.run.run_names import check_path_part, run_path
from util.command_line.flags import ARCHITECTURE, DATA, INVOCATION, RUN

log = logging.getLogger(__name__)

class BaseOptions:
    """Defines the common flags; subclasses add train- or test-specific ones."""

    isTrain = None
    prog = None  # the CLI's name in messages (train.py, test.py)
    entry = None  # its key in util.command_line.commands.ENTRY_POINTS

    def initialize(self, parser):
        g = parser.add_argument_group("basic")
        g.add_argument("--dataroot", lifetime=DATA, default=None,
                       help="dataset folder (aligned: with train/ val/ test/; unaligned: trainA/ trainB/ ...)")
        g.add_argument("--name", lifetime=INVOCATION, default="experiment_name",
                       help="run name: outputs go to <checkpoints_dir>/<name>/")
        g.add_argument("--gpu_ids", lifetime=RUN, shown_default="0 with CUDA, else -1", default="0" if torch.cuda.is_available() else "-1", type=str,
                       help="GPU ids, e.g. 0 or 0,1; training with several ids starts one process per GPU "
                            "(DistributedDataParallel, see --nproc_per_node); -1 is the CPU. The default fits this "
                            "machine: 0 with CUDA, else -1")
        g.add_argument("--cpu_allocator", lifetime=RUN, default="auto", choices=cpu_allocator.MODES,
                       help="auto/reuse: freed memory stays with the process for the next step (glibc; ATME trains "
                            "1.8x faster at 256x256 on the CPU, at about a third more peak resident memory); "
                            "system: malloc as it is. See util/process/cpu_allocator.py")
        g.add_argument("--checkpoints_dir", lifetime=INVOCATION, default="./checkpoints", help="where run directories live")
        g.add_argument("--seed", lifetime=RUN, type=int, default=None, help="seed Python, NumPy, torch and data order")
        add_bool_flag(g, "--verbose", lifetime=INVOCATION, help="print network architectures and debug logs")
        g.add_argument("--suffix", lifetime=INVOCATION, default="", type=str,
                       help="customised suffix appended to --name, e.g. {model}_{netG}_size{load_size}")

        g = parser.add_argument_group("model")
        g.add_argument("--model", lifetime=ARCHITECTURE, type=str, default="pix2pix",
                       help=f"model family; one of: {', '.join(available_names('models', '_model'))}")
        g.add_argument("--input_nc", lifetime=ARCHITECTURE, type=int, default=3, help="input channels: 3 for RGB, 1 for grayscale")
        g.add_argument("--output_nc", lifetime=ARCHITECTURE, type=int, default=3, help="output channels: 3 for RGB, 1 for grayscale")
        g.add_argument("--ngf", lifetime=ARCHITECTURE, type=int, default=64, help="generator filters in the last conv layer")
        g.add_argument("--ndf", lifetime=ARCHITECTURE, type=int, default=64, help="discriminator filters in the first conv layer")
        g.add_argument("--netD", lifetime=ARCHITECTURE, type=str, default="basic",
                       help="basic (70x70 PatchGAN) | n_layers | pixel")
        g.add_argument("--netG", lifetime=ARCHITECTURE, type=str, default="resnet_9blocks",
                       help="resnet_9blocks | resnet_6blocks | unet_256 | unet_128 | unet (depth follows --crop_size)")
        g.add_argument("--n_layers_D", lifetime=ARCHITECTURE, type=int, default=3, help="discriminator depth when --netD n_layers")
        g.add_argument("--norm", lifetime=ARCHITECTURE, type=str, default="instance", help="instance | batch | none")
        g.add_argument("--init_type", lifetime=RUN, type=str, default="normal", help="normal | xavier | kaiming | orthogonal")
        g.add_argument("--init_gain", lifetime=RUN, type=float, default=0.02, help="scale for normal, xavier and orthogonal")
        add_bool_flag(g, "--no_dropout", lifetime=ARCHITECTURE, help="no dropout in the generator")

        g = parser.add_argument_group("data")
        g.add_argument("--dataset_mode", lifetime=DATA, type=str, default="unaligned",
                       help=f"dataset layout; one of: {', '.join(available_names('data', '_dataset'))}")
        g.add_argument("--direction", lifetime=ARCHITECTURE, type=str, default="AtoB", choices=["AtoB", "BtoA"], help="AtoB or BtoA")
        add_bool_flag(g, "--serial_batches", lifetime=RUN, help="take images in order instead of shuffled")
        g.add_argument("--num_threads", lifetime=RUN, shown_default="usable cores, at most 8", default=usable_cores(), type=int,
                       help="data-loading worker processes (0: in the main process); the default is this machine's "
                            "usable cores, at most 8")
        g.add_argument("--batch_size", lifetime=RUN, type=int, default=1, help="input batch size")
        g.add_argument("--load_size", lifetime=DATA, type=int, default=286, help="scale images to this size")
        g.add_argument("--crop_size", lifetime=DATA, type=int, default=256, help="then crop to this size")
        g.add_argument("--max_dataset_size", lifetime=RUN, type=int, default=float("inf"),
                       help="use at most this many images of the folder")
        g.add_argument("--preprocess", lifetime=DATA, type=str, default="resize_and_crop",
                       help="resize_and_crop | crop | scale_width | scale_width_and_crop | none")
        add_bool_flag(g, "--no_flip", lifetime=RUN, help="no random horizontal flips")
        g.add_argument("--display_winsize", lifetime=RUN, type=int, default=256, help="display size of images in visdom and HTML")
        add_bool_flag(g, "--skip_bad_images", lifetime=RUN,
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
                            usage=f"%(prog)s --dataroot DIR [--name NAME] [--model "
                                  f"{'|'.join(available_names('models', '_model'))}] [flags below]")
        self.initialize(parser)
        known, _ = parser.parse_known_args(early)
        if known.model == "test":
            self.refuse_model_test(parser, args)
        try:
            model_class = models.find_model_using_name(known.model)
        except ValueError as err:
            raise UsageError(f"--model: {err}", help_hint=parser.help_hint()) from None
        parser.owner = f"model {known.model}"
        model_class.modify_commandline_options(parser, self.isTrain)
        parser.flag_owners = self.models_with_flag
        # Flags of the common groups that this model does without are not accepted, nor shown by --help.
        parser.remove_flags(set(model_class.unused_flags), known.model)
        known, _ = parser.parse_known_args(early)  # the model may change the dataset_mode default
        parser.owner = f"dataset {known.dataset_mode}"
        data.get_option_setter(known.dataset_mode)(parser, self.isTrain)
        parser.owner = "shared"
        self.flag_table = parser.flag_table
        return parser

    def refuse_model_test(self, parser, args):
        """pix2pix's `--model test` (the generator alone on single images) is test.py with --dataset_mode single
        here: test.py takes the run's own model from its train_opt.json."""
        kept = commands.without(args, ("--model", "--dataset_mode"), parser._option_string_actions)
        command = commands.command("test", kept + ["--dataset_mode", "single"])
        raise UsageError(f"--model test: there is no separate test model here; test.py runs the run's own "
                         f"generator (its --model comes from train_opt.json) on single images with "
                         f"--dataset_mode single:\n  {command}", help_hint=parser.help_hint())

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

    notes = ()  # what parsing found worth a line in the log (the CLI logs them): see stored_values

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
        # Flags that become part of a path stay inside the run's folders, as --name does.
        check_path_part(opt.phase, "--phase", "a split folder's name such as --phase test or --phase val")
        check_path_part(opt.epoch, "--epoch", "a checkpoint tag such as --epoch latest, --epoch best or --epoch 20")
        if opt.cpu_allocator == "reuse" and cpu_allocator.glibc_version() is None:
            parser.error(cpu_allocator.REUSE_NEEDS_GLIBC)
        return opt

    def retry_command(self, parser, args, drop=(), add=()):
        """The user's command (`args`, as given to main) without the flags `drop` (and their values) and with
        `add` appended: what a refusal tells the user to type."""
        kept = commands.without(args, drop, parser._option_string_actions)
        return commands.command(self.entry, kept + [str(a) for a in add])

    @staticmethod
    def explicit_flags(parser, args):
        """The dests a user gave on the command line (as opposed to defaults)."""
        sentinel = object()
        probe = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
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
    """Write `<prefix>_opt.txt` (every option, marking those that differ from the default) and `<prefix>_opt.json`
    to `directory` (atomically). The JSON of a training run holds what a resume takes from it: no flag whose
    lifetime is `invocation` (--name, --continue_train, --reset_pool, --no_verify, --lock, ...), so a one-shot
    flag is never repeated by a later resume."""
    skipped = set(parser.flag_table.names(INVOCATION)) | {"run_dir"} if prefix == "train" else set()
    payload = {k: _jsonable(v) for k, v in sorted(vars(opt).items()) if k not in skipped}
    try:
        atomic_write_text(os.path.join(directory, f"{prefix}_opt.txt"), options_text(opt, parser) + "\n")
        atomic_write_text(os.path.join(directory, f"{prefix}_opt.json"), json.dumps(payload, indent=1) + "\n")
    except WriteError as err:
        raise err.with_hint("Or pass another --checkpoints_dir.") from err


def stored_values(stored, table, directory, notes):
    """The entries of a run's stored options that a later command may take: a flag of `table` that is stored.
    An older run also stored its invocation flags; they are ignored, with a note appended to `notes` (the CLI
    logs them once its log is set up)."""
    ignored = sorted(k for k in stored if table.lifetime(k) == INVOCATION)
    if ignored:
        notes.append(f"{directory}/train_opt.json also holds flags of the command that wrote it "
                     f"({', '.join(f'--{k}' for k in ignored)}): ignored, they apply to one command only")
    return {k: v for k, v in stored.items() if k in table and table.lifetime(k) != INVOCATION}


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

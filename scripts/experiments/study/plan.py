"""What a convergence study trains: its model entries, the settings every run shares, one ordinary run folder per
(entry, seed) under `<study_dir>/runs/`, and where each run stands according to its saved training state.

An entry is a name for a model and the flags that make it: `atme`, `atme_no_feedback` (ATME's generator and
training without the discriminator's feedback), `pix2pix`, `segan` (lambda_MI 1), `segan_no_mi` (lambda_MI 0, the
paper's pix2pix+noise baseline), or any registered model by its name.
"""
import logging
import os
import shlex
from collections import OrderedDict, namedtuple


import models
from options.base_options import BaseOptions, load_stored_options
from options.train_options import TrainOptions
from scripts.experiments.jobs.run_job import STATE_FILE, saved_progress, training_state  # noqa: F401 (read by tests)
from util.run.checkpoint import option_differences

log = logging.getLogger("convergence_study")

# entry name -> (--model, flags that define the entry)
ENTRIES = OrderedDict([
    ("atme", ("atme", ())),
    ("atme_no_feedback", ("atme", ("--no_feedback",))),
    ("pix2pix", ("pix2pix", ())),
    ("segan", ("segan", ("--lambda_MI", "1"))),
    ("segan_no_mi", ("segan", ("--lambda_MI", "0"))),
])
DEFAULT_ENTRIES = ("atme", "atme_no_feedback", "pix2pix")

# The settings every run of a study shares (train.py flag -> the study's default; the paper's Sec. 5.3 where it
# names one, train.py's own default otherwise). Each model's own defaults differ (e.g. pix2pix's batch norm), so
# the study always passes these explicitly.
MATCHED = OrderedDict([
    ("direction", "AtoB"), ("load_size", 286), ("crop_size", 256), ("batch_size", 1), ("n_epochs", 100),
    ("n_epochs_decay", 100), ("norm", "instance"), ("netD", "basic"), ("n_layers_D", 3), ("ndf", 64),
    ("gan_mode", "vanilla"),
])

# Presets: matched settings and per-model flags. `demo` is scripts/demo.sh's ATME configuration, built to the ATME
# paper's proportions: D keeps the paper's width (ndf 64) and takes the depth (1 layer: a 16 px receptive field,
# a 30x30 map) at which a 64 px crop holds 4 patches across (paper: 256 / 70 = 3.7, also a 30x30 map); G keeps the
# paper's R = (1, 2, 4, 8) at a quarter of its width (d = 16): 2.44 M against D's 0.14 M, 17x (paper: ATME 13x,
# pix2pix 20x). pix2pix's U-Net (ngf 24, 4.1 M) keeps the paper's pix2pix-to-ATME generator ratio (1.7, paper 1.5);
# SEGAN's noise U-Net takes the same width.
PRESETS = {
    "demo": dict(
        matched=dict(load_size=72, crop_size=64, batch_size=4, netD="n_layers", n_layers_D=1, ndf=64),
        model_flags={"atme": "--dim 16 --init_dim 16 --dim_mults 1,2,4,8 --groups 8",
                     "pix2pix": "--netG unet --ngf 24",
                     "segan": "--netG unet --ngf 24 --samples_per_input 4"}),
}

# Flags of train.py that do not change what a run computes (where it is, on which device, how it is shown or
# saved); a study may pass other values when it resumes.
NOT_SETTINGS = {
    "dataroot", "name", "checkpoints_dir", "gpu_ids", "phase", "num_threads", "display_winsize", "verbose", "suffix",
    "skip_bad_images", "amp", "channels_last", "compile", "cpu_allocator", "epoch", "load_iter", "isTrain",
    "results_dir", "num_test", "eval", "aspect_ratio", "nproc_per_node", "lock", "no_verify", "reset_pool",
    "display_id", "display_freq", "display_ncols", "display_server", "display_env", "display_port",
    "update_html_freq", "print_freq", "no_html", "save_latest_freq", "save_epoch_freq", "save_by_iter",
    "continue_train"}

Run = namedtuple("Run", "entry seed name model run_dir train_args")


def resolve_entry(name):
    """(--model, entry flags) of an entry name; a registered model's name is an entry of its own."""
    if name in ENTRIES:
        return ENTRIES[name]
    if name in models.available_models():
        return name, ()
    raise ValueError(f"unknown study model {name!r}: use one of {', '.join(ENTRIES)} or a registered model "
                     f"({', '.join(models.available_models())})")


def parse_model_flags(items):
    """`KEY=flags` strings (KEY an entry or a model family) -> {KEY: [flags]}; later items extend earlier ones."""
    flags = OrderedDict()
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model_flags {item!r} is not KEY=\"flags\" (e.g. atme=\"--dim 32\")")
        flags.setdefault(key.strip(), []).extend(shlex.split(value))
    return flags


def entry_flags(entry, model, model_flags):
    """The flags of one entry: its own, then those given for its model family, then those given for the entry."""
    own = list(resolve_entry(entry)[1])
    family = model_flags.get(model, []) if model != entry else []
    return own + list(family) + list(model_flags.get(entry, []))


def gpu_args(gpu_ids):
    """train.py/test.py flags for the study's --gpu_ids: none when unset (their default: the first GPU, else CPU)."""
    return [] if gpu_ids is None else ["--gpu_ids", str(gpu_ids)]


def run_name(entry, seed):
    return f"{entry}_seed{seed}"


def plan_runs(entries, seeds, *, dataroot, runs_dir, matched, model_flags, gpu_ids, num_threads, extra):
    """One `Run` per (entry, seed), in the order they are trained (seed by seed, so an interrupted study has
    the first seeds of every model)."""
    runs = []
    for seed in seeds:
        for entry in entries:
            model, _ = resolve_entry(entry)
            name = run_name(entry, seed)
            args = ["--dataroot", dataroot, "--checkpoints_dir", runs_dir, "--name", name, "--model", model,
                    *entry_flags(entry, model, model_flags), "--seed", str(seed)]
            for key, value in matched.items():
                args += [f"--{key}", str(value)]
            # val_log.csv gets L1 and PSNR every epoch; the live dashboard is off.
            args += ["--val_freq", "1", "--display_id", "0", *gpu_args(gpu_ids),
                     *([] if num_threads is None else ["--num_threads", str(num_threads)]),
                     *extra]
            runs.append(Run(entry, seed, name, model, os.path.join(runs_dir, name), args))
    return runs


def parsed_settings(args):
    """{flag: value} of the settings `args` give train.py explicitly (flags in NOT_SETTINGS left out)."""
    parser = TrainOptions().build_parser(args)
    opt = parser.parse_args(args)
    explicit = BaseOptions.explicit_flags(parser, args) - NOT_SETTINGS
    return {key: getattr(opt, key) for key in sorted(explicit)}, opt


def check_run_settings(run):
    """Raise a ValueError when the run folder holds a run made with other settings than the study asks for."""
    stored = load_stored_options(run.run_dir)
    if stored is None:
        return
    wanted, _ = parsed_settings(run.train_args)
    differ = [f"--{key} {have} (the run) vs {value} (this study)"
              for key, have, value in option_differences(stored, wanted)]
    if differ:
        raise ValueError(f"{run.run_dir} was trained with other settings than this study asks for: "
                         f"{'; '.join(differ)}.\nCall the study with the settings it was made with (its study.json, "
                         f"{os.path.join(os.path.dirname(os.path.dirname(run.run_dir)), 'study.json')}, lists "
                         f"them), or give a new --study_dir.")


def total_epochs(matched):
    return int(matched["n_epochs"]) + int(matched["n_epochs_decay"])


def run_status(run, epochs):
    """'new' (nothing saved), 'partial' (a saved state with epochs left) or 'finished' (every epoch trained)."""
    return training_state(run.run_dir, epochs)

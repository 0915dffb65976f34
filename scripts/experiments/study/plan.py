"""What a convergence study trains: its model entries, the settings every run shares, one ordinary run folder per
(entry, seed) under `<study_dir>/runs/`, and where each run stands according to its saved training state.

An entry is a name for a model and the flags that make it: `atme`, `atme_no_feedback` (ATME's generator and
training without the discriminator's feedback), `pix2pix`, `segan` (lambda_MI 1), `segan_no_mi` (lambda_MI 0, the
paper's pix2pix+noise baseline), or any registered model by its name.

A variant is a name for flags every entry gets on top of its own, so that variants of one model are compared under
equal seeds: `fp32` (no flags), `bf16` (`--amp bf16 --channels_last`), or `name=flags` for any flag set
(`'logits=--pool_stores logits'`). With variants, a run folder is `<entry>_<variant>_seed<s>`.
"""
import logging
import os
import re
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

# built-in variants: name -> the flags that make it
VARIANTS = OrderedDict([
    ("fp32", ()),
    ("bf16", ("--amp", "bf16", "--channels_last")),
])
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")  # part of a folder name; no "_" (it separates the parts)

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
# `quick` is a smoke-size study for trying the command on a CPU in minutes (docs/convergence_study.md): two models,
# one seed, 2 + 1 epochs on the first 48 training images at 32 px, narrow networks. Its numbers show the study
# works, not what the models do.
PRESETS = {
    "quick": dict(
        models=("atme", "pix2pix"), seeds=(0,),
        matched=dict(load_size=36, crop_size=32, batch_size=4, n_epochs=2, n_epochs_decay=1, netD="n_layers",
                     n_layers_D=1, ndf=16),
        model_flags={"atme": "--dim 8 --init_dim 8 --dim_mults 1,2,4 --groups 4",
                     "pix2pix": "--netG unet --ngf 8"},
        train_flags=("--max_dataset_size", "48")),
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

Run = namedtuple("Run", "entry seed name model run_dir train_args variant", defaults=("",))


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


def parse_variants(items):
    """`--variants` items -> {name: [flags]} in the order given. An item is a comma list of built-in names
    (`fp32,bf16`) or `name=flags` (`'logits=--pool_stores logits'`); an empty list is no variant axis."""
    variants = OrderedDict()
    example = "--variants fp32,bf16 or --variants 'prob=--pool_stores prob' 'logits=--pool_stores logits'"
    for item in items or ():
        name, sep, flags = item.partition("=")
        pairs = [(name.strip(), shlex.split(flags))] if sep else \
            [(n.strip(), None) for n in item.split(",") if n.strip()]
        for name, flags in pairs:
            if flags is None:
                if name not in VARIANTS:
                    raise ValueError(f"--variants: {name!r} is not a built-in variant ({', '.join(VARIANTS)}); give "
                                     f"its flags as NAME=FLAGS, e.g. {example}")
                flags = list(VARIANTS[name])
            if not VARIANT_NAME.match(name):
                raise ValueError(f"--variants: the name {name!r} names run folders: letters, digits, '.', '+' and "
                                 f"'-' only (no '_'), e.g. {example}")
            if name in variants:
                raise ValueError(f"--variants names {name!r} twice ({' '.join(items)}): give each variant its own "
                                 f"name, e.g. {example}")
            variants[name] = flags
    if len(variants) == 1:
        raise ValueError(f"--variants {' '.join(items)}: one variant compares nothing; leave --variants out, or give "
                         f"two or more, e.g. {example}")
    return variants


def group_label(entry, variant):
    """How the figures and tables name one (entry, variant): `atme`, or `atme bf16` in a variants study."""
    return f"{entry} {variant}" if variant else entry


def gpu_args(gpu_ids):
    """train.py/test.py flags for the study's --gpu_ids: none when unset (their default: the first GPU, else CPU)."""
    return [] if gpu_ids is None else ["--gpu_ids", str(gpu_ids)]


def run_name(entry, seed, variant=""):
    return f"{entry}_{variant}_seed{seed}" if variant else f"{entry}_seed{seed}"


def plan_runs(entries, seeds, *, dataroot, runs_dir, matched, model_flags, gpu_ids, num_threads, extra,
              variants=None):
    """One `Run` per (entry, variant, seed), in the order they are trained (seed by seed, so an interrupted study
    has the first seeds of every model and variant)."""
    runs = []
    for seed, entry, (variant, variant_flags) in ((s, e, v) for s in seeds for e in entries
                                                  for v in (variants or {"": []}).items()):
        model, _ = resolve_entry(entry)
        name = run_name(entry, seed, variant)
        args = ["--dataroot", dataroot, "--checkpoints_dir", runs_dir, "--name", name, "--model", model,
                *entry_flags(entry, model, model_flags), "--seed", str(seed)]
        for key, value in matched.items():
            args += [f"--{key}", str(value)]
        # val_log.csv gets L1 and PSNR every epoch; the live dashboard is off.
        args += ["--val_freq", "1", "--display_id", "0", *gpu_args(gpu_ids),
                 *([] if num_threads is None else ["--num_threads", str(num_threads)]),
                 *extra, *variant_flags]  # last: the variant's flags win
        runs.append(Run(entry, seed, name, model, os.path.join(runs_dir, name), args, variant))
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


def jobs_dir(study_dir):
    """Where the study's jobs keep their events, training times and submitit files (scripts/experiments/jobs)."""
    return os.path.join(study_dir, "jobs")


def total_epochs(matched):
    return int(matched["n_epochs"]) + int(matched["n_epochs_decay"])


def run_status(run, epochs):
    """'new' (nothing saved), 'partial' (a saved state with epochs left) or 'finished' (every epoch trained)."""
    return training_state(run.run_dir, epochs)

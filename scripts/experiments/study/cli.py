"""The ATME paper's Fig. 3 (and SEGAN's diversity claim), measured: several models trained on the same data with
matched settings over several seeds, then one figure and one table.

    python -m scripts.experiments.convergence_study --dataroot datasets/demo --study_dir studies/demo \\
        --preset demo --seeds 0 1 2 --n_epochs 20 --n_epochs_decay 20
    python -m scripts.experiments.convergence_study --dataroot datasets/facades --study_dir studies/facades_BtoA \\
        --direction BtoA --batch_size 48 --model_flags atme="--dim 64 --dim_mults 1,2,4,8" \\
        --model_flags pix2pix="--netG unet_256" -- --gpu_ids 0

Models (--models): atme, atme_no_feedback (ATME's generator and training without D's feedback: no pool, no W,
constant time), pix2pix (default: these three), segan and segan_no_mi (lambda_MI 1 and 0), or any registered model.
Variants (--variants) compare flag sets of the same models under equal seeds: `--variants fp32,bf16` (bf16: --amp
bf16 --channels_last) or NAME=FLAGS items (`--variants 'prob=--pool_stores prob' 'logits=--pool_stores logits'`).
Every run is an ordinary run folder `<study_dir>/runs/<model>_seed<s>/` (`<model>_<variant>_seed<s>/` with
variants) trained by train.py with the matched
settings (--direction --load_size --crop_size --batch_size --n_epochs --n_epochs_decay --norm --netD --n_layers_D
--ndf --gan_mode), `--val_freq 1`, its own seed and the model's flags (--model_flags KEY="..." for a model or a
family); flags after `--` go to every run. Calling the study again resumes it run by run: a finished run (its
saved state has every epoch) is not trained again, a partly trained one continues with --continue_train, a
missing one is trained. A run folder made with other settings is refused. Each run is a job (--executor local,
slurm or debug; --max_parallel; --status; --dry_run): see docs/cluster.md.

Outputs in <study_dir>: convergence.png, validation.png, summary.md, summary.csv, per_run.csv (and
diversity_summary.csv for SEGAN runs), all computed from the run folders' CSV logs and <study_dir>/eval/*/*.csv
(see study/report.py for what each number is and how the curves are smoothed).
"""
import argparse
import contextlib
import json
import logging
import os
import sys

from options.help_format import HelpFormatter
from scripts.experiments.jobs.events import events_path
from scripts.experiments.jobs.flags import add_job_flags, check_job_flags, replaced, split_train_flags
from scripts.experiments.jobs.run_job import RunJob, kept_logging
from scripts.experiments.jobs.status import status_table
from scripts.experiments.jobs.submit import dry_run_text, is_done, run_jobs
from scripts.experiments.study.evaluation import evaluate_run
from scripts.experiments.study.plan import (DEFAULT_ENTRIES, MATCHED, PRESETS, VARIANTS, check_run_settings, jobs_dir,
                                            parse_model_flags, parse_variants, parsed_settings, plan_runs,
                                            resolve_entry, run_status, total_epochs)
from scripts.experiments.study.report import write_report
from util.command_line.commands import command
from util.run.atomic import write_json
from util.run.run_logs import setup_logging

log = logging.getLogger("convergence_study")
LAST_K = 10  # the table's window, or every epoch of a shorter study


class StudyHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The options' help (one default each, as typed) under the module's description as written."""


def build_parser():
    p = argparse.ArgumentParser(prog="python -m scripts.experiments.convergence_study", description=__doc__,
                                formatter_class=StudyHelpFormatter, allow_abbrev=False)
    p.add_argument("--dataroot", default=None,
                   help="aligned data with train/ and val/ (and the test split); required except for --status "
                        "alone, which reads the study's study.json")
    p.add_argument("--study_dir", required=True, help="the study's folder: runs/, eval/, results/, figures, tables")
    p.add_argument("--models", nargs="+", default=None,
                   help=f"study models; see above (default: {' '.join(DEFAULT_ENTRIES)}); --preset quick: "
                        f"{' '.join(PRESETS['quick']['models'])}")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="one run per model and seed (default: 0 1 2); --preset quick: 0")
    p.add_argument("--variants", nargs="+", default=[], metavar="VARIANT",
                   help=f"compare flag sets of every model under equal seeds: built-in names, comma-separated "
                        f"({', '.join(f'{k}: ' + (' '.join(v) or 'no flags') for k, v in VARIANTS.items())}), "
                        f"or NAME=FLAGS items, e.g. 'logits=--pool_stores logits'")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="demo: scripts/demo.sh's configuration at the ATME paper's proportions (64 px crops, D of "
                        "ndf 64 with one layer, G/D about 17); quick: a smoke-size study that runs in minutes on a "
                        "CPU (atme and pix2pix, seed 0, 2 + 1 epochs on 48 images at 32 px); explicit flags "
                        "override it")
    g = p.add_argument_group("matched settings (every run gets the same value)")
    for key, default in MATCHED.items():
        g.add_argument(f"--{key}", type=type(default), default=None, help=f"default: {default} (or the preset's)")
    p.add_argument("--model_flags", action="append", default=[], metavar='KEY="FLAGS"',
                   help='train.py flags for one study model or a model family, e.g. atme="--dim 32" (repeatable)')
    p.add_argument("--gpu_ids", default=None,
                   help="passed to every run and to the evaluation (-1: CPU; default: train.py's, the first GPU "
                        "when there is one, else the CPU)")
    p.add_argument("--num_threads", type=int, default=None,
                   help="data-loading workers per run (default: train.py's, the usable cores up to 8)")
    g = p.add_argument_group("evaluation and report")
    g.add_argument("--test_dataroot", default=None, help="data of the test split (default: --dataroot)")
    g.add_argument("--test_phase", default="test", help="split for the table's L1, PSNR, KID and diversity")
    g.add_argument("--last_k", type=int, default=None,
                   help=f"epochs the table's distance and slope are taken over (default: {LAST_K}, or every epoch "
                        f"of a shorter study)")
    g.add_argument("--smooth", type=int, default=5, help="the figures draw a local linear fit over this many epochs")
    g.add_argument("--inception_weights", default=None,
                   help="Inception-v3 weights for KID (default: torch.hub's cached copy; without one, no KID)")
    g.add_argument("--lpips_backbone_weights", default=None,
                   help="AlexNet weights for SEGAN's LPIPS diversity (default: torch.hub's cached copy; without "
                        "one, the labelled L1 fallback)")
    g.add_argument("--n_draws", type=int, default=5, help="SEGAN: draws of codes")
    g.add_argument("--n_codes", type=int, default=8, help="SEGAN: codes per draw")
    g.add_argument("--diversity_inputs", type=int, default=50, help="SEGAN: test inputs translated with every code")
    add_job_flags(p)
    p.add_argument("--report_only", action="store_true", help="train nothing: report the finished runs")
    p.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    return p


def resolve(args):
    """Matched settings and per-model flags: explicit flags, then the preset's, then the study's defaults."""
    preset = PRESETS.get(args.preset, {}) if args.preset else {}
    args.models = list(args.models or preset.get("models", DEFAULT_ENTRIES))
    args.seeds = list(args.seeds if args.seeds is not None else preset.get("seeds", (0, 1, 2)))
    matched = {key: getattr(args, key) if getattr(args, key) is not None else
               preset.get("matched", {}).get(key, default) for key, default in MATCHED.items()}
    families = {resolve_entry(e)[0] for e in args.models}
    user = parse_model_flags(args.model_flags)
    unknown = [k for k in user if k not in args.models and k not in families]
    if unknown:
        raise ValueError(f"--model_flags for {', '.join(unknown)}, which is neither a study model nor the family of "
                         f"one (study models: {', '.join(args.models)})")
    flags = parse_model_flags(f"{k}={v}" for k, v in preset.get("model_flags", {}).items()
                              if k in args.models or k in families)
    for key, value in user.items():
        flags.setdefault(key, []).extend(value)
    return matched, flags


def check_inputs(args, matched):
    for flag, value in (("--seeds", args.seeds), ("--models", args.models)):
        if len(set(value)) != len(value):
            raise ValueError(f"{flag} lists an item twice: {' '.join(map(str, value))}")
    epochs = total_epochs(matched)
    if args.last_k is None:
        args.last_k = min(LAST_K, epochs)
    if not 1 <= args.last_k <= epochs:
        raise ValueError(f"--last_k {args.last_k} must be between 1 and the {epochs} epochs every run trains.\n"
                         f"Pass --last_k {min(max(args.last_k, 1), epochs)} (or leave it out: the default takes "
                         f"min({LAST_K}, epochs))")
    if args.smooth < 1 or args.n_draws < 1 or args.n_codes < 2 or args.diversity_inputs < 2:
        raise ValueError("--smooth and --n_draws must be >= 1, --n_codes and --diversity_inputs >= 2")
    for folder, what in ((os.path.join(args.dataroot, "train"), "--dataroot"),
                         (os.path.join(args.dataroot, "val"), "--dataroot (val/ gives the per-epoch L1 and PSNR)"),
                         (os.path.join(args.test_dataroot, args.test_phase), "--test_dataroot/--test_phase")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder} does not exist: check {what}")


@contextlib.contextmanager
def study_logging(log_file):
    """Run a CLI's main in this process, then give the study back its signal and log handlers (train.py and
    test.py install their own), the study's log file included."""
    with kept_logging():
        yield
    setup_logging(log_file)


class FollowUp:
    """What a study's job does once its run is trained: the run's evaluation files (test metrics, parameters, KID,
    SEGAN's diversity), in the job's process."""

    def __init__(self, run, epochs, config):
        self.run, self.epochs, self.config = run, epochs, config

    def __call__(self):
        config = argparse.Namespace(**vars(self.config))
        if self.run.model == "segan":
            from scripts.experiments.study.diversity import diversity_metric
            config.diversity_metric = diversity_metric(config.lpips_backbone_weights)
        evaluate_run(self.run, self.epochs, config, kept_logging)


def evaluation_config(args, runs, diversity=True):
    """What the evaluation needs, with the optional weights resolved (nothing is downloaded); without
    `diversity`, SEGAN's metric is left to whoever evaluates (FollowUp builds it in the job)."""
    from scripts.eval.kid import resolve_inception_weights
    config = argparse.Namespace(study_dir=args.study_dir, results_dir=os.path.join(args.study_dir, "results"),
                                test_dataroot=args.test_dataroot, test_phase=args.test_phase, gpu_ids=args.gpu_ids,
                                n_draws=args.n_draws, n_codes=args.n_codes, diversity_inputs=args.diversity_inputs,
                                inception_weights=None, diversity_metric=None,
                                lpips_backbone_weights=args.lpips_backbone_weights)
    try:
        config.inception_weights = resolve_inception_weights(args.inception_weights, download=False)
    except RuntimeError as err:
        log.info("no KID: %s", err)
    if diversity and any(run.model == "segan" for run in runs):
        from scripts.experiments.study.diversity import diversity_metric
        config.diversity_metric = diversity_metric(args.lpips_backbone_weights)
    return config


def stored_jobs(study_dir):
    """The jobs of the study in `study_dir` as its last start recorded them in study.json: `--status` with
    --study_dir alone."""
    path = os.path.join(study_dir, "study.json")
    try:
        with open(path) as handle:
            record = json.load(handle)
        runs, epochs = dict(record["runs"]), total_epochs(record["matched"])
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(study_dir))
        others = sorted(name for name in (os.listdir(parent) if os.path.isdir(parent) else ())
                        if os.path.isfile(os.path.join(parent, name, "study.json")))[:5]
        shown = "".join("\n  " + command("convergence_study", ["--study_dir", os.path.join(
            os.path.dirname(study_dir), name), "--status"]) for name in others)
        raise ValueError(f"--status: {path} does not exist, so no study was started in {study_dir}. Pass --status "
                         f"with the flags of the command that submits the study (--dataroot ...)"
                         + (f", or look at a study beside it:{shown}" if shown else "")) from None
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--status: {path} is not a study record this version reads ({err!r}); pass --status "
                         f"with the flags of the command that submitted the study (--dataroot ...)") from None
    return [study_job(study_dir, name, train_args, epochs) for name, train_args in runs.items()]


def study_job(study_dir, name, train_args, epochs):
    """The RunJob of the study's run `name`: its folder under <study_dir>/runs, its events under the study's jobs."""
    return RunJob(name, os.path.join(study_dir, "runs", name), train_args, epochs,
                  events_path(jobs_dir(study_dir), name), os.getcwd())


def main(argv=None):
    argv, extra = split_train_flags(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dataroot is None:
        if args.status:
            print(status_table(stored_jobs(args.study_dir)))
            return 0
        parser.error("the following argument is required: --dataroot (only --status reads the study's "
                     "study.json instead)")
    args.test_dataroot = args.test_dataroot or args.dataroot
    setup_logging()
    matched, model_flags = resolve(args)
    check_inputs(args, matched)
    variants = parse_variants(args.variants)
    runs_dir = os.path.join(args.study_dir, "runs")
    train_flags = list(PRESETS[args.preset].get("train_flags", ())) if args.preset else []
    runs = plan_runs(args.models, args.seeds, dataroot=args.dataroot, runs_dir=runs_dir, matched=matched,
                     model_flags=model_flags, gpu_ids=args.gpu_ids, num_threads=args.num_threads,
                     extra=train_flags + extra, variants=variants)
    for run in runs:  # everything is checked before anything is written
        _, opt = parsed_settings(run.train_args)
        if opt.dataset_mode != "aligned":
            raise ValueError(f"{run.entry} would train on --dataset_mode {opt.dataset_mode}: the study scores outputs "
                             f"against paired targets and needs aligned data")
        check_run_settings(run)
    epochs = total_epochs(matched)
    jobs = [study_job(args.study_dir, run.name, run.train_args, epochs) for run in runs]
    check_job_flags(args, lambda flag, value: replaced(command("convergence_study"),
                                                        argv + (["--", *extra] if extra else []), flag, value))
    if args.status:
        print(status_table(jobs))
        return 0
    if args.dry_run:
        print(dry_run_text([job for job in jobs if not is_done(job)], args))
        return 0
    status = {run.name: run_status(run, epochs) for run in runs}
    if args.report_only and any(s != "finished" for s in status.values()):
        raise ValueError("--report_only: these runs are not finished: "
                         + ", ".join(f"{n} ({s})" for n, s in status.items() if s != "finished")
                         + ".\nDrop --report_only to train them (the study resumes each where it stopped).")
    log_file = os.path.join(args.study_dir, "study.log")
    setup_logging(log_file)
    counts = {s: sum(1 for v in status.values() if v == s) for s in ("finished", "partial", "new")}
    log.info("study %s: %d runs (%s finished, %s partly trained, %s new)", args.study_dir, len(runs),
             counts["finished"], counts["partial"], counts["new"])
    write_json(os.path.join(args.study_dir, "study.json"),
               dict(models=args.models, seeds=args.seeds, variants={k: " ".join(v) for k, v in variants.items()},
                    preset=args.preset, matched=matched,
                    model_flags={k: " ".join(v) for k, v in model_flags.items()}, extra_train_flags=extra,
                    runs={run.name: run.train_args for run in runs}))
    config = evaluation_config(args, runs, diversity=False)
    if not args.report_only:
        for job, run in zip(jobs, runs):
            job.after = FollowUp(run, epochs, config)
        outcomes = run_jobs(jobs, args, jobs_dir(args.study_dir))
        setup_logging(log_file)
        stopped = [o for o in outcomes.values() if o["state"] == "stopped"]
        if stopped:
            log.warning("%s stopped (%s); call the study again to resume it", stopped[0]["name"],
                        stopped[0]["detail"])
            return stopped[0].get("code", 1)
        failed = [name for name, o in outcomes.items() if o["state"] != "finished"]
        if failed:
            log.error("%d of %d runs did not finish (%s): the others are done; call the same command again to "
                      "submit only these (see their logs above, or --status)", len(failed), len(runs),
                      ", ".join(failed))
            return 1
    if any(run.model == "segan" for run in runs):  # evaluations left from an earlier version's runs
        from scripts.experiments.study.diversity import diversity_metric
        config.diversity_metric = diversity_metric(args.lpips_backbone_weights)
    for run in runs:
        evaluate_run(run, epochs, config, lambda: study_logging(log_file))
    write_report(runs, args.study_dir, k=args.last_k, window=args.smooth, test_phase=args.test_phase)
    with open(os.path.join(args.study_dir, "summary.md")) as handle:
        print(handle.read())
    log.info("figures: %s, %s; tables: %s, %s, %s", *(os.path.join(args.study_dir, f) for f in (
        "convergence.png", "validation.png", "summary.md", "summary.csv", "per_run.csv")))
    return 0

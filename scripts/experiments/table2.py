"""The ATME paper's Table 2 as jobs: pix2pix and ATME on four datasets in both directions, one job per run (train
or resume, then test.py and the KID; the FCN scores of cityscapes BtoA when SEG_WEIGHTS is set), then the table.

    python -m scripts.experiments.table2 --executor slurm --slurm_partition gpu -- --gpu_ids 0
    python -m scripts.experiments.table2 --status
    python -m scripts.experiments.table2 --models atme --datasets facades --directions BtoA --executor local

Each run's commands are scripts/experiments/experiment.sh's (its settings are the one place they are written): the
job trains with its train.py command (adding --continue_train to resume) and runs its test, kid and fcn commands
after. Data is prepared here, before anything is submitted. Environment as in experiment.sh (DATASETS_DIR,
CHECKPOINTS_DIR, RESULTS_DIR, KID_ARGS, TEST_ARGS, SEG_WEIGHTS, N_EPOCHS, N_EPOCHS_DECAY). Calling again submits
only the runs that are not finished; the table is written when all are: results/table2.md and results/table2.csv.
Flags after `--` go to every train.py command.
"""
import argparse
import logging
import os
import shlex
import subprocess
import sys

if __name__ == "__main__" and not __package__:  # run as `python scripts/experiments/table2.py`: as -m would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from scripts.experiments.jobs.events import events_path
from scripts.experiments.jobs.flags import add_job_flags, check_job_flags, replaced
from scripts.experiments.jobs.run_job import RunJob
from scripts.experiments.jobs.status import status_table
from scripts.experiments.jobs.submit import ROOT, dry_run_text, is_done, run_jobs
from util.run.run_logs import setup_logging

log = logging.getLogger("table2")
EXPERIMENT = os.path.join(ROOT, "scripts", "experiments", "experiment.sh")
DATASETS = ("facades", "maps", "cityscapes", "night2day")


class Commands:
    """A job's follow-up: shell commands (argument lists) run one after another in the repository; the first
    that fails stops the job with its exit code."""

    def __init__(self, commands):
        self.commands = [list(c) for c in commands]

    def __call__(self):
        for command in self.commands:
            log.info("+ %s", shlex.join(command))
            subprocess.run(command, cwd=ROOT, check=True)


def experiment_commands(model, dataset, direction, stages, extra):
    """The commands experiment.sh runs for one run's stages, as it prints them with DRY_RUN=1."""
    out = subprocess.run(["bash", EXPERIMENT, model, dataset, direction, *stages, "--", *extra], cwd=ROOT,
                         env=dict(os.environ, DRY_RUN="1"), capture_output=True, text=True)
    if out.returncode:
        raise ValueError(f"scripts/experiments/experiment.sh {model} {dataset} {direction}: {out.stderr.strip()}")
    return [shlex.split(line[2:]) for line in out.stdout.splitlines() if line.startswith("+ ")]


def plan_job(model, dataset, direction, extra, jobs_dir):
    stages = ["train", "test", "kid"] + (["fcn"] if dataset == "cityscapes" and os.environ.get("SEG_WEIGHTS") else [])
    commands = experiment_commands(model, dataset, direction, stages, extra)
    train = next(c for c in commands if "train.py" in c)
    args = train[train.index("train.py") + 1:]
    value = lambda flag: args[len(args) - 1 - args[::-1].index(flag) + 1]
    name, run_dir = value("--name"), os.path.join(value("--checkpoints_dir"), value("--name"))
    epochs = int(value("--n_epochs")) + int(value("--n_epochs_decay"))
    after = Commands([[sys.executable if i == 0 else word for i, word in enumerate(c)] for c in commands
                      if c is not train])
    return RunJob(name, os.path.join(ROOT, run_dir), args, epochs, events_path(jobs_dir, name), ROOT, after=after)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m scripts.experiments.table2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--models", nargs="+", choices=("pix2pix", "atme"), default=["pix2pix", "atme"])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--directions", nargs="+", choices=("AtoB", "BtoA"), default=["AtoB", "BtoA"])
    add_job_flags(p)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    setup_logging()
    results = os.path.join(ROOT, os.environ.get("RESULTS_DIR", "results"))
    jobs_dir = os.path.join(results, "table2_jobs")
    jobs = [plan_job(m, d, r, extra, jobs_dir) for m in args.models for d in args.datasets for r in args.directions]
    check_job_flags(args, lambda flag, value: replaced("python -m scripts.experiments.table2",
                                                        argv + (["--", *extra] if extra else []), flag, value))
    if args.status:
        print(status_table(jobs))
        return 0
    if args.dry_run:
        print(dry_run_text([job for job in jobs if not is_done(job)], args))
        return 0
    for model in args.models:
        for dataset in args.datasets:
            subprocess.run(["bash", EXPERIMENT, model, dataset, "AtoB", "prepare"], cwd=ROOT, check=True)
    outcomes = run_jobs(jobs, args, jobs_dir)
    failed = [name for name, o in outcomes.items() if o["state"] != "finished"]
    if failed:
        log.error("%d runs did not finish (%s); call the same command again to submit only these (or --status)",
                  len(failed), ", ".join(failed))
        return 1
    subprocess.run([sys.executable, "-m", "scripts.eval.collect_results", results, "--paper", "--out_md",
                    os.path.join(results, "table2.md"), "--out_csv", os.path.join(results, "table2.csv")],
                   cwd=ROOT, check=True)
    with open(os.path.join(results, "table2.md")) as handle:
        print(handle.read())
    return 0


if __name__ == "__main__":
    from util.command_line.cli import run_main
    run_main(main)

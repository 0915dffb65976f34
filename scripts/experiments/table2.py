"""The ATME paper's Table 2 as jobs: pix2pix and ATME on four datasets in both directions, one job per run (train
or resume, then test.py and the KID; the FCN scores of cityscapes BtoA when SEG_WEIGHTS is set), then the table.

    python -m scripts.experiments.table2 --executor slurm --slurm_partition gpu -- --gpu_ids 0
    python -m scripts.experiments.table2 --status
    python -m scripts.experiments.table2 --models atme --datasets facades --directions BtoA --executor local

Each run's commands are scripts/experiments/experiment.sh's (its settings are the one place they are written), as
scripts/experiments/experiment_jobs.py plans them: the job trains with its train.py command (adding
--continue_train to resume) and runs its test, kid and fcn commands after; a run the per-dataset scripts trained is
done here too (their jobs share <RESULTS_DIR>/jobs/). Data is prepared here, before anything is submitted. Environment as in experiment.sh (DATASETS_DIR,
CHECKPOINTS_DIR, RESULTS_DIR, KID_ARGS, TEST_ARGS, SEG_WEIGHTS, N_EPOCHS, N_EPOCHS_DECAY). Calling again submits
only the runs that are not finished; the table is written when all are: results/table2.md and results/table2.csv.
Flags after `--` go to every train.py command.
"""
import argparse
import logging
import os
import subprocess
import sys

if __name__ == "__main__" and not __package__:  # run as `python scripts/experiments/table2.py`: as -m would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from scripts.experiments import experiment_jobs
from scripts.experiments.experiment_jobs import EXPERIMENT, ROOT
from scripts.experiments.jobs.flags import add_job_flags, split_train_flags
from util.command_line.commands import command
from util.run.run_logs import setup_logging

log = logging.getLogger("table2")
DATASETS = ("facades", "maps", "cityscapes", "night2day")


def plan_job(model, dataset, direction, extra):
    stages = ["train", "test", "kid"] + (["fcn"] if dataset == "cityscapes" and os.environ.get("SEG_WEIGHTS") else [])
    return experiment_jobs.plan_job(model, dataset, direction, stages, extra)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m scripts.experiments.table2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--models", nargs="+", choices=("pix2pix", "atme"), default=["pix2pix", "atme"])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--directions", nargs="+", choices=("AtoB", "BtoA"), default=["AtoB", "BtoA"])
    add_job_flags(p)
    return p


def main(argv=None):
    argv, extra = split_train_flags(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging()
    results = os.path.join(ROOT, os.environ.get("RESULTS_DIR", "results"))
    jobs = [plan_job(m, d, r, extra) for m in args.models for d in args.datasets for r in args.directions]
    def prepare():  # the data, before anything is submitted
        for model in args.models:
            for dataset in args.datasets:
                subprocess.run(["bash", EXPERIMENT, model, dataset, "AtoB", "prepare"], cwd=ROOT, check=True)

    code = experiment_jobs.submit(jobs, args, command("table2"),  # as typed: pasted
                                  argv + (["--", *extra] if extra else []), prepare)
    if code is None:  # --status or --dry_run: shown, nothing run
        return 0
    if code:  # a run did not finish (listed above): no table from part of the runs
        return code
    collected = subprocess.run([sys.executable, "-m", "scripts.eval.collect_results", results, "--paper",
                                "--out_md", os.path.join(results, "table2.md"), "--out_csv",
                                os.path.join(results, "table2.csv")], cwd=ROOT)
    if collected.returncode:  # collect_results said why
        return collected.returncode
    with open(os.path.join(results, "table2.md")) as handle:
        print(handle.read())
    return 0


if __name__ == "__main__":
    from util.command_line.cli import run_main
    run_main(main)

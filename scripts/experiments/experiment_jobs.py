"""The papers' experiments as jobs: one job per run (model, dataset, direction) that trains or resumes its run folder
with the train.py command of scripts/experiments/experiment.sh, then runs that run's later stages (test, kid, fcn,
diversity) as its follow-up. The per-dataset scripts (scripts/experiments/<model>/<dataset>.sh) come here through
experiment.sh whenever their stages include `train`, and Table 2 (scripts/experiments/table2.py) plans its jobs the
same way, so a run trained by one is done for the other.

    python -m scripts.experiments.experiment_jobs atme facades both [stage ...] [job flags] [-- train.py flags]
    bash scripts/experiments/atme/facades.sh BtoA --executor slurm --slurm_partition gpu -- --gpu_ids 0   # the same

Job flags: docs/cluster.md. Stages as in experiment.sh; `prepare` runs here before anything is submitted, `study`
after the jobs (the convergence study, whose runs are jobs of their own, with the same job flags). Job files: <RESULTS_DIR>/jobs/<run name>/ (events, training times) and
<RESULTS_DIR>/jobs/submitit/.
"""
import argparse
import json
import logging
import os
import shlex
import subprocess
import sys

if __name__ == "__main__" and not __package__:  # run as a file: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from scripts.experiments.jobs.events import PROGRESS_BAR, events_path
from scripts.experiments.jobs.flags import add_job_flags, check_job_flags, replaced, split_train_flags
from scripts.experiments.jobs.run_job import RunJob
from scripts.experiments.jobs.status import status_table
from scripts.experiments.jobs.submit import ROOT, dry_run_text, is_done, run_jobs
from util.run.atomic import atomic_write_text

log = logging.getLogger("jobs")
EXPERIMENT = os.path.join(ROOT, "scripts", "experiments", "experiment.sh")
JOB_STAGES = ("train", "test", "kid", "fcn", "diversity")  # the stages a run's job runs, in this order
DONE_STAGES_FILE = "stages_done.json"  # beside a run's events.csv: the stages its follow-ups finished


class Commands:
    """A job's follow-up: commands (argument lists) run one after another in the repository; the first that fails
    stops the job with its exit code. `stages[i]` is the experiment.sh stage of `commands[i]`; once all succeed,
    the stages are added to the run's record `done` (a JSON list beside its events), which tells a later command
    that asks for more stages of a finished run what is left to run (`missing_stages`)."""

    def __init__(self, commands, stages=(), done=None):
        self.commands = [list(c) for c in commands]
        self.stages, self.done = list(stages), done

    def __call__(self):
        if self.done:
            self._record([])  # a record from the start: a run whose follow-up had no commands has finished too
        for i, command in enumerate(self.commands):
            log.info("+ %s", shlex.join(command))
            code, said = run_echoed(command)
            if code:  # the job's report and --status show the tool's own last words, not a CalledProcessError
                raise RuntimeError(f"stage {self.stages[i] if i < len(self.stages) else i + 1}: "
                                   f"{said or 'no message'} (exit {code}: {shlex.join(command)})")
            if self.done and self.stages[i] not in self.stages[i + 1:]:  # the stage's last command
                self._record([self.stages[i]])

    def _record(self, stages):
        os.makedirs(os.path.dirname(self.done), exist_ok=True)
        atomic_write_text(self.done, json.dumps(sorted(set(stages) | set(done_stages(self.done) or ()))) + "\n")


def run_echoed(command):
    """Run `command` in the repository with its stderr echoed as it comes; (exit code, what it said last: its last
    `<prog>: error: ...` line, else its last line that is not a progress bar)."""
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1)
    error = last = ""
    for line in process.stderr:
        sys.stderr.write(line)
        text = line.replace("\r", "\n").strip().splitlines()
        if text and text[-1].strip() and not PROGRESS_BAR.search(text[-1]):
            last = text[-1].strip()
            error = last if ": error: " in last else error
    return process.wait(), error or last


def done_stages(path):
    """The stages a run's follow-ups have finished (None without a record: a run finished before there was one)."""
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def missing_stages(job):
    """The follow-up of a finished run, reduced to the stages asked now that it has not run (None: nothing)."""
    after = job.after
    done = done_stages(after.done) if isinstance(after, Commands) and after.done else None
    if done is None:
        return None
    kept = [(stage, c) for stage, c in zip(after.stages, after.commands) if stage not in done]
    return Commands([c for _, c in kept], [stage for stage, _ in kept], after.done) if kept else None


def jobs_dir():
    """Where the experiments' jobs keep their files: <RESULTS_DIR>/jobs (shared by every experiment command)."""
    return os.path.join(ROOT, os.environ.get("RESULTS_DIR", "results"), "jobs")


def experiment_commands(model, dataset, direction, stages, extra):
    """The commands experiment.sh runs for one run's stages, as it prints them with DRY_RUN=1: (stage, command)."""
    out = subprocess.run(["bash", EXPERIMENT, model, dataset, direction, *stages, "--", *extra], cwd=ROOT,
                         env=dict(os.environ, DRY_RUN="1"), capture_output=True, text=True)
    if out.returncode:
        raise ValueError(f"scripts/experiments/experiment.sh {model} {dataset} {direction}: {out.stderr.strip()}")
    commands, stage = [], None
    for line in out.stdout.splitlines():
        if line.startswith("== "):  # `== <run name>: <stage>` before each stage's commands
            stage = line.rsplit(": ", 1)[-1]
        elif line.startswith("+ "):
            commands.append((stage, shlex.split(line[2:])))
    return commands


def plan_job(model, dataset, direction, stages, extra):
    """One RunJob: experiment.sh's train.py command for (model, dataset, direction), its other `stages` after."""
    commands = experiment_commands(model, dataset, direction, [s for s in JOB_STAGES if s in stages], extra)
    train = next(c for _, c in commands if "train.py" in c)
    args = train[train.index("train.py") + 1:]
    value = lambda flag: args[len(args) - 1 - args[::-1].index(flag) + 1]  # the last one given wins
    name, run_dir = value("--name"), os.path.join(value("--checkpoints_dir"), value("--name"))
    epochs = int(value("--n_epochs")) + int(value("--n_epochs_decay"))
    later = [(stage, [sys.executable, *c[1:]]) for stage, c in commands if c is not train]
    events = events_path(jobs_dir(), name)
    after = Commands([c for _, c in later], [stage for stage, _ in later],
                     os.path.join(os.path.dirname(events), DONE_STAGES_FILE))
    return RunJob(name, os.path.join(ROOT, run_dir), args, epochs, events, ROOT, after=after)


def typed_command(model, dataset, argv):
    """(program, arguments): how a person types this module's arguments `argv` again, for the commands the
    refusals and the failure report print. The per-dataset script when experiment.sh started this (it names the
    script in EXPERIMENT_SCRIPT), else this module under the interpreter that is running (util.command_line)."""
    from util.command_line.commands import command
    script = os.environ.get("EXPERIMENT_SCRIPT")
    if script and argv[:2] == [model, dataset]:
        return shlex.join(["bash", script]), argv[2:]
    return command("experiment_jobs"), argv


def with_status(command):
    """`command` (printed_command's, or table2's) asking for --status: the flag goes before train.py's flags."""
    words = shlex.split(command)
    cut = words.index("--") if "--" in words else len(words)
    return shlex.join(words[:cut] + ["--status"] + words[cut:])


def directions(direction):
    return ["AtoB", "BtoA"] if direction == "both" else [direction]


def submit(jobs, args, prog, argv, prepare=None):
    """--status or --dry_run (None), or `prepare()` (the data), then submit the jobs and wait: 0 when every one
    finished, else 1 (each failure listed, with the commands that submit it again and show where it stands). The
    job flags are checked before anything is written. `prog argv` is the command as a person types it."""
    check_job_flags(args, lambda flag, value: replaced(prog, argv, flag, value))
    if args.status:
        missing = {job.name: missing_stages(job) for job in jobs if is_done(job)}
        print(status_table(jobs, {name: f"not run yet: {' '.join(after.stages)} (asked now; the command runs it)"
                                  for name, after in missing.items() if after is not None}))
        return None
    if args.dry_run:
        print(dry_run_text([job for job in jobs if not is_done(job)], args))
        return None
    if prepare is not None:
        prepare()
    outcomes = run_jobs(jobs, args, jobs_dir())
    failed = [name for name, o in outcomes.items() if o["state"] != "finished"]
    for job in jobs:  # a run finished earlier with fewer stages: the ones asked now run here, as without a job
        missing = missing_stages(job) if job.name not in outcomes and is_done(job) else None
        if missing is not None:
            log.info("%s: trained and finished before, without %s; running %s here", job.name,
                     " ".join(missing.stages), "it" if len(missing.stages) == 1 else "them")
            try:
                missing()
            except RuntimeError as err:
                log.error("%s: %s", job.name, err)
                failed.append(job.name)
    if failed:
        again = f"{prog} {shlex.join(argv)}"
        log.error("%d runs did not finish (%s). Once what went wrong (above, or in their logs) is mended, the same "
                  "command runs only these again:\n  %s\nand shows where each stands:\n  %s", len(failed),
                  ", ".join(failed), again, with_status(again))
        return 1
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="python -m scripts.experiments.experiment_jobs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("model", choices=("atme", "pix2pix", "segan"))
    p.add_argument("dataset")
    p.add_argument("direction", choices=("AtoB", "BtoA", "both"))
    p.add_argument("stages", nargs="*", default=["prepare", "train", "test", "kid"],
                   help="experiment.sh's stages; train and the stages after it run in the run's job")
    add_job_flags(p)
    return p


def job_flag_args(args):
    """The job flags of `args` that differ from their defaults, as typed (for the study stage's command)."""
    defaults = build_parser().parse_args(["atme", "facades", "both"])
    out = []
    for flag in ("executor", "max_parallel", "slurm_partition", "slurm_gpus_per_job", "slurm_time_min"):
        if getattr(args, flag) != getattr(defaults, flag):
            out += [f"--{flag}", str(getattr(args, flag))]
    for key, value in args.slurm_extra:
        out += ["--slurm_extra", f"{key}={value}"]
    return out + (["--status"] if args.status else []) + (["--dry_run"] if args.dry_run else [])


def main(argv=None):
    from util.run.run_logs import setup_logging
    argv, extra = split_train_flags(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(argv)
    unknown = [s for s in args.stages if s not in ("prepare", "study", *JOB_STAGES)]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r} (prepare train test kid fcn diversity study)")
    setup_logging()
    study_flags = job_flag_args(args)
    prepare = lambda: subprocess.run(["bash", EXPERIMENT, args.model, args.dataset, args.direction, "prepare"],
                                     cwd=ROOT, check=True)
    code = 0
    if "train" in args.stages:
        jobs = [plan_job(args.model, args.dataset, d, args.stages, extra) for d in directions(args.direction)]
        prog, typed = typed_command(args.model, args.dataset, argv + (["--", *extra] if extra else []))
        code = submit(jobs, args, prog, typed, prepare if "prepare" in args.stages else None) or 0
    elif "prepare" in args.stages and not (args.status or args.dry_run):
        prepare()
    if "study" in args.stages and not code:  # the study's own jobs, with the same job flags
        code = subprocess.run(["bash", EXPERIMENT, args.model, args.dataset, args.direction, "study", *study_flags,
                               "--", *extra], cwd=ROOT).returncode
    return code


if __name__ == "__main__":
    from util.command_line.cli import run_main
    run_main(main)

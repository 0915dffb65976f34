"""Submit runs as jobs, at most --max_parallel at once, wait for them, and report each one's outcome; a failed job
is listed with its log and does not stop the others. Calling again submits only what is not finished (a run whose
events end in `finished`, its run folder fully trained), and leaves alone a job that is still running here."""
import contextlib
import logging
import os
import time

from scripts.experiments.jobs import events
from scripts.experiments.jobs.flags import make_executor, submitit_parameters
from scripts.experiments.jobs.run_job import RunJob, training_state
from util.command_line.commands import command

log = logging.getLogger("jobs")
POLL_S = 2.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@contextlib.contextmanager
def project_importable():
    """The job processes import the project whatever folder the command ran from: PYTHONPATH names the repository
    while jobs are submitted (the local executor's processes and sbatch inherit this environment)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + ([before] if before else []))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def job_folder(jobs_dir):
    """submitit's folder of the jobs' pickles and logs (`<job id>_<task>_log.out/.err`)."""
    return os.path.join(jobs_dir, "submitit")


def is_done(job):
    """Whether a RunJob needs no job: its run is trained and the last event says its follow-up finished."""
    rows = events.read(job.events)
    return bool(rows) and rows[-1]["event"] == "finished" and training_state(job.run_dir, job.epochs) == "finished"


def still_running(job):
    """A job of this run started on this machine whose process is alive, or queued by a submitting process here
    that is alive (so submitting it again would race it)."""
    rows = events.read(job.events)
    return bool(rows) and rows[-1]["event"] in ("started", "queued") and events.process_alive(rows[-1]) is True


def dry_run_text(jobs, opts):
    """What --dry_run prints: the executor, its submitit parameters and every job's training command."""
    params = submitit_parameters(opts, len(jobs))
    lines = [f"executor: {opts.executor} (submitit {'DebugExecutor' if opts.executor == 'debug' else ('SlurmExecutor' if opts.executor == 'slurm' else 'LocalExecutor')}), "
             f"{len(jobs)} job(s), at most {opts.max_parallel or (1 if opts.executor == 'local' else len(jobs))} "
             f"at once", "submitit parameters (update_parameters): "
             + (", ".join(f"{k}={v!r}" for k, v in params.items()) or "none")]
    for job in jobs:
        lines.append(f"  {job.name}: {command('train', job.train_args)}")
    return "\n".join(lines)


def run_jobs(jobs, opts, jobs_dir):
    """Submit the RunJobs that are not done; wait for every one. Returns {name: outcome dict} of the submitted."""
    todo = [job for job in jobs if not is_done(job)]
    busy = [job for job in todo if still_running(job)]
    for job in busy:
        log.warning("%s: a job of this run is still running (or queued by a command still running) on this "
                    "machine (its events: %s); not submitted again", job.name, job.events)
    todo = [job for job in todo if job not in busy]
    log.info("%d of %d runs to submit (%s executor), %d done, %d running elsewhere", len(todo), len(jobs),
             opts.executor, len(jobs) - len(todo) - len(busy), len(busy))
    if not todo:
        return {}
    folder = job_folder(jobs_dir)
    executor = make_executor(opts, folder, len(todo))
    outcomes = {}
    if opts.executor == "debug":  # in this process, one after another
        for job in todo:
            events.record(job.events, "submitted", detail="debug executor")
            outcomes[job.name] = _outcome(job, executor.submit(job))
            if outcomes[job.name]["state"] == "stopped":  # Ctrl-C: the rest waits for the next call
                break
    elif opts.executor == "slurm":  # SLURM holds the queue: one job array, --max_parallel of it at once
        with project_importable(), executor.batch():
            submitted = [(job, executor.submit(job)) for job in todo]
        for job, handle in submitted:
            events.record(job.events, "submitted", handle.job_id, str(handle.paths.stderr))
            log.info("%s: SLURM job %s", job.name, handle.job_id)
        for job, handle in submitted:
            outcomes[job.name] = _outcome(job, handle)
    else:  # local: this process keeps at most --max_parallel jobs running
        limit, waiting, running = opts.max_parallel or 1, list(todo), {}
        for job in waiting[limit:]:
            events.record(job.events, "queued", detail=f"local executor, at most {limit} at once")
        while waiting or running:
            while waiting and len(running) < limit:
                job = waiting.pop(0)
                events.record(job.events, "submitted", detail="local executor")
                with project_importable():
                    handle = executor.submit(job)
                log.info("%s: local job %s (log %s)", job.name, handle.job_id, handle.paths.stderr)
                running[job.name] = (job, handle)
            for name, (job, handle) in list(running.items()):
                if handle.done():
                    outcomes[name] = _outcome(job, handle)
                    del running[name]
            if running:
                time.sleep(POLL_S)
    for name, outcome in outcomes.items():
        if outcome["state"] not in ("finished", "stopped"):
            log.error("%s %s: %s (log: %s)", name, outcome["state"], outcome["detail"], outcome["log"])
    return outcomes


def _outcome(job, handle):
    """The job's own report, or what its end says when it could not give one (killed, out of memory)."""
    try:
        outcome = handle.result()
    except Exception as err:
        log_path = str(getattr(handle.paths, "stderr", "")) if hasattr(handle, "paths") else ""
        detail = events.last_line(log_path) or f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        rows = events.read(job.events)
        if not rows or rows[-1]["event"] not in ("failed", "finished"):
            events.record(job.events, "failed", handle.job_id, log_path, detail)
        return dict(name=job.name, state="failed", detail=detail, log=log_path)
    return outcome if isinstance(outcome, dict) else dict(name=job.name, state="failed", detail=repr(outcome), log="")

"""What happened to a run's jobs, one CSV row per event in `<jobs_dir>/<run name>/events.csv`: `queued` (waiting
in the submitting process for one of the local executor's --max_parallel places) and `submitted` (by the command
that submits), `started`, `preempted` (stopped on the scheduler's signal, saved, requeued), `finished` and
`failed` (by the job). The status view and the resubmission rule read these rows and the run folder, never the
scheduler. Next to it, `train_time.csv`: one row per time train.py ran for the run (each part of a preempted run
its own row) with its wall time in seconds; the study's report sums them into its time per run."""
import math
import os
import re
import socket
import time

from util.run.run_logs import CsvLog

FIELDS = ("time", "event", "job_id", "host", "pid", "log", "detail")


def events_path(jobs_dir, name):
    return os.path.join(jobs_dir, name, "events.csv")


def record(path, event, job_id="", log="", detail=""):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    CsvLog(path).append(dict(time=time.strftime("%Y-%m-%d %H:%M:%S"), event=event, job_id=job_id,
                             host=socket.gethostname(), pid=os.getpid(), log=log, detail=detail))


def train_time_path(events_file):
    return os.path.join(os.path.dirname(os.path.abspath(events_file)), "train_time.csv")


def record_train_time(events_file, job_id, seconds, code):
    """One part of the run's training: train.py's wall time and exit code."""
    CsvLog(train_time_path(events_file)).append(dict(time=time.strftime("%Y-%m-%d %H:%M:%S"), job_id=job_id,
                                                     seconds=round(seconds, 3), code=code))


def train_seconds(events_file):
    """The run's training wall time summed over its parts (nan when none was recorded: a run trained before the
    jobs recorded it, or outside them)."""
    path = train_time_path(events_file)
    rows = CsvLog(path).rows() if os.path.isfile(path) else []
    return sum(float(row["seconds"]) for row in rows) if rows else math.nan


def read(path):
    """The rows of a run's events file, oldest first ([] without one)."""
    if not os.path.isfile(path):
        return []
    return CsvLog(path).rows()


def process_alive(row):
    """Whether the process that wrote `row` still runs: known only on the host that wrote it (None elsewhere)."""
    if row.get("host") != socket.gethostname() or not row.get("pid"):
        return None
    try:
        os.kill(int(row["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+ \[")  # tqdm's `epoch 1/2: 100%|####| 2/2 [00:01<...]`


def last_line(path):
    """The last non-empty line of a log file that is not a progress bar ('' when there is none)."""
    if not path or not os.path.isfile(path):
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 8192))
        text = handle.read().decode("utf-8", "replace").replace("\r", "\n")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not PROGRESS_BAR.search(line)]
    return lines[-1] if lines else ""

"""What happened to a run's jobs, one CSV row per event in `<jobs_dir>/<run name>/events.csv`: `submitted` (by the
command that submits), `started`, `preempted` (stopped on the scheduler's signal, saved, requeued), `finished` and
`failed` (by the job). The status view and the resubmission rule read these rows and the run folder, never the
scheduler."""
import os
import re
import socket
import time

from util.run.run_logs import CsvLog

FIELDS = ("time", "event", "job_id", "host", "pid", "log", "detail")
ACTIVE = ("submitted", "started", "preempted")  # the job may still be queued or running


def events_path(jobs_dir, name):
    return os.path.join(jobs_dir, name, "events.csv")


def record(path, event, job_id="", log="", detail=""):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    CsvLog(path).append(dict(time=time.strftime("%Y-%m-%d %H:%M:%S"), event=event, job_id=job_id,
                             host=socket.gethostname(), pid=os.getpid(), log=log, detail=detail))


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

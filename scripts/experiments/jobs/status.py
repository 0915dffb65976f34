"""Every run's state, from its run folder and its events file alone (no scheduler is asked):

- `not submitted` (no events; `stopped at epoch k of n` when the run folder holds a partly trained run);
- `pending` (submitted, not started; after a preemption: waiting to be requeued; queued in the local executor's
  submitting process, which is alive);
- `running (epoch k of n)` (k: the epoch its loss log has reached);
- `finished` (trained, tested and evaluated);
- `failed` (the last line of its log, and the log's path);

each with `preempted and requeued N times` when the scheduler stopped it. A job whose events say running but
whose process on this machine is gone is shown as `ended without a report` (killed, out of memory).
"""
import os

from scripts.experiments.jobs import events
from scripts.experiments.jobs.run_job import saved_progress, training_state
from util.run.run_logs import CsvLog


def current_epoch(run_dir):
    """The epoch a run has reached: its loss log's last row, else its saved state, else 1."""
    rows = CsvLog(os.path.join(run_dir, "loss_log.csv")).rows()
    epoch = int(float(rows[-1]["epoch"])) if rows else 0
    progress = saved_progress(run_dir)
    if progress is not None:
        epoch = max(epoch, progress[0] if progress[1] else progress[0] - 1)
    return max(epoch, 1)


def run_state(job):
    """(state, detail) of one RunJob (or anything with name, run_dir, epochs and events)."""
    rows = events.read(job.events)
    preempted = sum(1 for row in rows if row["event"] == "preempted")
    requeued = f"preempted and requeued {preempted} time{'s' if preempted != 1 else ''}" if preempted else ""
    trained = training_state(job.run_dir, job.epochs)
    if rows and rows[-1]["event"] == "queued":
        if events.process_alive(rows[-1]) is not False:
            return "pending", "; ".join(x for x in (f"queued by the submitting process ({rows[-1]['host']}:"
                                                    f"{rows[-1]['pid']}): {rows[-1]['detail']}", requeued) if x)
        rows = [row for row in rows if row["event"] != "queued"]  # that process stopped before submitting it
    if not rows:
        if trained == "partial":
            return "not submitted", f"stopped at epoch {current_epoch(job.run_dir)} of {job.epochs}"
        return ("not submitted", "trained, not evaluated") if trained == "finished" else ("not submitted", "")
    last = rows[-1]
    event = last["event"]
    if event == "finished":
        return "finished", requeued
    if event == "failed":
        line = events.last_line(last.get("log")) or last.get("detail", "")
        return "failed", "; ".join(x for x in (line, f"log: {last.get('log') or 'none'}", requeued) if x)
    if event in ("submitted", "preempted"):
        return "pending", requeued or f"job {last.get('job_id') or '(local)'} submitted {last['time']}"
    # started
    if events.process_alive(last) is False:
        return "ended without a report", "; ".join(x for x in (
            f"its process ({last['host']}:{last['pid']}) is gone", f"log: {last.get('log')}", requeued) if x)
    if trained == "finished":
        detail = "testing and evaluating"
    else:
        detail = f"epoch {current_epoch(job.run_dir)} of {job.epochs}"
    return f"running ({detail})", requeued


def status_table(jobs, notes=None):
    """One line per run: name, state, detail (with `notes[name]` after it, when given)."""
    notes = notes or {}
    states = [(job.name, state, "; ".join(x for x in (detail, notes.get(job.name, "")) if x))
              for job in jobs for state, detail in [run_state(job)]]
    width = max([len(name) for name, _, _ in states] + [3])
    swidth = max([len(state) for _, state, _ in states] + [5])
    lines = [f"{'run':<{width}}  {'state':<{swidth}}  detail"]
    lines += [f"{name:<{width}}  {state:<{swidth}}  {detail}".rstrip() for name, state, detail in states]
    counts = {}
    for _, state, _ in states:
        key = state.split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)

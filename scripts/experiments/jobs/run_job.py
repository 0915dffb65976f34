"""One run as one job: train (or resume) one run folder with train.py, then call the job's follow-up (test and
evaluate), recording each step in the run's events file.

Preemption and time limits. The scheduler warns a job before it stops it: submitit's checkpoint signal (SIGUSR2,
sent `signal_delay_s` before the time limit, and by the local executor's `_interrupt`), SIGUSR1 (clusters set up
that way) or SIGTERM. While training, the job hands the warning to train.py's own stop path (its StopRequest: the
step in progress finishes, `latest` is saved, train.main returns 128 + the signal's number); then the job records
`preempted` and asks submitit to requeue it (submitit calls `checkpoint()`, which resubmits this job unchanged:
the run folder is the checkpoint, and the requeued job resumes it with --continue_train). A warning that comes
while train.py is still setting up (loading data, building or resuming the model: its StopRequest is not installed
yet) is noted and handed to the StopRequest as soon as train.py installs it, so the run stops at its first step
boundary rather than after its last epoch. A warning during the follow-up requeues at once (the evaluation files
are written whole or not at all, and are redone).
"""
import contextlib
import logging
import os
import signal
import threading
import time
import traceback

import submitit

from scripts.experiments.jobs import events
from util.command_line.commands import command
from util.process.stop_request import StopRequest
from util.run.checkpoint import load_file

log = logging.getLogger("jobs")
STATE_FILE = "latest_train_state.pth"
WARNING_SIGNALS = (signal.SIGUSR2, signal.SIGUSR1, signal.SIGTERM)
STOPPED_CODES = {128 + int(sig): sig for sig in (*WARNING_SIGNALS, signal.SIGINT)}
HAND_OVER_POLL_S = 0.05  # how often a warning noted during train.py's set-up looks for its StopRequest


def saved_progress(run_dir):
    """(next epoch, images already trained in it) of the run's latest saved training state; None without one."""
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:  # memory-mapped: only the counters are read, not the networks and optimisers
        state = load_file(path, "training state", mmap=True, numpy_arrays=True)
        return int(state["epoch"]), int(state["epoch_iter"])
    except Exception as err:  # truncated file, foreign file, missing keys
        raise RuntimeError(f"the training state {path} is unreadable ({type(err).__name__}: {err}); move {run_dir} "
                           f"aside to train that run again") from err


def training_state(run_dir, epochs):
    """'new' (nothing saved), 'partial' (a saved state with epochs left) or 'finished' (every epoch trained)."""
    progress = saved_progress(run_dir)
    if progress is None:
        return "new"
    epoch, epoch_iter = progress
    return "finished" if epoch > epochs and epoch_iter == 0 else "partial"


@contextlib.contextmanager
def kept_logging():
    """Give the caller back its log handlers, log level and signal handlers after a CLI's main (train.py,
    test.py) run in this process set up its own."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, *WARNING_SIGNALS)}
    try:
        yield
    finally:
        for sig, handler in signals.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers and isinstance(handler, logging.FileHandler):
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def _environment():
    """(job id, log path) of the submitit job this process runs ('' outside one)."""
    try:
        env = submitit.JobEnvironment()
        return str(env.job_id), str(env.paths.stderr)
    except Exception:  # not a submitit job, or an executor without files (debug)
        return "", ""


def _submitit_requeue(handler):
    """submitit's checkpoint-and-requeue handler, if it is the one installed (a job of the local or SLURM
    executor); None otherwise (the debug executor, a direct call)."""
    from submitit.core.job_environment import SignalHandler
    return handler if isinstance(getattr(handler, "__self__", None), SignalHandler) else None


class RunJob(submitit.helpers.Checkpointable):
    """`train_args`: train.py's arguments for a new run (the job adds --continue_train to resume); `epochs`: the
    run's total; `after`: a picklable callable run once the run is trained (test, evaluate); `events`: the run's
    events file; `cwd`: the directory relative paths are taken from."""

    _TRANSIENT = ("_requeue", "_previous", "_training", "_warning", "_job_id", "_log", "_trained")

    def __init__(self, name, run_dir, train_args, epochs, events_file, cwd, after=None):
        self.name, self.run_dir, self.train_args, self.epochs = name, run_dir, list(train_args), int(epochs)
        self.events, self.cwd, self.after = events_file, cwd, after

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on the warning signal (after train.py has saved `latest`): the same job again; its
        run folder holds where it stopped."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __call__(self):
        os.chdir(self.cwd)
        self._job_id, self._log = _environment()
        self._log = self._log or os.path.join(self.run_dir, "train.log")
        self._training, self._warning = False, None
        self._previous = {sig: signal.getsignal(sig) for sig in WARNING_SIGNALS}
        self._requeue = _submitit_requeue(self._previous[signal.SIGUSR2])
        events.record(self.events, "started", self._job_id, self._log)
        for sig in WARNING_SIGNALS:
            signal.signal(sig, self._warned)
        try:
            return self._work()
        except Exception as err:
            traceback.print_exc()
            detail = f"{type(err).__name__}: {err}".splitlines()[0]
            events.record(self.events, "failed", self._job_id, self._log, detail)
            return dict(name=self.name, state="failed", detail=detail, log=self._log)
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _warned(self, signum, frame):
        self._warning = self._warning or signum
        if self._training:
            stop = signal.getsignal(signal.SIGTERM)  # train.py's StopRequest once its loop runs
            if callable(stop) and stop != self._warned:
                stop(signum, frame)
        else:
            self._stop_and_requeue(signum, "during the follow-up (test and evaluation); it is redone")

    def _hand_over(self):
        """While train.py runs: a warning noted before its StopRequest was installed goes to the StopRequest once
        there is one (the signal handler forwards later warnings itself)."""
        while not self._trained.wait(HAND_OVER_POLL_S):
            request = StopRequest.active
            if self._warning and request is not None and not request:
                log.warning("%s: %s came while train.py was setting up; stopping at the first step boundary",
                            self.name, signal.Signals(self._warning).name)
                request.request(self._warning)

    def _train(self, args):
        """train.main(args) with warnings handed to its stop path; its wall time goes to the run's train_time.csv."""
        self._training, self._trained = True, threading.Event()
        hand_over = threading.Thread(target=self._hand_over, name="warning-hand-over", daemon=True)
        hand_over.start()
        started, code = time.perf_counter(), None
        try:
            import train
            with kept_logging():
                code = train.main(args)
            return code
        finally:
            self._training = False
            self._trained.set()
            hand_over.join()
            events.record_train_time(self.events, self._job_id, time.perf_counter() - started,
                                     "error" if code is None else code)

    def _stop_and_requeue(self, signum, detail):
        name = signal.Signals(signum).name
        if self._requeue is None:  # no scheduler to requeue with: the run stays resumable
            events.record(self.events, "failed", self._job_id, self._log,
                          f"stopped by {name} {detail}; not requeued (no submitit job): submit it again")
            return dict(name=self.name, state="failed", detail=f"stopped by {name}", log=self._log)
        events.record(self.events, "preempted", self._job_id, self._log, f"{name} {detail}")
        log.warning("%s: %s %s; requeued", self.name, name, detail)
        self._requeue(int(submitit.JobEnvironment._usr_sig()), None)  # checkpoint(), requeue, exit
        return dict(name=self.name, state="preempted", detail=name, log=self._log)

    def _work(self):
        state = training_state(self.run_dir, self.epochs)
        if state != "finished":
            args = self.train_args + (["--continue_train"] if state == "partial" else [])
            log.info("%s: %s %s", self.name, "resuming:" if state == "partial" else "training:",
                     command("train", args))
            code = self._train(args)
            if code in STOPPED_CODES and (self._warning or STOPPED_CODES[code] != signal.SIGINT):
                progress = saved_progress(self.run_dir)
                where = f"epoch {progress[0]} after {progress[1]} images" if progress else "before any save"
                return self._stop_and_requeue(self._warning or STOPPED_CODES[code], f"saved latest in {where}")
            if code == 128 + signal.SIGINT:  # Ctrl-C: the run saved `latest` and stops with its command
                events.record(self.events, "failed", self._job_id, self._log, "stopped by SIGINT; latest saved")
                return dict(name=self.name, state="stopped", detail="stopped by SIGINT (Ctrl-C)", log=self._log,
                            code=code)
            if code:
                raise RuntimeError(f"train.py exited with code {code}; see {os.path.join(self.run_dir, 'train.log')}")
            if training_state(self.run_dir, self.epochs) != "finished":
                raise RuntimeError(f"train.py returned without finishing {self.run_dir}; see its train.log")
        if self._warning:  # a warning before training began, or after it ended
            return self._stop_and_requeue(self._warning, "before the follow-up")
        if self.after is not None:
            with kept_logging():
                self.after()
        events.record(self.events, "finished", self._job_id, self._log)
        return dict(name=self.name, state="finished", detail="", log=self._log)

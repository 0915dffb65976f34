"""Background threads for the dashboard: a daemon thread per destination runs submitted jobs, keeping only
the newest pending job per key, so the training loop never waits for a disk or a server."""
import logging
import threading
import time
from collections import OrderedDict

log = logging.getLogger(__name__)


class _NewestJobThread:
    """A daemon thread running submitted jobs; of the jobs waiting under one key only the newest is kept."""

    def __init__(self, name):
        self._pending = OrderedDict()
        self._cond = threading.Condition()
        self._busy = self._closing = self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, key, job):
        """Queue `job` under `key`, replacing a job of that key that has not started. Never blocks on I/O."""
        with self._cond:
            if self._stopped:
                return
            self._pending.pop(key, None)
            self._pending[key] = job
            self._cond.notify_all()

    def flush(self, timeout=None):
        """Wait until no runnable job is pending or running; True unless `timeout` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stopped or not (
                self._busy or (self._pending and self._can_run(time.monotonic()))), timeout)

    def close(self, timeout=10.0):
        """Run what can run now (within `timeout` seconds), then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _can_run(self, now):
        return True

    def _wait_seconds(self, now):
        return None

    def _execute(self, jobs):
        """Run `jobs` ([(key, job)]); returns the ones to put back for later."""
        raise NotImplementedError

    def _loop(self):
        while True:
            with self._cond:
                while self._stopped or not (self._pending and self._can_run(time.monotonic())):
                    if self._closing or self._stopped:
                        self._stopped = True
                        self._cond.notify_all()
                        return
                    self._cond.wait(self._wait_seconds(time.monotonic()) if self._pending else None)
                jobs = list(self._pending.items())
                self._pending.clear()
                self._busy = True
            leftover = []
            try:
                leftover = self._execute(jobs)
            finally:
                with self._cond:
                    # Undelivered jobs go back in front, unless a newer job for the same key arrived.
                    newer = OrderedDict(self._pending)
                    self._pending.clear()
                    self._pending.update((k, j) for k, j in leftover if k not in newer)
                    self._pending.update(newer)
                    self._busy = False
                    self._cond.notify_all()


class FileWorker(_NewestJobThread):
    """Writes the run's image files, plots and page in the background; errors are logged, not raised."""

    def __init__(self):
        super().__init__("dashboard-files")

    def _execute(self, jobs):
        for key, job in jobs:
            try:
                job()
            except Exception:  # a full disk must not end the training run
                log.exception("dashboard: writing %s failed", key)
        return []


class OrderedWorker(_NewestJobThread):
    """Runs every submitted job, in order, in a daemon thread (a logger that must see every point: TensorBoard,
    W&B). The first job that raises turns the worker off: one warning names the logger and the cause, the jobs
    after it are dropped, and training goes on without that logger."""

    def __init__(self, name, label):
        self.label = label
        self.failed = None  # the exception that turned the worker off
        self._count = 0
        super().__init__(name)

    def submit(self, job, key=None):
        with self._cond:
            self._count += 1
            count = self._count
        super().submit(count if key is None else key, job)

    def _execute(self, jobs):
        for key, job in jobs:
            try:
                job()
            except Exception as exc:
                self._fail(exc)
                return []
        return []

    def _fail(self, exc):
        self.failed = exc
        log.warning("%s: logging failed (%s: %s); this logger is off for the rest of the run, training goes on. "
                    "The CSV logs in the run folder hold everything, and the next start of the run writes what is "
                    "missing.", self.label, type(exc).__name__, exc)
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._cond.notify_all()

"""What loggers that only append (TensorBoard, W&B) share: a background worker that sees every point, and a
record in the logger's folder of the last point it wrote, so the next start of the run writes from the CSV
logs exactly the points the logger lacks (a segment run without it, the tail a crash cut off)."""
import json
import os
import time

from util.run.atomic import write_json
from util.dashboard.workers import OrderedWorker
from util.views.image_utils import make_grid

MARK_EVERY_SECONDS = 5.0


class AppendingSink:
    """Base of the TensorBoard and W&B sinks. Subclasses implement `_write_losses(x, step, values)`,
    `_write_convergence(epoch, value)`, `_write_lines(name, x, values)`, `_write_images(grid, epoch, step)` and
    `_finish()`; they run in the worker thread, in the order the dashboard saw the events."""

    name = "logger"

    def __init__(self, state_path, thread_name):
        self.state_path = state_path
        self.state = _read_state(state_path)
        self.logged = self.state.setdefault("logged", {})  # kind -> last x written
        self._marked = time.monotonic()
        self.worker = OrderedWorker(thread_name, self.name)

    # ------------------------------------------------------------------ events from the dashboard
    def start(self, history):
        """Write the history points this logger has not written before (one job: the loop need not wait)."""
        losses = history.losses.points_after(self.logged.get("losses"))
        conv = history.convergence.points_after(self.logged.get("convergence"))
        lines = [(name, series.points_after(self.logged.get(f"lines/{name}")))
                 for name, series in history.lines.items()]

        def replay():
            for x, step, values in losses:
                self._write_losses(x, step, values)
                self.logged["losses"] = x
            for epoch, _, values in conv:
                self._write_convergence(epoch, values["value"])
                self.logged["convergence"] = epoch
            for name, points in lines:
                for x, _, values in points:
                    self._write_lines(name, x, values)
                    self.logged[f"lines/{name}"] = x
            self._mark(force=True)
        self.worker.submit(replay)

    def losses(self, history, x, step, values):
        values = dict(values)
        self.worker.submit(lambda: (self._write_losses(x, step, values), self._done("losses", x)))

    def convergence(self, history, epoch, value):
        self.worker.submit(lambda: (self._write_convergence(epoch, value), self._done("convergence", epoch)))

    def lines(self, history, name, x, values):
        values = dict(values)
        self.worker.submit(lambda: (self._write_lines(name, x, values), self._done(f"lines/{name}", x)))

    def images(self, history, images, labels, epoch, step, snapshot):
        if not snapshot:
            return

        def write():
            self._write_images(make_grid(images, labels=labels, ncols=len(images)), epoch, step)
        self.worker.submit(write)

    def flush(self, timeout=None):
        return self.worker.flush(timeout)

    def close(self, history, timeout, ended):
        def finish():
            self._mark(force=True)
            self._finish()
        self.worker.submit(finish)
        self.worker.close(timeout=timeout)

    # ------------------------------------------------------------------ bookkeeping
    def _done(self, kind, x):
        self.logged[kind] = float(x)
        self._mark()

    def _mark(self, force=False):
        if force or time.monotonic() - self._marked >= MARK_EVERY_SECONDS:
            os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
            write_json(self.state_path, self.state)
            self._marked = time.monotonic()


def _read_state(path):
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}

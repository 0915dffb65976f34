"""The run's curves as the dashboard holds them: read from the run's CSV logs when the dashboard starts (so a
resumed run shows epoch 1 to now), then extended point by point while training runs."""
import logging
import os
from collections import OrderedDict

import numpy as np

from util.views import figures
from util.run import convergence, run_logs

log = logging.getLogger(__name__)

VALIDATION = "validation"  # the line window that val_log.csv feeds


def images_seen(count):
    """How the views name a point of training: by the images seen since the run began, never by "step" (the
    progress bar counts batches)."""
    count = int(count)
    return f"{count:,} image{'' if count == 1 else 's'} seen"


class Series:
    """Points of named series at increasing x (epochs), each with an optional integer step (images seen).

    A point at or before the last x rewrites the history from there: a run resumed from a checkpoint older than
    its last log rows redoes those steps, and the redone points replace the old ones.
    """

    def __init__(self):
        self.x, self.steps, self.values = [], [], []

    def __len__(self):
        return len(self.x)

    def add(self, x, values, step=None):
        x = float(x)
        while self.x and self.x[-1] >= x:
            self.x.pop(), self.steps.pop(), self.values.pop()
        self.x.append(x)
        self.steps.append(None if step is None else int(step))
        self.values.append(OrderedDict((str(k), float(v)) for k, v in values.items()))

    def names(self):
        return list(OrderedDict.fromkeys(k for point in self.values for k in point))

    def arrays(self):
        """(x, {name: values}) as new arrays (a snapshot a background thread may keep); NaN where a series
        has no value at some x."""
        ys = OrderedDict((n, np.array([point.get(n, np.nan) for point in self.values])) for n in self.names())
        return np.array(self.x, dtype=np.float64), ys

    def points_after(self, x0):
        """[(x, step, {name: value})] of the points with x > x0 (all of them when x0 is None)."""
        return [(x, s, dict(v)) for x, s, v in zip(self.x, self.steps, self.values) if x0 is None or x > x0]

    @property
    def last_x(self):
        return self.x[-1] if self.x else None


class RunHistory:
    """Losses (x: fractional epochs, step: images seen), the per-epoch convergence quantity, and line windows
    (validation scores per epoch)."""

    def __init__(self, gan_mode="vanilla"):
        self.gan_mode = gan_mode
        self.losses = Series()
        self.convergence = Series()  # one series: the quantity of util.run.convergence for gan_mode
        self.lines = OrderedDict()

    def line(self, name):
        return self.lines.setdefault(name, Series())

    @classmethod
    def load(cls, run_dir, gan_mode=None, images_per_epoch=None):
        """The history in `run_dir`'s CSV logs (empty for a new run). `gan_mode` None takes the mode the
        convergence log was written for. A log that cannot be read is skipped with a warning."""
        history = cls(gan_mode or "vanilla")
        run_dir = str(run_dir)
        if os.path.isfile(os.path.join(run_dir, run_logs.LOSS_LOG)):
            try:
                x, ys, steps = run_logs.read_losses(run_dir, images_per_epoch)
                for k, xk in enumerate(x):
                    values = {n: v[k] for n, v in ys.items() if not np.isnan(v[k])}
                    step = steps[k] if steps is not None and not np.isnan(steps[k]) else None
                    if not np.isnan(xk):
                        history.losses.add(xk, values, step)
            except (ValueError, KeyError, OSError) as exc:
                log.warning("dashboard: the loss curves start empty: %s", exc)
        if os.path.isfile(os.path.join(run_dir, run_logs.CONVERGENCE_LOG)):
            try:
                epochs, values, mode = run_logs.read_convergence(run_dir)
                if gan_mode is None:
                    history.gan_mode = mode
                for epoch, value in zip(epochs, values):
                    history.convergence.add(epoch, {"value": value})
            except (ValueError, KeyError, OSError) as exc:
                log.warning("dashboard: the convergence curve starts empty: %s", exc)
        if os.path.isfile(os.path.join(run_dir, run_logs.VALIDATION_LOG)):
            try:
                epochs, ys = run_logs.read_validation(run_dir)
                for k, epoch in enumerate(epochs):
                    history.line(VALIDATION).add(epoch, {n: v[k] for n, v in ys.items() if not np.isnan(v[k])})
            except (ValueError, KeyError, OSError) as exc:
                log.warning("dashboard: the validation curves start empty: %s", exc)
        return history


def loss_panels(history, label):
    """One panel per loss (util.views.figures), x in epochs."""
    return figures.metric_panels({label: history.losses.arrays()}) if len(history.losses) else []


def convergence_panels(history):
    """The convergence quantity of the run's --gan_mode per epoch, with its equilibrium line; the line is
    named for the quantity (e.g. -L_GAN)."""
    if not len(history.convergence):
        return []
    epochs, ys = history.convergence.arrays()
    label = convergence.quantity(history.gan_mode).label.split(" = ")[0]
    return [figures.convergence_panel({label: (epochs, ys["value"])}, history.gan_mode)]


def line_panels(history, name, label):
    """One panel per series of the line window `name` (e.g. validation: L1, PSNR)."""
    series = history.lines.get(name)
    return figures.metric_panels({label: series.arrays()}) if series is not None and len(series) else []

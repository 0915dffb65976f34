"""The training dashboard: one small interface over the run's views.

The run's CSV logs (`loss_log.csv`, `convergence.csv`, `val_log.csv`, written by train.py) are its history.
On start the dashboard reads them (`RunHistory.load`), so every view covers epoch 1 to now after a resume too,
then hands each event to its sinks, one module each:

- `HtmlSink` (html_sink.py): `<run_dir>/web/index.html`, plots and snapshots; on unless `use_html=False`.
- `VisdomSink` (visdom_sink.py): live windows; on when `display_id` > 0.
- `TensorBoardSink` (tensorboard_sink.py): event files in `<run_dir>/tensorboard/`; `use_tensorboard`.
- `WandbSink` (wandb_sink.py): a Weights & Biases run (offline with WANDB_MODE=offline); `use_wandb`.

The training loop only converts tensors to images and hands over events; each sink does its I/O in its own
background thread. A sink that fails is failure-isolated: one warning, then training goes on without it. A
logger that was asked for and cannot start at all (package missing, W&B not logged in) is refused at start
with what to do. The figures' layout comes from util/views/figures.py, which scripts/analysis/plot_logs.py draws too.
"""
import atexit
import logging
import time

from util.dashboard.history import RunHistory
from util.views.html import order_visuals
from util.views.image_utils import tensor2im
from util.run.run_logs import TIME_FORMAT

log = logging.getLogger(__name__)


class Dashboard:
    """The run's views: HTML page, visdom, TensorBoard, W&B.

    `gan_mode` picks the convergence quantity and its equilibrium line (util.run.convergence; None: the mode the
    run's convergence.csv was written for). `run_options` (the run's resolved options) name the model and the
    planned epochs on the page and go to the loggers' config. `images_per_epoch` is the number of images one
    process sees per epoch (the denominator of train.py's `counter_ratio`), so loss rows read back from
    loss_log.csv land at the x they were plotted at live. `display_id` <= 0 turns visdom off; `enabled=False`
    (ranks other than 0) turns everything off. `env` defaults to the run name, so runs sit side by side in
    visdom. `ncols` is the number of visuals a row of visdom's image grid (0: all of them, input to target in
    one row). Nothing here waits for, or raises because of, a server.
    """

    def __init__(self, run_dir, name, *, gan_mode=None, images_per_epoch=None, display_id=1,
                 server="http://localhost", port=8097, env=None, ncols=0, winsize=256, use_html=True,
                 use_tensorboard=False, use_wandb=False, wandb_project=None, run_options=None, enabled=True,
                 retry_seconds=30.0, request_timeout=5.0, html_refresh=30):
        self.name = name
        self.run_dir = str(run_dir)
        self.enabled = bool(enabled)
        self.images_per_epoch = images_per_epoch
        self.sinks = []
        self.html = self.visdom = None
        self._closed = False
        self._warned = set()
        self._last_snapshot = None  # (epoch, images seen) of the newest snapshot
        if not self.enabled:
            self.history = RunHistory(gan_mode or "vanilla")
            return
        self.history = RunHistory.load(self.run_dir, gan_mode, images_per_epoch)
        if use_html:
            from util.dashboard.html_sink import HtmlSink
            opts = run_options or {}
            planned = (opts["n_epochs"] + opts["n_epochs_decay"] if isinstance(opts.get("n_epochs"), int)
                       and isinstance(opts.get("n_epochs_decay"), int) else None)
            self.html = HtmlSink(self.run_dir, name, model=opts.get("model"), planned_epochs=planned,
                                 winsize=winsize, refresh=html_refresh)
            self.sinks.append(self.html)
        if int(display_id) > 0:
            from util.dashboard.visdom_sink import VisdomSink
            self.visdom = VisdomSink(name, display_id=display_id, ncols=ncols, winsize=winsize, server=server,
                                     port=port, env=env or name, retry_seconds=retry_seconds,
                                     request_timeout=request_timeout)
            self.sinks.append(self.visdom)
        try:
            if use_tensorboard:
                from util.dashboard.tensorboard_sink import TensorBoardSink
                self.sinks.append(TensorBoardSink(self.run_dir, name, gan_mode=self.history.gan_mode,
                                                  run_options=run_options))
            if use_wandb:
                from util.dashboard.wandb_sink import WandbSink
                self.sinks.append(WandbSink(self.run_dir, name, project=wandb_project or name,
                                            gan_mode=self.history.gan_mode, run_options=run_options))
        except Exception:
            self.close(timeout=5.0)  # the sinks already started stop their threads
            raise
        if self.html is not None:
            log.info("the run's page: %s/web/index.html (snapshots every --update_html_freq images and at the "
                     "end of every epoch)", self.run_dir)
        self._each("start", self.history)
        if self.sinks:
            atexit.register(self.close, timeout=5.0)  # a run that dies still gets its last page

    # ------------------------------------------------------------------ events from the training loop
    def display_current_results(self, visuals, epoch, step, save_result):
        """Show the visuals as one labelled image grid (visdom); when `save_result`, also snapshot them to the
        HTML page, TensorBoard and W&B. `step` is the number of images seen, as everywhere in the views."""
        if not self.sinks:
            return
        visuals = order_visuals(visuals)
        if not visuals:
            return
        images = [tensor2im(t) for t in visuals.values()]  # in this thread: a bad visual is the caller's error
        labels = list(visuals)
        if save_result:
            self._last_snapshot = (int(epoch), int(step))
        self._each("images", self.history, images, labels, int(epoch), int(step), bool(save_result))

    def epoch_snapshot(self, visuals, epoch, step):
        """Snapshot the visuals at the end of an epoch (or of training, or at a stop), unless this very step
        was saved already: every epoch has a picture on the page, whatever --update_html_freq says."""
        if (int(epoch), int(step)) != self._last_snapshot:
            self.display_current_results(visuals, epoch, step, save_result=True)

    def plot_current_losses(self, epoch, counter_ratio, losses, total_iters=None):
        """Add one point per loss at fractional epoch `epoch - 1 + counter_ratio` (epochs completed);
        `total_iters` (images seen) is the step of loggers that count steps (TensorBoard)."""
        if not self.enabled or not losses:
            return
        x = epoch - 1 + counter_ratio
        step = total_iters if total_iters is not None else int(round(x * (self.images_per_epoch or 1)))
        self.history.losses.add(x, losses, step)
        self._each("losses", self.history, x, step, dict(losses))

    def plot_lines(self, window_name, x, values):
        """Add one point per entry of `values` at `x` to the line window `window_name` ("validation" is read
        back from val_log.csv on start)."""
        if not self.enabled or not values:
            return
        self.history.line(window_name).add(x, values)
        self._each("lines", self.history, window_name, x, dict(values))

    def plot_convergence(self, epoch, value):
        """The per-epoch convergence quantity of the run's --gan_mode (util.run.convergence), against its
        equilibrium."""
        if not self.enabled:
            return
        self.history.convergence.add(epoch, {"value": value})
        self._each("convergence", self.history, int(epoch), float(value))

    # ------------------------------------------------------------------ the HTML page, for callers and tests
    def saved_steps(self):
        return self.html.saved_steps() if self.html is not None else []

    def save_html(self):
        return self.html.save_html() if self.html is not None else None

    def flush(self, timeout=None):
        """Wait until what was handed over so far is written or sent (where it can be); True when done."""
        done = True
        deadline = None if timeout is None else time.monotonic() + timeout
        for sink in self.sinks:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if sink is not self.visdom:  # a visdom server may be away for good
                done = sink.flush(left) and done
        return done

    def close(self, timeout=10.0, outcome=None):
        """Write the final page (it stops reloading), send what is pending, stop the threads. `outcome` is how
        training ended, as util.run.run_outcome words it ("finished 8 of 8 epochs", "stopped by SIGINT at epoch 3 of
        6; resumable with ...", "failed: ...")."""
        if self._closed or not self.enabled:
            return
        self._closed = True
        ended = outcome or (f"ended at {time.strftime(TIME_FORMAT)} without a reason given (train.log says why); "
                            "--continue_train resumes the run and this page")
        self._each("close", self.history, timeout, ended)

    # ------------------------------------------------------------------ isolation
    def _each(self, method, *args):
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            except Exception as exc:  # a broken view must not stop training
                self.sinks.remove(sink)
                if sink.name not in self._warned:
                    self._warned.add(sink.name)
                    log.warning("dashboard: the %s failed (%s: %s) and is off for the rest of this run; training "
                                "goes on, and the CSV logs hold everything", sink.name, type(exc).__name__, exc)

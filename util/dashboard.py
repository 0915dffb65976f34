"""The training dashboard: live visdom windows and the run's HTML page (`<run_dir>/web/index.html`).

The training loop only converts tensors and hands over jobs. visdom traffic runs in one background thread
(`VisdomWorker`: the server may be absent, or come and go), file work (image PNGs, matplotlib plots, the
page) in another (`FileWorker`); both keep only the newest pending job per window. The figure helpers at
the end are shared with scripts/plot_logs.py.
"""
import atexit
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict

import numpy as np

from util.html import HTML, order_visuals
from util.image_utils import make_grid, save_image, tensor2im

log = logging.getLogger(__name__)

LOG4 = math.log(4.0)  # -L_GAN at the GAN equilibrium (ATME paper, Theorem 1)


class Dashboard:
    """Live visdom windows plus the run's HTML page.

    `display_id` <= 0 turns visdom off (the HTML page is still written unless `use_html` is False);
    `enabled=False` (ranks other than 0) turns everything off. `env` defaults to the run name, so runs
    sit side by side in visdom. Nothing here waits for, or raises because of, the visdom server.
    """

    def __init__(self, run_dir, name, *, display_id=1, server="http://localhost", port=8097, env=None,
                 ncols=4, winsize=256, use_html=True, enabled=True, retry_seconds=30.0, request_timeout=5.0,
                 html_refresh=30):
        self.name = name
        self.enabled = bool(enabled)
        self.display_id = int(display_id)
        self.ncols = max(int(ncols), 1)
        self.winsize = int(winsize)
        self.use_html = self.enabled and bool(use_html)
        self.html_refresh = html_refresh
        self.web_dir = os.path.join(str(run_dir), "web")
        self.img_dir = os.path.join(self.web_dir, "images")
        self.steps_file = os.path.join(self.web_dir, "saved_steps.jsonl")
        self.loss_png = os.path.join(self.img_dir, "losses.png")
        self.convergence_png = os.path.join(self.img_dir, "convergence.png")
        self._loss_history = _LineHistory()
        self._line_histories = {}
        self._convergence = OrderedDict()  # epoch -> -L_GAN
        self._drawn = {}  # png path -> number of points it shows, so unchanged plots are not redrawn
        self._closed = False
        self.visdom = self.files = None
        if self.enabled and self.display_id > 0:
            self.visdom = VisdomWorker(server=server, port=port, env=env or name,
                                       retry_seconds=retry_seconds, request_timeout=request_timeout)
        if self.use_html:
            os.makedirs(self.img_dir, exist_ok=True)
            self.files = FileWorker()
        if self.visdom or self.files:
            atexit.register(self.close, timeout=5.0)  # a run that dies still gets its last page

    # Window ids carry display_id, so runs that share one env (--display_env) can keep apart.
    def _win(self, kind):
        return f"{kind}_{self.display_id}"

    def display_current_results(self, visuals, epoch, step, save_result):
        """Show the visuals as one labelled image grid; when `save_result`, add them to the HTML page."""
        save_result = save_result and self.files is not None
        if not self.enabled or (self.visdom is None and not save_result):
            return
        visuals = order_visuals(visuals)
        images = [tensor2im(t) for t in visuals.values()]
        labels = list(visuals)
        if self.visdom is not None:
            title = f"{self.name}: images (epoch {epoch}, step {step})"
            self.visdom.submit(self._win("images"), _draw_images(images, labels, title, self.ncols, self.winsize))
        if save_result:
            epoch, step = int(epoch), int(step)
            names = [f"epoch{epoch:03d}_step{step:09d}_{label}.png" for label in labels]

            def save_step():
                for name, image in zip(names, images):
                    save_image(image, os.path.join(self.img_dir, name))
                record = dict(epoch=epoch, step=step, labels=labels, files=names)
                with open(self.steps_file, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")

            self.files.submit(("step", epoch, step), save_step)
            self._submit_page()

    def plot_current_losses(self, epoch, counter_ratio, losses):
        """Add one point per loss at fractional epoch `epoch - 1 + counter_ratio` (epochs completed)."""
        if not self.enabled or not losses:
            return
        self._loss_history.add(epoch - 1 + counter_ratio, losses)
        if self.visdom is not None:
            x, ys = self._loss_history.arrays()
            self.visdom.submit(self._win("losses"), _draw_lines(
                x, ys, title=f"{self.name}: losses", xlabel="epoch", ylabel="loss"))

    def plot_lines(self, window_name, x, values):
        """Add one point per entry of `values` at `x` to the line plot `window_name` (e.g. validation)."""
        if not self.enabled or not values:
            return
        history = self._line_histories.setdefault(window_name, _LineHistory())
        history.add(x, values)
        if self.visdom is not None:
            xs, ys = history.arrays()
            self.visdom.submit(self._win(f"lines_{window_name}"), _draw_lines(
                xs, ys, title=f"{self.name}: {window_name}", xlabel="x", ylabel=window_name))

    def plot_convergence(self, epoch, neg_L_GAN):
        """-L_GAN per epoch against log 4, in its own window and as `web/images/convergence.png`."""
        if not self.enabled:
            return
        self._convergence[int(epoch)] = float(neg_L_GAN)
        if self.visdom is not None:
            epochs, values = self._convergence_arrays()
            ys = OrderedDict([("-L_GAN", values), (f"log 4 = {LOG4:.3f}", np.full_like(values, LOG4))])
            self.visdom.submit(self._win("convergence"), _draw_lines(
                epochs, ys, title=f"{self.name}: -L_GAN vs log 4", xlabel="epoch", ylabel="-L_GAN"))
        if self.files is not None:
            self._submit_page()

    def _convergence_arrays(self):
        epochs = np.array(list(self._convergence), dtype=np.float64)
        return epochs, np.array(list(self._convergence.values()), dtype=np.float64)

    def _submit_page(self):
        """Queue a redraw of the plots and the page, with a snapshot of the curves as they are now."""
        losses = self._loss_history.arrays() if len(self._loss_history) else None
        convergence = self._convergence_arrays() if self._convergence else None

        def draw_page():
            if losses is not None and self._drawn.get(self.loss_png) != len(losses[0]):
                loss_figure({self.name: losses}, path=self.loss_png, title=f"{self.name}: losses")
                self._drawn[self.loss_png] = len(losses[0])
            if convergence is not None and self._drawn.get(self.convergence_png) != len(convergence[0]):
                convergence_figure({self.name: convergence}, path=self.convergence_png,
                                   title=f"{self.name}: -L_GAN per epoch")
                self._drawn[self.convergence_png] = len(convergence[0])
            self.save_html()

        self.files.submit("page", draw_page)

    def save_html(self):
        """Rebuild `web/index.html`: the plots, then the visuals of every saved step, newest first."""
        if not self.use_html:
            return None
        page = HTML(self.web_dir, f"Experiment name = {self.name}", refresh=self.html_refresh)
        plots = [p for p in (self.loss_png, self.convergence_png) if os.path.isfile(p)]
        if plots:
            page.add_header("Curves")
            # The query string makes the browser fetch a redrawn plot instead of its cached copy.
            srcs = [f"{os.path.basename(p)}?v={os.stat(p).st_mtime_ns}" for p in plots]
            page.add_images(srcs, [os.path.splitext(os.path.basename(p))[0] for p in plots], srcs,
                            width=max(self.winsize * 2, 480))
        for record in self.saved_steps():
            page.add_header(f"epoch {record['epoch']}, step {record['step']}")
            page.add_images(record["files"], record["labels"], record["files"], width=self.winsize)
        return page.save()

    def saved_steps(self):
        """The saved steps recorded in `web/saved_steps.jsonl`, newest first (one per epoch and step)."""
        if not os.path.isfile(self.steps_file):
            return []
        records = {}
        with open(self.steps_file, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash; the other steps still show
                records[(record["epoch"], record["step"])] = record
        return [records[key] for key in sorted(records, reverse=True)]

    def flush(self, timeout=None):
        """Wait until the files queued so far are written (the page is current); True when done."""
        return self.files.flush(timeout) if self.files is not None else True

    def close(self, timeout=10.0):
        """Send what is pending to visdom (when reachable), write the final plots and page, stop the threads."""
        if self._closed or not self.enabled:
            return
        self._closed = True
        if self.files is not None and (len(self._loss_history) or self._convergence or
                                       os.path.isfile(self.steps_file)):
            self._submit_page()
        for worker in (self.visdom, self.files):
            if worker is not None:
                worker.close(timeout=timeout)


class _LineHistory:
    """Points of named series at shared x values; a series missing at some x gets NaN there."""

    def __init__(self):
        self.x = []
        self.values = []

    def __len__(self):
        return len(self.x)

    def add(self, x, values):
        self.x.append(float(x))
        self.values.append({str(k): float(v) for k, v in values.items()})

    def arrays(self):
        names = list(OrderedDict.fromkeys(k for point in self.values for k in point))
        ys = OrderedDict((n, np.array([point.get(n, np.nan) for point in self.values])) for n in names)
        return np.array(self.x), ys


def _draw_images(images, labels, title, ncols, winsize):
    """A visdom job: the grid is built in the worker thread, not in the training loop."""
    def draw(vis, win):
        # Small crops are enlarged to about winsize here, so the labels keep a readable size on screen.
        grid = make_grid(images, labels=labels, ncols=ncols, min_tile=winsize)
        vis.image(np.ascontiguousarray(grid.transpose(2, 0, 1)), win=win,
                  opts=dict(title=title, width=grid.shape[1] + 20, height=grid.shape[0] + 60))
    return draw


def _draw_lines(x, ys, *, title, xlabel, ylabel):
    names = list(ys)
    y = np.stack([ys[n] for n in names], axis=1)
    xx = np.repeat(x[:, None], len(names), axis=1)

    def draw(vis, win):
        vis.line(X=xx, Y=y, win=win, opts=dict(title=title, legend=names, xlabel=xlabel, ylabel=ylabel,
                                               showlegend=True))
    return draw


# ----------------------------------------------------------------------------------------------------
# background threads


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


class _QuietVisdomLogs(logging.Filter):
    """Drops the visdom client's warnings that are expected with our settings (no incoming socket)."""

    _EXPECTED = ("Without the incoming socket", "Setting up a new session")

    def filter(self, record):
        return not str(record.msg).startswith(self._EXPECTED)


_VISDOM_FILTER = _QuietVisdomLogs()


def _make_visdom_client(*, server, port, env, request_timeout):
    """A visdom client whose HTTP requests time out; raises ConnectionError/OSError when unreachable."""
    import visdom

    class TimeoutVisdom(visdom.Visdom):
        # visdom posts without a timeout, so a server that accepts but never answers would hang the thread.
        def _handle_post(self, url, data=None):
            return self.session.post(url, data={} if data is None else data, timeout=request_timeout).text

    visdom_log = logging.getLogger("visdom")
    if _VISDOM_FILTER not in visdom_log.filters:
        visdom_log.addFilter(_VISDOM_FILTER)
    # The constructor already posts to the server: with raise_exceptions it raises when nobody listens.
    vis = TimeoutVisdom(server=server, port=port, env=env, raise_exceptions=True, use_incoming_socket=False)
    if not vis.check_connection():
        raise ConnectionError("the server did not answer like a visdom server")
    return vis


class VisdomWorker(_NewestJobThread):
    """Owns the visdom client in a daemon thread; callers only `submit(window, draw)`.

    `draw(vis, window)` must draw the window's whole state, so an older pending job is stale once a newer
    one arrives. While the server is unreachable the jobs wait, a reconnect is tried every
    `retry_seconds`, and one warning is logged per outage.
    """

    def __init__(self, *, server="http://localhost", port=8097, env="main", retry_seconds=30.0,
                 request_timeout=5.0, client_factory=_make_visdom_client):
        self.server, self.port, self.env = server, int(port), env
        self.retry_seconds = float(retry_seconds)
        self.request_timeout = float(request_timeout)
        self.client_factory = client_factory
        self.sent = 0  # windows delivered, for tests and overhead reports
        self._vis = None
        self._next_attempt = 0.0
        self._outage = False
        super().__init__("dashboard-visdom")

    @property
    def connected(self):
        return self._vis is not None

    def _can_run(self, now):
        return self._vis is not None or now >= self._next_attempt

    def _wait_seconds(self, now):
        return max(self._next_attempt - now, 0.001)

    def _execute(self, jobs):
        if self._vis is None and not self._connect():
            return jobs
        for k, (window, draw) in enumerate(jobs):
            try:
                draw(self._vis, window)
                self.sent += 1
            except (ConnectionError, OSError) as exc:  # requests' errors are OSErrors as well
                self._lost(exc)
                return jobs[k:]
            except Exception:  # a bad plot must not stop the other windows
                log.exception("visdom: drawing window %r failed; skipping this update", window)
        return []

    def _connect(self):
        try:
            self._vis = self.client_factory(server=self.server, port=self.port, env=self.env,
                                            request_timeout=self.request_timeout)
        except ImportError as exc:
            log.warning("visdom is not installed (%s): the live display is off; install visdom==0.2.4 or "
                        "pass --display_id 0 to silence this", exc)
            with self._cond:
                self._stopped = True
            return False
        except Exception as exc:  # refused, timed out, or something else listens on the port
            self._lost(exc)
            return False
        if self._outage:
            log.info("visdom server at %s:%d is reachable again; the live display resumes", self.server, self.port)
            self._outage = False
        return True

    def _lost(self, exc):
        self._vis = None
        self._next_attempt = time.monotonic() + self.retry_seconds
        if self._outage:
            return
        self._outage = True
        log.warning(
            "visdom server at %s:%d is not reachable (%s); training goes on without the live display and "
            "retries every %gs. To watch the run, start a server: `python -m visdom.server -port %d` "
            "(on a machine without internet run `python scripts/install_visdom_assets.py` once before), "
            "then open %s:%d/env/%s. To turn the live display off, pass --display_id 0. The HTML page "
            "(web/index.html in the run folder) is written either way.",
            self.server, self.port, _short(exc), self.retry_seconds, self.port, self.server, self.port, self.env)


def _short(exc):
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 160 else text[:157] + "..."


# ----------------------------------------------------------------------------------------------------
# PNG figures (matplotlib's object API on the Agg canvas: no pyplot state, safe beside training)


def _new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp_{os.getpid()}_{os.path.basename(path)}")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def convergence_figure(curves, path=None, title="-L_GAN per epoch"):
    """-L_GAN per epoch, one line per run of `curves` ({label: (epochs, values)}), plus the log 4 line.

    Writes a PNG when `path` is given (atomically) and returns the matplotlib Figure.
    """
    fig = _new_figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    for label, (epochs, values) in curves.items():
        ax.plot(np.asarray(epochs, dtype=float), np.asarray(values, dtype=float), marker="o", markersize=3,
                linewidth=1.5, label=str(label))
    ax.axhline(LOG4, color="black", linestyle="--", linewidth=1, label=f"log 4 = {LOG4:.3f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("-L_GAN = D_real + D_fake")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13, top=0.91)
    if path is not None:
        _save_figure(fig, path)
    return fig


def loss_figure(runs, path=None, title="losses"):
    """One panel per loss name, one line per run: `runs` is {label: (x, {loss_name: values})}."""
    names = list(OrderedDict.fromkeys(n for _, ys in runs.values() for n in ys))
    if not names:
        raise ValueError("loss_figure got no loss series to draw")
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig = _new_figure(4.2 * ncols, 2.8 * nrows + 0.5)
    for k, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for label, (x, ys) in runs.items():
            if name in ys:
                ax.plot(np.asarray(x, dtype=float), np.asarray(ys[name], dtype=float), linewidth=1.2,
                        label=str(label))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    # tight_layout costs about as much as the drawing itself here; fixed margins do.
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.5 / (2.8 * nrows + 0.5) + 0.06,
                        top=1 - 0.75 / (2.8 * nrows + 0.5), hspace=0.55, wspace=0.25)
    if path is not None:
        _save_figure(fig, path)
    return fig

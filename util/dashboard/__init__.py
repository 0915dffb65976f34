"""The training dashboard: live visdom windows and the run's HTML page (`<run_dir>/web/index.html`).

The training loop only converts tensors and hands over jobs. visdom traffic runs in one background thread
(`VisdomWorker`: the server may be absent, or come and go), file work (image PNGs, matplotlib plots, the
page) in another (`FileWorker`); both keep only the newest pending job per window. The figures come from
util/figures.py, which scripts/analysis/plot_logs.py draws with too.
"""
import atexit
import json
import logging
import os
from collections import OrderedDict

import numpy as np

from util.convergence import LOG4
from util.dashboard.visdom_sink import VisdomWorker, _draw_images, _draw_lines
from util.dashboard.workers import FileWorker
from util.figures import convergence_figure, loss_figure
from util.html import HTML, order_visuals
from util.image_utils import save_image, tensor2im

log = logging.getLogger(__name__)


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

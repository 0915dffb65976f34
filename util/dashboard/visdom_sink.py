"""The live visdom display: a client that times out, owned by one background thread that reconnects while
the server is away, and the jobs that draw an image grid or a figure of panels (util.views.figures, as plotly
subplots) into a window."""
import logging
import math
import time
from urllib.parse import quote

import numpy as np

from util.dashboard.history import convergence_panels, images_seen, line_panels, loss_panels
from util.dashboard.workers import _NewestJobThread
from util.views.figures import epoch_range, epoch_tick_step, panel_columns
from util.views.image_utils import make_grid

log = logging.getLogger(__name__)

PANEL_PX = (430, 300)  # width, height of one panel in a visdom window


class VisdomSink:
    """Four windows in the run's environment: the current visuals as one labelled grid, the losses (one panel
    per loss), the convergence quantity with its equilibrium line, and validation scores. Each update redraws
    a window's whole state, so the windows always show the run's whole history."""

    name = "visdom"

    def __init__(self, name, *, display_id=1, ncols=0, winsize=256, worker=None, **worker_args):
        self.run_name = name
        self.display_id = int(display_id)
        self.ncols = max(int(ncols), 0)  # 0: one row, a column per visual
        self.winsize = int(winsize)
        self.worker = worker or VisdomWorker(**worker_args)

    # Window ids carry display_id, so runs that share one env (--display_env) can keep apart.
    def window(self, kind):
        return f"{kind}_{self.display_id}"

    def start(self, history):
        self.losses(history)
        self.convergence(history)
        for name in history.lines:
            self.lines(history, name)

    def losses(self, history, *_):
        panels = loss_panels(history, self.run_name)
        if panels:
            self.worker.submit(self.window("losses"), _draw_panels(panels, f"{self.run_name}: losses"))

    def convergence(self, history, *_):
        panels = convergence_panels(history)
        if panels:
            self.worker.submit(self.window("convergence"), _draw_panels(
                panels, f"{self.run_name}: convergence ({panels[0].title})", legend=True))

    def lines(self, history, name, *_):
        panels = line_panels(history, name, self.run_name)
        if panels:
            self.worker.submit(self.window(f"lines_{name}"), _draw_panels(panels, f"{self.run_name}: {name}"))

    def images(self, history, images, labels, epoch, step, snapshot):
        title = f"{self.run_name}: images (epoch {epoch}, {images_seen(step)})"
        ncols = self.ncols or len(images)
        self.worker.submit(self.window("images"), _draw_images(images, labels, title, ncols, self.winsize))

    def flush(self, timeout=None):
        return self.worker.flush(timeout)

    def close(self, history, timeout, ended):
        self.worker.close(timeout=timeout)


def _finite(values):
    """JSON-safe numbers: NaN (a series missing at some x) becomes a gap (None)."""
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, dtype=float).tolist()]


def plotly_figure(panels, legend=False, xlabel="epoch"):
    """(data, layout) of plotly subplots laid out like util.views.figures.draw_panels: one axis pair per panel,
    markers on every line (so a single point shows), equilibrium lines dashed across the panel, the x axis
    (epochs) over util.views.figures.epoch_range with whole-epoch ticks."""
    ncols = panel_columns(len(panels))
    nrows = -(-len(panels) // ncols)
    data, annotations = [], []
    # The top margin keeps the first row's panel titles clear of plotly's toolbar.
    layout = {"showlegend": bool(legend), "margin": {"l": 50, "r": 20, "t": 60, "b": 40}, "hovermode": "closest"}
    gap_x, gap_y = 0.08 if ncols > 1 else 0.0, 0.16 if nrows > 1 else 0.0
    for k, panel in enumerate(panels):
        row, col = divmod(k, ncols)
        axis = "" if k == 0 else str(k + 1)
        x0, x1 = col / ncols + (gap_x / 2 if col else 0), (col + 1) / ncols - (gap_x / 2 if col < ncols - 1 else 0)
        y1 = 1 - row / nrows - (gap_y / 2 if row else 0)
        y0 = 1 - (row + 1) / nrows + (gap_y / 2 if row < nrows - 1 else 0)
        low, high = epoch_range(panel)  # whole-epoch ticks, no negative epochs around a single point
        layout[f"xaxis{axis}"] = {"domain": [x0, x1], "anchor": f"y{axis}", "title": {"text": xlabel},
                                  "range": [low, high], "tick0": 0, "dtick": epoch_tick_step(low, high)}
        layout[f"yaxis{axis}"] = {"domain": [y0, y1], "anchor": f"x{axis}"}
        annotations.append({"text": f"<b>{panel.title}</b>", "x": (x0 + x1) / 2, "y": y1, "xref": "paper",
                            "yref": "paper", "xanchor": "center", "yanchor": "bottom", "showarrow": False})
        for label, (x, y) in panel.lines.items():
            data.append({"x": _finite(x), "y": _finite(y), "type": "scatter", "mode": "lines+markers",
                         "name": str(label) if len(panel.lines) > 1 or legend else panel.title,
                         "marker": {"size": 5}, "xaxis": f"x{axis}", "yaxis": f"y{axis}"})
        if panel.hlines and panel.lines:
            for value, label in panel.hlines:
                data.append({"x": [low, high], "y": [value, value], "type": "scatter", "mode": "lines", "name": label,
                             "line": {"dash": "dash", "color": "black", "width": 1},
                             "xaxis": f"x{axis}", "yaxis": f"y{axis}"})
    layout["annotations"] = annotations
    return data, layout


def _draw_panels(panels, title, legend=False):
    """A visdom job drawing `panels` (util.views.figures.Panel) as one window of plotly subplots."""
    data, layout = plotly_figure(panels, legend=legend)
    ncols = panel_columns(len(panels))
    nrows = -(-len(panels) // ncols)
    width, height = PANEL_PX[0] * ncols + 60, PANEL_PX[1] * nrows + 70

    def draw(vis, win):
        vis._send({"data": data, "layout": layout, "win": win, "eid": vis.env,
                   "opts": {"title": title, "width": width, "height": height}})
    return draw


def _draw_images(images, labels, title, ncols, winsize):
    """A visdom job: the grid is built in the worker thread, not in the training loop."""
    def draw(vis, win):
        # Small crops are enlarged to about winsize here, so the labels keep a readable size on screen.
        grid = make_grid(images, labels=labels, ncols=ncols, min_tile=winsize)
        vis.image(np.ascontiguousarray(grid.transpose(2, 0, 1)), win=win,
                  opts=dict(title=title, width=grid.shape[1] + 20, height=grid.shape[0] + 60))
    return draw


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
        self._announced = False
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
            log.info("visdom server at %s:%d is reachable again; the live display resumes at %s",
                     self.server, self.port, self.url)
            self._outage = False
        elif not self._announced:
            log.info("visdom: the live display of this run is at %s", self.url)
        self._announced = True
        return True

    @property
    def url(self):
        return f"{self.server}:{self.port}/env/{quote(str(self.env))}"

    def _lost(self, exc):
        self._vis = None
        self._next_attempt = time.monotonic() + self.retry_seconds
        if self._outage:
            return
        self._outage = True
        log.warning(
            "visdom server at %s:%d is not reachable (%s); training goes on without the live display and "
            "retries every %gs. To watch the run, start a server: `python -m visdom.server -port %d` "
            "(on a machine without internet run `python -m scripts.tools.install_visdom_assets` once before), "
            "then open %s. To turn the live display off, pass --display_id 0. The HTML page "
            "(web/index.html in the run folder) is written either way.",
            self.server, self.port, _short(exc), self.retry_seconds, self.port, self.url)


def _short(exc):
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 160 else text[:157] + "..."

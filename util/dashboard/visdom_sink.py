"""The live visdom display: a client that times out, owned by one background thread that reconnects while
the server is away, and the jobs that draw an image grid or a line plot into a window."""
import logging
import time

import numpy as np

from util.dashboard.workers import _NewestJobThread
from util.image_utils import make_grid

log = logging.getLogger(__name__)


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
            "(on a machine without internet run `python -m scripts.tools.install_visdom_assets` once before), "
            "then open %s:%d/env/%s. To turn the live display off, pass --display_id 0. The HTML page "
            "(web/index.html in the run folder) is written either way.",
            self.server, self.port, _short(exc), self.retry_seconds, self.port, self.server, self.port, self.env)


def _short(exc):
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 160 else text[:157] + "..."

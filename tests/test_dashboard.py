"""The dashboard never blocks or raises because of visdom, warns once per outage, and writes the HTML page."""
import json
import re
import logging
import socket
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from util.dashboard import Dashboard
from util.dashboard.visdom_sink import VisdomWorker

pytestmark = pytest.mark.timeout(60)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def visuals(seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(real_A=torch.rand(1, 3, size, size, generator=g) * 2 - 1,
                       fake_B=torch.rand(1, 3, size, size, generator=g) * 2 - 1,
                       real_B=torch.rand(1, 1, size, size, generator=g) * 2 - 1)


def wait_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def dashboard_warnings(caplog):
    return [r for r in caplog.records if r.name.startswith("util.dashboard") and r.levelno == logging.WARNING]


class FakeVisdomServer:
    """Answers like a visdom server (enough for the client) and records what it receives; can stop and restart."""

    def __init__(self, port):
        self.port = port
        self.posts = []  # (path, parsed JSON body)
        self.httpd = None

    def start(self):
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)) or 0)
                try:
                    posts.append((self.path, json.loads(body or b"{}")))
                except ValueError:
                    posts.append((self.path, None))
                reply = b"false" if self.path.endswith("win_exists") else b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def events_for(self, window):
        return [body for path, body in self.posts if path.endswith("/events") and body and body.get("win") == window]


def test_no_server_never_blocks_warns_once_and_still_writes_html(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    port = free_port()  # nothing listens there
    dash = Dashboard(tmp_path / "run", "offline_run", display_id=1, server="http://127.0.0.1", port=port,
                     retry_seconds=0.02)
    attempts = []
    factory = dash.visdom.worker.client_factory
    dash.visdom.worker.client_factory = lambda **kw: (attempts.append(1), factory(**kw))[1]
    for i in range(40):
        dash.display_current_results(visuals(i), epoch=1 + i // 20, step=i, save_result=i % 10 == 0)
        dash.plot_current_losses(1 + i // 20, (i % 20) / 20, {"G_GAN": 1.0 / (i + 1), "D_real": 0.5})
        if i % 20 == 19:
            dash.plot_convergence(1 + i // 20, 1.3 + 0.01 * i)
    # The worker retries now and then, while the loop above never waited for it.
    assert wait_until(lambda: len(attempts) >= 3), "the visdom thread should keep retrying"
    assert dash.flush(timeout=30)
    dash.close()
    warnings = dashboard_warnings(caplog)
    assert len(warnings) == 1, [w.getMessage() for w in warnings]
    message = warnings[0].getMessage()
    assert f"python -m visdom.server -port {port}" in message
    assert "scripts.tools.install_visdom_assets" in message and "--display_id 0" in message
    assert not dash.visdom.worker.connected and dash.visdom.worker.sent == 0
    page = (tmp_path / "run" / "web" / "index.html").read_text()
    for step in (0, 10, 20, 30):
        for label in ("real_A", "fake_B", "real_B"):
            name = f"epoch{1 + step // 20:03d}_step{step:09d}_{label}.png"
            assert (tmp_path / "run" / "web" / "images" / name).stat().st_size > 0
            assert f"images/{name}" in page
    assert "losses.png?v=" in page and "convergence.png?v=" in page


def test_display_off_and_disabled_rank(tmp_path):
    dash = Dashboard(tmp_path / "a", "no_visdom", display_id=0)
    assert dash.visdom is None
    dash.display_current_results(visuals(), epoch=1, step=4, save_result=True)
    dash.close()
    assert "epoch001_step000000004_fake_B.png" in (tmp_path / "a" / "web" / "index.html").read_text()

    quiet = Dashboard(tmp_path / "b", "other_rank", display_id=1, enabled=False)
    assert quiet.visdom is None and quiet.html is None and quiet.sinks == []
    quiet.display_current_results(visuals(), epoch=1, step=4, save_result=True)
    quiet.plot_current_losses(1, 0.5, {"G_GAN": 1.0})
    quiet.plot_convergence(1, 1.2)
    quiet.close()
    assert not (tmp_path / "b").exists()


def test_bad_visual_is_reported_to_the_caller(tmp_path):
    dash = Dashboard(tmp_path, "bad", display_id=0)
    with pytest.raises(ValueError, match="channels"):
        dash.display_current_results({"features": torch.zeros(1, 5, 8, 8)}, epoch=1, step=1, save_result=True)
    dash.close()


def test_fake_server_going_away_and_coming_back(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    port = free_port()
    server = FakeVisdomServer(port).start()
    dash = Dashboard(tmp_path, "flaky", display_id=3, server="http://127.0.0.1", port=port, retry_seconds=0.05,
                     use_html=False)
    dash.plot_current_losses(1, 1 / 30, {"G_GAN": 1.0})
    dash.display_current_results(visuals(), epoch=1, step=1, save_result=False)
    assert wait_until(lambda: dash.visdom.worker.sent >= 2)
    assert any(path.endswith("/env/flaky") for path, _ in server.posts)
    image_event = server.events_for("images_3")[-1]
    assert image_event["data"][0]["content"]["src"].startswith("data:image/png;base64,")
    assert image_event["opts"]["title"] == "flaky: images (epoch 1, 1 image seen)"
    assert image_event["eid"] == "flaky"

    server.stop()
    for k in range(2, 30):
        dash.plot_current_losses(1, k / 30, {"G_GAN": 1.0 / k})
    assert wait_until(lambda: len(dashboard_warnings(caplog)) == 1)
    time.sleep(0.3)  # several retry periods: still one warning
    assert len(dashboard_warnings(caplog)) == 1

    server = FakeVisdomServer(port).start()
    assert wait_until(lambda: len(server.events_for("losses_3")) >= 1)
    dash.close()
    # Stale updates were dropped: what arrives carries the whole, newest history.
    last = server.events_for("losses_3")[-1]
    assert len(last["data"][0]["x"]) == 29
    assert len(server.events_for("losses_3")) <= 2
    assert len(dashboard_warnings(caplog)) == 1
    server.stop()


class FakeClient:
    def __init__(self, log, up):
        self.log, self.up = log, up

    def draw(self, window, value):
        if not self.up():
            raise ConnectionError("gone")
        self.log.append((window, value))


def test_worker_keeps_only_the_newest_job_per_window(caplog):
    delivered, state = [], {"up": False}
    worker = VisdomWorker(retry_seconds=0.02,
                          client_factory=lambda **kw: FakeClient(delivered, lambda: state["up"]) if state["up"]
                          else (_ for _ in ()).throw(ConnectionRefusedError("refused")))
    for value in range(50):
        worker.submit("losses", lambda vis, win, v=value: vis.draw(win, v))
        worker.submit("images", lambda vis, win, v=value: vis.draw(win, -v))
    assert wait_until(lambda: len(dashboard_warnings(caplog)) == 1)
    state["up"] = True
    assert wait_until(lambda: len(delivered) == 2)
    worker.close()
    assert sorted(delivered) == [("images", -49), ("losses", 49)]
    assert len(dashboard_warnings(caplog)) == 1


def test_a_failing_plot_does_not_stop_other_windows(caplog):
    delivered = []
    worker = VisdomWorker(client_factory=lambda **kw: FakeClient(delivered, lambda: True))

    def broken(vis, win):
        raise KeyError("bad opts")

    worker.submit("broken", broken)
    worker.submit("fine", lambda vis, win: vis.draw(win, 1))
    assert worker.flush(timeout=10)
    worker.close()
    assert delivered == [("fine", 1)]
    assert any("broken" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_resumed_run_keeps_earlier_steps_and_line_plots_pad_missing(tmp_path):
    first = Dashboard(tmp_path, "resume", display_id=0)
    first.display_current_results(visuals(0), epoch=1, step=8, save_result=True)
    first.close()
    second = Dashboard(tmp_path, "resume", display_id=0)
    second.display_current_results(visuals(1), epoch=2, step=16, save_result=True)
    second.plot_lines("validation", 1, {"L1": 0.5})
    second.plot_lines("validation", 2, {"L1": 0.4, "KID": 3.0})
    assert second.flush(timeout=30)
    steps = [(r["epoch"], r["step"]) for r in second.saved_steps()]
    assert steps == [(2, 16), (1, 8)]
    x, ys = second.history.lines["validation"].arrays()
    assert x.tolist() == [1.0, 2.0] and np.isnan(ys["KID"][0]) and ys["L1"].tolist() == [0.5, 0.4]
    second.close()


def test_points_redone_after_a_resume_replace_the_ones_logged_past_the_checkpoint(tmp_path):
    # loss_log.csv holds epochs 1 and 2, but the run resumes from a checkpoint in the middle of epoch 2
    from util.run.run_logs import CsvLog
    log = CsvLog(str(tmp_path / "loss_log.csv"))
    for epoch, iters in [(1, 4), (1, 8), (2, 4), (2, 8)]:
        log.append(dict(epoch=epoch, iters=iters, total_iters=(epoch - 1) * 8 + iters, G_GAN=float(epoch * 10 + iters)))
    dash = Dashboard(tmp_path, "rewind", display_id=0, images_per_epoch=8)
    x, ys = dash.history.losses.arrays()
    assert x.tolist() == [0.5, 1.0, 1.5, 2.0] and dash.history.losses.steps == [4, 8, 12, 16]
    dash.plot_current_losses(2, 0.5, {"G_GAN": -1.0}, total_iters=12)  # the resumed run redoes step 12
    x, ys = dash.history.losses.arrays()
    assert x.tolist() == [0.5, 1.0, 1.5] and ys["G_GAN"].tolist() == [14.0, 18.0, -1.0]
    dash.close()


def test_the_page_reloads_while_training_runs_and_not_after(tmp_path):
    dash = Dashboard(tmp_path, "live", display_id=0)
    dash.plot_current_losses(1, 0.5, {"G_GAN": 1.0})
    dash.epoch_snapshot(visuals(), 1, 4)
    dash.epoch_snapshot(visuals(), 1, 4)  # the same step again: one snapshot
    assert dash.flush(timeout=30)
    page = (tmp_path / "web" / "index.html").read_text()
    assert '<meta content="30" http-equiv="refresh">' in page and "Training is running" in page
    assert len(dash.saved_steps()) == 1
    dash.close()
    page = (tmp_path / "web" / "index.html").read_text()
    assert 'http-equiv="refresh"' not in page
    # closed without a reason (train.py always gives one): the page says so, and where it was
    assert re.search(r"Training ended at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d without a reason given", page)
    assert "Last view: epoch 1, 4 images seen. This page was written" in page and "no longer reloads" in page

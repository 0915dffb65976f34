"""A run trained in three segments (a run, then two resumes) through train.py in this process: every view
(visdom windows, the HTML page's figures, TensorBoard events) holds the whole history, the page has a picture
of every epoch, and test.py's result folder holds one test's images."""
import csv
import os
import re

import numpy as np
import pytest

from conftest import test_main, train_main
from util.run.convergence import LOG4
from test_dashboard import FakeVisdomServer, free_port

pytestmark = pytest.mark.timeout(600)

NAME = "views"
TINY = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--load_size", "36",
        "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1",
        "--print_freq", "2", "--display_freq", "4", "--save_latest_freq", "1000",
        # far more images than the run sees: only the end of every epoch is snapshotted
        "--update_html_freq", "100000"]


class Segment:
    def __init__(self, stdout, posts, figures):
        self.stdout, self.posts, self.figures = stdout, posts, figures

    def window_events(self, window):
        return [body for path, body in self.posts if path.endswith("/events") and body and body.get("win") == window]


@pytest.fixture(scope="module")
def resumed_run(demo_root, tmp_path_factory):
    """Epoch 1 (visdom on, TensorBoard off), then --continue_train to epoch 2 and to epoch 3 (both with
    --use_tensorboard). Records what each segment sent to visdom and the HTML page's figures it drew."""
    import util.dashboard.html_sink as html_sink
    ck = tmp_path_factory.mktemp("views") / "ck"
    port = free_port()
    server = FakeVisdomServer(port).start()
    drawn = []

    def recording_draw(panels, path=None, **kwargs):
        fig = real_draw(panels, path=path, **kwargs)
        drawn.append((os.path.basename(path), fig))
        return fig

    real_draw = html_sink.draw_panels
    segments = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(html_sink, "draw_panels", recording_draw)
        for epochs, extra in (("1", []), ("2", ["--continue_train", "--use_tensorboard"]),
                              ("3", ["--continue_train", "--use_tensorboard"])):
            server.posts.clear()
            drawn.clear()
            out = train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", NAME, *TINY,
                             "--display_id", "1", "--display_server", "http://127.0.0.1", "--display_port", port,
                             "--n_epochs", epochs, "--n_epochs_decay", "0", *extra)
            segments.append(Segment(out.stdout, list(server.posts), list(drawn)))
    server.stop()
    return ck / NAME, segments


def loss_rows(run):
    return list(csv.DictReader(open(run / "loss_log.csv")))


def test_visdom_windows_after_a_resume_hold_the_epochs_before_it(resumed_run):
    run, segments = resumed_run
    rows = loss_rows(run)
    assert sorted({int(r["epoch"]) for r in rows}) == [1, 2, 3]
    for k, segment in enumerate(segments[1:], start=2):
        losses = segment.window_events("losses_1")
        assert losses, "no losses window sent"
        # Already the first drawing after the resume shows the earlier epochs (read from loss_log.csv) ...
        first_x = losses[0]["data"][0]["x"]
        assert min(first_x) < 1 and len(first_x) == len([r for r in rows if int(r["epoch"]) < k])
        # ... and the last one the whole run: every loss in its own panel, every row of the log a point.
        last = losses[-1]
        assert [t["name"] for t in last["data"]] == ["G_GAN", "G_L1", "D_real", "D_fake"]
        assert {t["xaxis"] for t in last["data"]} == {"x", "x2", "x3", "x4"}  # one panel each
        assert all(t["mode"] == "lines+markers" for t in last["data"])
        expected_x = [int(r["epoch"]) - 1 + int(r["iters"]) / 8 for r in rows if int(r["epoch"]) <= k]
        assert last["data"][0]["x"] == pytest.approx(expected_x)
        assert last["data"][1]["y"] == pytest.approx([float(r["G_L1"]) for r in rows if int(r["epoch"]) <= k],
                                                      rel=1e-4)
        conv = segment.window_events("convergence_1")[-1]
        assert conv["data"][0]["x"] == list(range(1, k + 1))
        assert conv["data"][1]["name"] == "log 4 = 1.386"  # the equilibrium of pix2pix's --gan_mode vanilla
        assert conv["data"][1]["y"] == pytest.approx([LOG4, LOG4])


def test_the_url_of_the_visdom_environment_is_printed_once(resumed_run):
    _, segments = resumed_run
    for segment in segments:
        assert len(re.findall(r"visdom: the live display of this run is at http://127\.0\.0\.1:\d+/env/views\b",
                              segment.stdout)) == 1


def test_html_figures_after_a_resume_hold_the_epochs_before_it(resumed_run):
    run, segments = resumed_run
    rows = loss_rows(run)
    figures = dict(segments[-1].figures)  # the last drawing of each plot
    losses, conv = figures["losses.png"], figures["convergence.png"]
    assert [ax.get_title() for ax in losses.axes] == ["G_GAN", "G_L1", "D_real", "D_fake"]
    x = losses.axes[1].get_lines()[0].get_xdata()
    assert x.tolist() == pytest.approx([int(r["epoch"]) - 1 + int(r["iters"]) / 8 for r in rows])
    assert losses.axes[1].get_lines()[0].get_ydata().tolist() == pytest.approx([float(r["G_L1"]) for r in rows],
                                                                               rel=1e-4)
    curve, equilibrium = conv.axes[0].get_lines()
    assert curve.get_xdata().tolist() == [1, 2, 3]
    assert np.allclose(equilibrium.get_ydata(), LOG4)


def test_page_has_a_picture_of_every_epoch_and_stops_reloading(resumed_run):
    run, _ = resumed_run
    page = (run / "web" / "index.html").read_text()
    headers = re.findall(r"<h3>(epoch \d+, \d+ images seen)</h3>", page)
    assert headers == ["epoch 3, 24 images seen", "epoch 2, 16 images seen", "epoch 1, 8 images seen"]
    for epoch, step in ((1, 8), (2, 16), (3, 24)):
        for label in ("real_A", "fake_B", "real_B"):
            name = f"epoch{epoch:03d}_step{step:09d}_{label}.png"
            assert (run / "web" / "images" / name).stat().st_size > 0 and f"images/{name}" in page
    assert 'http-equiv="refresh"' not in page and "no longer reloads" in page
    # the plots are shown at the size they were drawn, which is large enough for their labels
    assert re.search(r'class="natural" src="images/losses\.png\?v=\d+"', page)
    from PIL import Image
    assert Image.open(run / "web" / "images" / "losses.png").size[0] >= 900


def test_tensorboard_events_hold_every_scalar_of_every_segment_once(resumed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run, _ = resumed_run
    rows = loss_rows(run)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for loss in ("G_GAN", "G_L1", "D_real", "D_fake"):
        points = events.Scalars(f"loss/{loss}")
        # segment 1 ran without TensorBoard: its points were written from loss_log.csv by segment 2, and
        # segment 3 wrote only its own
        assert [p.step for p in points] == [int(r["total_iters"]) for r in rows]
        assert [p.value for p in points] == pytest.approx([float(r[loss]) for r in rows], rel=1e-4)
    conv = list(csv.DictReader(open(run / "convergence.csv")))
    assert [p.step for p in events.Scalars("convergence/neg_L_GAN")] == [1, 2, 3]
    assert [p.value for p in events.Scalars("convergence/neg_L_GAN")] == pytest.approx(
        [float(r["neg_L_GAN"]) for r in conv], rel=1e-4)
    # the equilibrium is a run of its own under the same tag: its own colour and name in TensorBoard's run list
    assert "convergence/equilibrium" not in events.Tags()["scalars"]
    line = EventAccumulator(str(run / "tensorboard" / "equilibrium_log4"), size_guidance={"scalars": 0})
    line.Reload()
    assert line.Tags()["scalars"] == ["convergence/neg_L_GAN"]
    assert [p.step for p in line.Scalars("convergence/neg_L_GAN")] == [1, 2, 3]
    assert [p.value for p in line.Scalars("convergence/neg_L_GAN")] == pytest.approx([LOG4] * 3)
    assert [p.step for p in events.Images("visuals")] == [16, 24]  # the snapshots of segments 2 and 3


def test_a_test_rerun_with_fewer_images_leaves_only_its_images(resumed_run, demo_root, tmp_path):
    run, _ = resumed_run
    args = ["--dataroot", demo_root, "--checkpoints_dir", run.parent, "--name", NAME, "--results_dir", tmp_path]
    test_main(*args)
    images = tmp_path / NAME / "test_latest" / "images"
    assert len(os.listdir(images)) == 4 * 3
    out = test_main(*args, "--num_test", "1")
    files = sorted(os.listdir(images))
    assert len(files) == 3 and all(f.startswith(files[0].split("_")[0] + "_") for f in files)
    assert "replaced the 12 files of the earlier result" in out.stdout
    page = (tmp_path / NAME / "test_latest" / "index.html").read_text()
    row = re.findall(r'src="images/([^"]+)"', page)
    # input, output, target
    assert [name.split("_", 1)[1] for name in row] == ["real_A.png", "fake_B.png", "real_B.png"]
    assert not [f for f in os.listdir(tmp_path / NAME / "test_latest") if f.endswith(".tmp")]  # no staging left

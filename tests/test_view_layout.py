"""How the views lay out what they show: visdom's image grid has a column per visual (ATME's five in one row,
input to target), the loggers' grids too; epoch axes tick at whole epochs and a single point does not get
negative epochs; a run shorter than --print_freq still has its loss points, in W&B as everywhere."""
import csv
import sys

import numpy as np
import pytest

from conftest import train_main
from test_loggers import FakeWandb, logged_x
from util.dashboard.history import RunHistory
from util.dashboard.visdom_sink import VisdomSink, plotly_figure
from util.views.figures import Panel, draw_panels, epoch_range
from util.views.image_utils import make_grid

ATME_VISUALS = ["real_A", "noisy_A", "Disc_B", "fake_B", "real_B"]


class Jobs:
    """A visdom worker that keeps the submitted jobs."""

    def __init__(self):
        self.jobs = {}

    def submit(self, window, draw):
        self.jobs[window] = draw


class Vis:
    def image(self, array, win=None, opts=None):
        self.shape = array.shape


def grid_shape(ncols):
    jobs = Jobs()
    sink = VisdomSink("run", ncols=ncols, winsize=8, worker=jobs)
    images = [np.full((8, 8, 3), 40 * k, dtype=np.uint8) for k in range(len(ATME_VISUALS))]
    sink.images(RunHistory(), images, ATME_VISUALS, 1, 8, False)
    vis = Vis()
    jobs.jobs["images_1"](vis, "images_1")
    return vis.shape[1:], {n: make_grid(images, labels=ATME_VISUALS, ncols=n, min_tile=8).shape[:2] for n in (2, 4, 5)}


def test_the_visdom_grid_has_a_column_per_visual_by_default():
    shape, grids = grid_shape(0)
    assert shape == grids[5] and grids[4][0] > shape[0]  # one row: the target did not wrap as with 4 columns
    wrapped, _ = grid_shape(2)  # --display_ncols 2 still wraps, as asked
    assert wrapped == grids[2]


def test_the_loggers_grids_have_a_column_per_visual(tmp_path, monkeypatch):
    from util.dashboard import Dashboard
    import torch
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    dash = Dashboard(tmp_path, "wb", display_id=0, use_html=False, use_wandb=True, wandb_project="p",
                     images_per_epoch=8)
    dash.epoch_snapshot({n: torch.zeros(1, 3, 8, 8) for n in ATME_VISUALS}, 1, 8)
    dash.close()
    (image,) = [row["visuals"] for row in fake.rows if "visuals" in row]
    tiles = [np.zeros((8, 8, 3), dtype=np.uint8)] * 5
    assert image[1][:2] == make_grid(tiles, labels=ATME_VISUALS, ncols=5).shape[:2]
    assert make_grid(tiles, labels=ATME_VISUALS, ncols=4).shape[0] > image[1][0]


def one_point_panel():
    return Panel("G_GAN", "G_GAN", {"run": (np.array([0.25]), np.array([0.7]))}, [])


def test_a_single_loss_point_shows_no_negative_epochs():
    low, high = epoch_range(one_point_panel())
    assert low == 0 and high >= 1
    _, layout = plotly_figure([one_point_panel()])
    assert layout["xaxis"]["range"][0] >= 0 and layout["xaxis"]["dtick"] == 1
    fig = draw_panels([one_point_panel()])
    ax = fig.axes[0]
    assert ax.get_xlim()[0] >= 0
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() and t >= 0 for t in ticks), ticks


def test_epoch_axes_tick_at_whole_epochs():
    conv = Panel("-L_GAN", "-L_GAN", {"run": (np.array([1.0, 2.0, 3.0]), np.array([1.2, 1.0, 0.9]))},
                 [(1.386, "log 4 = 1.386")])
    fig = draw_panels([conv])
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks == [1.0, 2.0, 3.0]
    data, layout = plotly_figure([conv])
    assert layout["xaxis"]["dtick"] == 1 and layout["xaxis"]["tick0"] == 0
    equilibrium = [d for d in data if d["name"] == "log 4 = 1.386"][0]
    assert equilibrium["x"] == layout["xaxis"]["range"]  # the line crosses the whole panel
    many = Panel("x", "x", {"run": (np.arange(1.0, 201.0), np.zeros(200))}, [])
    assert plotly_figure([many])[1]["xaxis"]["dtick"] == 20


def test_a_run_shorter_than_print_freq_still_logs_losses_to_every_view(tmp_path, demo_root, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    ck = tmp_path / "ck"
    # 8 images an epoch, 16 in all, against --print_freq 100: one loss row at the end of each epoch
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "short", "--model", "pix2pix", "--netG",
               "unet", "--ngf", "8", "--ndf", "8", "--load_size", "36", "--crop_size", "32", "--batch_size", "4",
               "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1", "--display_id", "0", "--n_epochs", "2",
               "--n_epochs_decay", "0", "--use_wandb", "--wandb_project_name", "short")
    rows = list(csv.DictReader(open(ck / "short" / "loss_log.csv")))
    assert [(int(r["epoch"]), int(r["total_iters"])) for r in rows] == [(1, 8), (2, 16)]
    assert logged_x(fake.rows, "loss/G_GAN") == pytest.approx([1.0, 2.0])

"""The study's figures draw what the numbers say: a smoothing that keeps a straight line straight (no bend at
the first epochs, endpoints on the trend of the raw values), a band only when there is more than one seed, and
whole epochs on the x axis."""
import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from scripts.experiments.study.report import band_note, convergence_plot, smooth, validation_plot
from util.run import convergence


def test_a_straight_line_is_not_bent_at_the_start_or_the_end():
    epochs = np.arange(1, 41, dtype=float)
    line = 2.0 - 0.02 * epochs
    for window in (2, 3, 5, 8):
        np.testing.assert_allclose(smooth(line, window, epochs), line, atol=1e-12)
    # Uneven epochs (a run validated every other epoch) still give the line itself.
    sparse = np.array([1.0, 2.0, 4.0, 6.0, 7.0, 10.0])
    np.testing.assert_allclose(smooth(3 * sparse + 1, 3, sparse), 3 * sparse + 1, atol=1e-12)


def test_the_endpoints_follow_the_trend_of_the_last_raw_values():
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 31, dtype=float)
    values = 1.3 - 0.02 * epochs + rng.normal(0, 0.01, epochs.size)
    smoothed = smooth(values, 5, epochs)
    for index, tail in ((-1, slice(-5, None)), (0, slice(0, 5))):
        slope, intercept = np.polyfit(epochs[tail], values[tail], 1)
        assert smoothed[index] == pytest.approx(slope * epochs[index] + intercept, abs=1e-12)
    # A trailing mean would sit (window - 1) / 2 epochs of slope behind at the end: 0.04 here, four times the noise.
    assert abs(smoothed[-1] - (1.3 - 0.02 * 30)) < 0.02


def test_smoothing_short_series_and_window_one():
    assert smooth([], 5).size == 0
    assert smooth([0.7], 5).tolist() == [0.7]
    assert smooth([1.0, 5.0, 2.0], 1).tolist() == [1.0, 5.0, 2.0]
    # Fewer epochs than the window: the least-squares line through all of them.
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([1.0, 3.0, 2.0])
    slope, intercept = np.polyfit(x, y, 1)
    np.testing.assert_allclose(smooth(y, 5, x), slope * x + intercept, atol=1e-12)


def curves(seeds, epochs=3, offset=0.0):
    e = np.arange(1, epochs + 1, dtype=float)
    return [(e, 1.0 - 0.05 * e + offset + 0.01 * s) for s in range(seeds)]


def bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_one_seed_draws_no_band_and_no_title_promises_one(tmp_path):
    q = convergence.quantity("vanilla")
    fig = convergence_plot(tmp_path / "c.png", {"atme (n=1)": curves(1), "pix2pix (n=1)": curves(1, offset=0.1)},
                           q, 5, [0])
    ax = fig.axes[0]
    assert bands(ax) == []
    title = ax.get_title()
    assert "band" not in title.replace("no band", "") and "seed 0" in title and "seeds" not in title
    assert (tmp_path / "c.png").stat().st_size > 0


def test_several_seeds_draw_one_band_per_entry_and_say_so(tmp_path):
    q = convergence.quantity("vanilla")
    fig = convergence_plot(tmp_path / "c.png", {"atme (n=3)": curves(3), "pix2pix (n=3)": curves(3, offset=0.1)},
                           q, 5, [0, 1, 2])
    ax = fig.axes[0]
    assert len(bands(ax)) == 2 and "band ± 1 std over seeds" in ax.get_title()
    assert "mean over seeds 0, 1, 2" in ax.get_title()
    assert band_note({"a": curves(2), "b": curves(1)}) == "band ± 1 std over seeds (entries with n > 1)"


def test_the_epoch_axis_ticks_at_whole_epochs(tmp_path):
    q = convergence.quantity("vanilla")
    fig = convergence_plot(tmp_path / "c.png", {"atme (n=2)": curves(2, epochs=3)}, q, 5, [0, 1])
    val = validation_plot(tmp_path / "v.png", {"atme (n=2)": curves(2, epochs=3)},
                          {"atme (n=2)": curves(2, epochs=3)}, 5)
    for ax in fig.axes + val.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_dots_show_the_raw_mean_behind_the_smoothed_line(tmp_path):
    q = convergence.quantity("vanilla")
    e = np.arange(1.0, 8.0)
    bent = [(e, np.where(e < 4, 1.0, 0.5)), (e, np.where(e < 4, 1.2, 0.7))]
    fig = convergence_plot(tmp_path / "c.png", {"atme (n=2)": bent}, q, 5, [0, 1])
    lines = [l for l in fig.axes[0].lines if l.get_label() == "atme (n=2)" or l.get_linestyle() == "None"]
    dots = [l for l in lines if l.get_linestyle() == "None"]
    assert len(dots) == 1
    np.testing.assert_allclose(dots[0].get_ydata(), np.where(e < 4, 1.1, 0.6))


def test_a_study_shorter_than_the_window_draws_one_fit_and_says_so(tmp_path):
    q = convergence.quantity("vanilla")

    def bent(epochs):  # two seeds of a curve that is not a line
        e = np.arange(1.0, epochs + 1)
        return [(e, np.cos(e) + 0.1 * s) for s in range(2)]

    def drawn(fig):
        return next(line for line in fig.axes[0].lines if line.get_label() == "atme (n=2)")

    short = convergence_plot(tmp_path / "c.png", {"atme (n=2)": bent(3)}, q, 5, [0, 1])
    e, mean = np.arange(1.0, 4.0), np.cos(np.arange(1.0, 4.0)) + 0.05
    slope, intercept = np.polyfit(e, mean, 1)
    np.testing.assert_allclose(drawn(short).get_ydata(), slope * e + intercept, atol=1e-12)  # one least-squares line
    title = " ".join(short.axes[0].get_title().split())  # as one line, however it is wrapped
    assert "all 3 epochs" in title and "--smooth 5" in title  # the title says why the line is straight
    long = convergence_plot(tmp_path / "c.png", {"atme (n=2)": bent(8)}, q, 5, [0, 1])
    y = np.asarray(drawn(long).get_ydata())
    assert np.abs(np.diff(y, 2)).max() > 0.05  # a local fit follows the bends
    assert "5 epochs" in long.axes[0].get_title() and "all 8" not in long.axes[0].get_title()


def test_titles_of_a_short_study_fit_and_the_validation_panels_do_not_collide(tmp_path):
    q = convergence.quantity("vanilla")
    groups = {"atme (n=2)": curves(2), "pix2pix (n=2)": curves(2, offset=0.1)}  # 3 epochs, fewer than --smooth 5
    for fig in (convergence_plot(tmp_path / "c.png", groups, q, 5, [0, 1]),
                validation_plot(tmp_path / "v.png", groups, groups, 5)):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        width, height = fig.canvas.get_width_height()
        boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes]
        for box in boxes:
            assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height  # inside the figure, not cut off
        for ax, box in zip(fig.axes, boxes):
            assert box.y0 >= ax.get_window_extent(renderer).y1 - 1  # above its panel
        if len(boxes) == 2:
            assert boxes[0].x1 < boxes[1].x0  # the two panel titles apart

"""The layout of a run's curves, and PNG figures of it.

A curve figure is a list of `Panel`s, each with its own y axis, x in epochs: one panel per loss (G_L1 near 80
and D_fake near 0.3 never share an axis), one for the convergence quantity of the run's `--gan_mode` with its
equilibrium line (util.run.convergence), one per validation score. The dashboard's visdom windows, its HTML page
and scripts/analysis/plot_logs.py all draw these same panels. Figures are drawn with matplotlib's object API
on the Agg canvas (no pyplot state, so they are safe beside training); nothing here talks to a server.
"""
from collections import OrderedDict, namedtuple

import numpy as np

from util.run import convergence
from util.run.atomic import atomic_write

# lines: {label: (x, y)}; hlines: [(value, label)] drawn across the panel (an equilibrium).
Panel = namedtuple("Panel", "title ylabel lines hlines")

PANEL_WIDTH, PANEL_HEIGHT, DPI = 4.6, 3.2, 100  # inches: about 460 x 320 px a panel, labels at 9-10 pt


def metric_panels(runs):
    """One panel per metric name, one line per run: `runs` is {label: (x, {metric: values})}."""
    names = list(OrderedDict.fromkeys(n for _, ys in runs.values() for n in ys))
    panels = []
    for name in names:
        lines = OrderedDict((label, (np.asarray(x, dtype=float), np.asarray(ys[name], dtype=float)))
                            for label, (x, ys) in runs.items() if name in ys)
        panels.append(Panel(name, name, lines, []))
    return panels



def convergence_panel(curves, gan_modes):
    """The per-epoch convergence quantity of every run in `curves` ({label: (epochs, values)}), with the
    equilibrium line of each distinct mode in `gan_modes` ({label: gan_mode}, or one mode for all)."""
    if isinstance(gan_modes, str):
        gan_modes = {label: gan_modes for label in curves}
    quantities = [convergence.quantity(gan_modes[label]) for label in curves]
    hlines = list(OrderedDict.fromkeys((q.equilibrium, q.equilibrium_label) for q in quantities
                                       if q.equilibrium is not None))
    labels = list(OrderedDict.fromkeys(q.label for q in quantities))
    lines = OrderedDict((label, (np.asarray(e, dtype=float), np.asarray(v, dtype=float)))
                        for label, (e, v) in curves.items())
    return Panel(" | ".join(labels), labels[0].split(" = ")[0] if labels else "", lines, hlines)


def epoch_range(panel):
    """(low, high) x limits of a panel in epochs: its points with a small margin, at least one epoch wide (a
    single point does not get an axis of hundredths), never below 0 when no point is."""
    xs = [np.asarray(x, dtype=float) for x, _ in panel.lines.values()]
    xs = np.concatenate([x[np.isfinite(x)] for x in xs]) if xs else np.array([])
    if xs.size == 0:
        return 0.0, 1.0
    low, high = float(xs.min()), float(xs.max())
    margin = max(0.04 * (high - low), (1.0 - (high - low)) / 2)
    low, high = low - margin, high + margin
    if xs.min() >= 0 and low < 0:
        low, high = 0.0, high - low
    return low, high


def epoch_tick_step(low, high, most=12):
    """A whole-epoch tick spacing (1, 2, 5, 10, 20, ...) giving at most `most` ticks over [low, high]."""
    step = 1
    while (high - low) / step > most:
        step *= 2.5 if str(step).startswith("2") else 2
        step = int(step)
    return step


def new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path):
    atomic_write(path, lambda handle: fig.savefig(handle, format="png"))


def draw_panels(panels, path=None, title=None, ncols=None, xlabel="epoch"):
    """A figure with one axis per panel, `ncols` a row (default: `panel_columns`, as in visdom); lines carry
    markers so a single point shows; the x axis (epochs) ticks at whole epochs and starts at 0 or later.

    Writes a PNG when `path` is given (atomically) and returns the matplotlib Figure.
    """
    if not panels:
        raise ValueError("draw_panels got no panels to draw")
    ncols = max(1, min(ncols or panel_columns(len(panels)), len(panels)))
    nrows = -(-len(panels) // ncols)
    head = 0.45 if title else 0.0
    height = PANEL_HEIGHT * nrows + head
    fig = new_figure(PANEL_WIDTH * ncols, height)
    from matplotlib.ticker import MaxNLocator
    for k, panel in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.set_xlim(*epoch_range(panel))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for label, (x, y) in panel.lines.items():
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.3, label=str(label))
        for value, label in panel.hlines:
            ax.axhline(value, color="black", linestyle="--", linewidth=1, label=label)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        if panel.ylabel and panel.ylabel != panel.title:
            ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        if len(panel.lines) > 1 or panel.hlines:
            ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    # tight_layout costs about as much as the drawing itself here; fixed margins do.
    fig.subplots_adjust(left=0.1 / ncols + 0.03, right=0.98, bottom=0.55 / height, top=1 - (0.4 + head) / height,
                        hspace=0.45, wspace=0.28)
    if path is not None:
        save_figure(fig, path)
    return fig


def loss_figure(runs, path=None, title="losses"):
    """One panel per loss name, one line per run: `runs` is {label: (x, {loss_name: values})}."""
    panels = metric_panels(runs)
    if not panels:
        raise ValueError("loss_figure got no loss series to draw")
    return draw_panels(panels, path=path, title=title)


def convergence_figure(curves, path=None, title=None, gan_modes="vanilla"):
    """The convergence quantity per epoch, one line per run of `curves` ({label: (epochs, values)}), with the
    equilibrium line of the runs' `gan_modes` (util.run.convergence; none for wgangp)."""
    return draw_panels([convergence_panel(curves, gan_modes)], path=path, title=title, ncols=1)


def panel_columns(count):
    """Panels a row: all of them up to three, two for four (a square), else three."""
    return count if count <= 3 else (2 if count == 4 else 3)

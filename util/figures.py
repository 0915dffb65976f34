"""PNG figures of a run's curves, drawn with matplotlib's object API on the Agg canvas (no pyplot state, so
they are safe beside training): the -L_GAN convergence plot and one panel per loss. Used by the dashboard's
HTML page and by scripts/analysis/plot_logs.py."""
from collections import OrderedDict

import numpy as np

from util.atomic import atomic_write
from util.convergence import LOG4


def _new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path):
    atomic_write(path, lambda handle: fig.savefig(handle, format="png"))


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

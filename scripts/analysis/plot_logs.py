#!/usr/bin/env python
"""Plot the convergence and loss curves of one or several runs from their CSV logs.

    python -m scripts.analysis.plot_logs checkpoints/facades_atme checkpoints/facades_pix2pix --out fig.png

`fig.png` gets -L_GAN per epoch of every run (from `convergence.csv`) against log 4, as in Fig. 3 of
the ATME paper; `fig_losses.png` (or --loss_out) gets one panel per loss from `loss_log.csv`, with x the
fractional epoch `epoch - 1 + iters / images_per_epoch`.
"""
import argparse
import csv
import logging
import math
import os
import sys
from collections import OrderedDict

import numpy as np


from util.figures import convergence_figure, loss_figure

log = logging.getLogger("plot_logs")

# Columns of loss_log.csv that are bookkeeping, not losses.
NON_LOSS_COLUMNS = {"epoch", "iters", "total_iters", "time_per_image", "data_time", "epoch_frac",
                    "fractional_epoch", "lr", "time"}


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_convergence(run_dir):
    """(epochs, -L_GAN) from `<run_dir>/convergence.csv`; the last row wins for a repeated epoch."""
    path = os.path.join(run_dir, "convergence.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: convergence.csv is written once per epoch by runs of "
                                "models that report D_real/D_fake (pix2pix, ATME, SEGAN)")
    by_epoch = OrderedDict()
    for row in read_csv(path):
        if "neg_L_GAN" not in row:
            raise ValueError(f"{path} has no neg_L_GAN column (columns: {', '.join(row)})")
        by_epoch[int(float(row["epoch"]))] = _float(row["neg_L_GAN"])
    epochs = sorted(by_epoch)
    return np.array(epochs, dtype=float), np.array([by_epoch[e] for e in epochs])


def fractional_epochs(rows):
    """x of each loss_log.csv row: a provided fractional-epoch column, else epoch - 1 + iters / per-epoch.

    Images per epoch are not logged; the largest `iters` reached in a finished epoch (one followed by
    another) is the best estimate, since the last print of an epoch comes within print_freq of its end.
    """
    for column in ("epoch_frac", "fractional_epoch"):
        if rows and column in rows[0]:
            return np.array([_float(r[column]) for r in rows])
    epochs = np.array([_float(r["epoch"]) for r in rows])
    iters = np.array([_float(r["iters"]) for r in rows])
    finished = epochs < np.nanmax(epochs)
    per_epoch = np.nanmax(iters[finished]) if finished.any() else np.nanmax(iters)
    return epochs - 1 + iters / max(per_epoch, 1.0)


def read_losses(run_dir):
    """(x, {loss name: values}) from `<run_dir>/loss_log.csv`."""
    path = os.path.join(run_dir, "loss_log.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; is {run_dir} a run folder (checkpoints/<name>)?")
    rows = read_csv(path)
    if not rows:
        raise ValueError(f"{path} has no rows yet")
    missing = {"epoch", "iters"} - set(rows[0])
    if missing and not {"epoch_frac", "fractional_epoch"} & set(rows[0]):
        raise ValueError(f"{path} lacks the column(s) {sorted(missing)} needed for the x axis")
    names = [c for c in rows[0] if c not in NON_LOSS_COLUMNS]
    return fractional_epochs(rows), OrderedDict((n, np.array([_float(r.get(n)) for r in rows])) for n in names)


def _labels(run_dirs):
    """Run names (folder names); the full path where two runs share a name."""
    names = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    return [os.path.normpath(d) if names.count(n) > 1 else n for d, n in zip(run_dirs, names)]


def plot_runs(run_dirs, out, loss_out=None):
    """Draw both figures; returns (convergence Figure or None, loss Figure or None)."""
    for run_dir in run_dirs:
        if not os.path.isdir(run_dir):
            raise FileNotFoundError(f"run folder {run_dir} does not exist")
    labels = _labels(run_dirs)
    convergence, losses = OrderedDict(), OrderedDict()
    for label, run_dir in zip(labels, run_dirs):
        try:
            convergence[label] = read_convergence(run_dir)
        except (FileNotFoundError, ValueError) as exc:
            log.warning("skipping the convergence curve of %s: %s", label, exc)
        try:
            losses[label] = read_losses(run_dir)
        except (FileNotFoundError, ValueError) as exc:
            log.warning("skipping the losses of %s: %s", label, exc)
    if not convergence and not losses:
        raise RuntimeError(f"none of {', '.join(run_dirs)} has a convergence.csv or loss_log.csv to plot")
    loss_out = loss_out or "{0}_losses{1}".format(*os.path.splitext(out))
    conv_fig = loss_fig = None
    if convergence:
        conv_fig = convergence_figure(convergence, path=out, title="-L_GAN per epoch (log 4 at equilibrium)")
        log.info("wrote %s", out)
    if losses:
        loss_fig = loss_figure(losses, path=loss_out, title="training losses")
        log.info("wrote %s", loss_out)
    return conv_fig, loss_fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="run folders (checkpoints/<name>)")
    parser.add_argument("--out", default="convergence.png", help="convergence figure (PNG)")
    parser.add_argument("--loss_out", default=None, help="loss figure (default: <out>_losses.png)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        plot_runs(args.run_dirs, args.out, args.loss_out)
    except (FileNotFoundError, RuntimeError) as exc:
        log.error("error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

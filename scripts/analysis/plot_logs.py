#!/usr/bin/env python
"""Plot the convergence and loss curves of one or several runs from their CSV logs.

    python -m scripts.analysis.plot_logs checkpoints/facades_atme checkpoints/facades_pix2pix --out fig.png

`fig.png` gets the convergence quantity per epoch of every run (from `convergence.csv`: -L_GAN for vanilla and
least-squares runs, the critic's Wasserstein estimate for wgangp) with the equilibrium line of each run's
--gan_mode (log 4 for vanilla, as in Fig. 3 of the ATME paper); `fig_losses.png` (or --loss_out) gets one panel
per loss from `loss_log.csv`, x in epochs. The panels are the ones the dashboard shows (util/views/figures.py).
"""
import argparse
import logging
import os
import sys
from collections import OrderedDict

if not __package__:  # run as `python scripts/analysis/plot_logs.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from util.views.figures import convergence_figure, loss_figure
from util.run.run_logs import read_convergence, read_losses

log = logging.getLogger("plot_logs")


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
    convergence, modes, losses = OrderedDict(), OrderedDict(), OrderedDict()
    for label, run_dir in zip(labels, run_dirs):
        try:
            epochs, values, modes[label] = read_convergence(run_dir)
            convergence[label] = (epochs, values)
        except (FileNotFoundError, ValueError) as exc:
            log.warning("skipping the convergence curve of %s: %s", label, exc)
        try:
            x, ys, _ = read_losses(run_dir)
            losses[label] = (x, ys)
        except (FileNotFoundError, ValueError) as exc:
            log.warning("skipping the losses of %s: %s", label, exc)
    if not convergence and not losses:
        raise RuntimeError(f"none of {', '.join(run_dirs)} has a convergence.csv or loss_log.csv to plot")
    loss_out = loss_out or "{0}_losses{1}".format(*os.path.splitext(out))
    conv_fig = loss_fig = None
    if convergence:
        conv_fig = convergence_figure(convergence, path=out, title="convergence per epoch", gan_modes=modes)
        log.info("wrote %s", out)
    if losses:
        loss_fig = loss_figure(losses, path=loss_out, title="training losses")
        log.info("wrote %s", loss_out)
    return conv_fig, loss_fig


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
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

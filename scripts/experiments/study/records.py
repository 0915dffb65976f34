"""What a run folder's CSV files say, read the one way the study, its tests and the demo read them.

    python -m scripts.experiments.run_records checkpoints/demo_atme     # the last epoch's convergence line

`convergence.csv` (per epoch: D_real, D_fake and the quantity of the run's --gan_mode, util.run.convergence) and
`val_log.csv` (per epoch: L1 and PSNR on the val split) are written by train.py; a repeated epoch (a resume that
redid it) counts with its last row.
"""
import argparse
import csv
import io
import math
import os
from collections import OrderedDict

import numpy as np

from options.base_options import load_stored_options
from util.run import convergence
from util.run.atomic import atomic_write_text
from util.run.run_logs import CsvLog


def read_rows(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {what}")
    return CsvLog(path).rows()


def write_rows(path, rows, fields=None):
    """`rows` (dicts) as a CSV file, written atomically; floats with 6 significant digits, as train.py logs them."""
    fields = list(fields or OrderedDict((k, None) for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, buffer.getvalue())
    return path


def is_current(path, epoch, **settings):
    """Whether `path` holds an evaluation of `epoch` made with `settings` (all compared as strings)."""
    if not os.path.isfile(path):
        return False
    rows = read_rows(path, "an evaluation file")
    return bool(rows) and all(row.get("epoch") == str(epoch) and
                              all(row.get(k) == str(v) for k, v in settings.items()) for row in rows)


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def by_epoch(rows, column, path):
    """(epochs, values) of `column`, sorted by epoch, the last row winning for a repeated epoch."""
    values = OrderedDict()
    for row in rows:
        if column not in row:
            raise ValueError(f"{path} has no {column} column (columns: {', '.join(row)})")
        values[int(float(row["epoch"]))] = _float(row[column])
    epochs = sorted(values)
    return np.array(epochs, dtype=float), np.array([values[e] for e in epochs], dtype=float)


def run_gan_mode(run_dir, rows=None):
    """The --gan_mode of a run: from its stored options, else from its convergence.csv columns (older runs)."""
    stored = load_stored_options(run_dir) or {}
    if stored.get("gan_mode"):
        return stored["gan_mode"]
    return convergence.mode_of_columns(list(rows[0]) if rows else [])


def read_convergence(run_dir):
    """(Quantity, epochs, values) of the run's convergence record (util.run.convergence names the quantity)."""
    path = os.path.join(run_dir, "convergence.csv")
    rows = read_rows(path, "train.py writes it once per epoch for models that report D_real/D_fake")
    if not rows:
        raise ValueError(f"{path} has no epochs yet")
    q = convergence.quantity(run_gan_mode(run_dir, rows))
    epochs, values = by_epoch(rows, q.column, path)
    return q, epochs, values


def read_validation(run_dir):
    """{'l1': (epochs, values), 'psnr': (epochs, values)} from the run's val_log.csv."""
    path = os.path.join(run_dir, "val_log.csv")
    rows = read_rows(path, "train.py writes it with --val_freq N (the study passes --val_freq 1)")
    if not rows:
        raise ValueError(f"{path} has no rows yet")
    return {key: by_epoch(rows, key, path) for key in ("l1", "psnr")}


def convergence_plot(run_dir):
    """The dashboard's convergence plot of a run (written unless the run had --no_html)."""
    return os.path.join(run_dir, "web", "images", "convergence.png")


def last_epoch_line(run_dir):
    """One line: the last epoch's convergence quantity, its distance to the equilibrium, and the plot's path."""
    q, epochs, values = read_convergence(run_dir)
    line = f"last epoch ({int(epochs[-1])}): {q.label} = {values[-1]:.4f}"
    if q.equilibrium is not None:
        line += f"; distance to the equilibrium {q.equilibrium_label}: {abs(values[-1] - q.equilibrium):.4f}"
    plot = convergence_plot(run_dir)
    return line + (f"\nconvergence plot: {plot}" if os.path.isfile(plot) else
                   f"\nconvergence plot: none ({plot} is written unless --no_html); the numbers are in "
                   f"{os.path.join(run_dir, 'convergence.csv')}")


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run folder (checkpoints/<name>)")
    args = p.parse_args(argv)
    print(last_epoch_line(args.run_dir))
    return 0


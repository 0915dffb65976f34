"""Console and file logging (rank 0 only), metrics appended as CSV rows, and a run's curves read back from those
rows. The CSV logs are the run's history: the dashboard rebuilds every view from them, and
scripts/analysis/plot_logs.py draws from them. A log file that is a symbolic link is never written through
(util.run.links: the folder may have come from someone else)."""
import csv
import io
import logging
import logging.handlers
import math
import os
import sys
from collections import OrderedDict

import numpy as np

from util.run import convergence, links
from util.run.atomic import atomic_write_text

LOSS_LOG, CONVERGENCE_LOG, VALIDATION_LOG = "loss_log.csv", "convergence.csv", "val_log.csv"
# Columns of loss_log.csv that are bookkeeping, not losses.
NON_LOSS_COLUMNS = {"epoch", "iters", "total_iters", "time_per_image", "data_time", "epoch_frac",
                    "fractional_epoch", "lr", "time"}
# Columns of val_log.csv that are not scores to plot.
NON_SCORE_COLUMNS = {"epoch", "n_images", "time"}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class ProgressBarHandler(logging.StreamHandler):
    """Writes records through tqdm, which lifts any progress bar on the terminal first and redraws it after,
    so a log line never ends up glued to the end of a bar."""

    def emit(self, record):
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # logging must never raise into the caller
            self.handleError(record)

_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt=TIME_FORMAT)


def setup_logging(log_file=None, rank=0, verbose=False):
    """stdout (through the progress bar's writer) plus an optional log file for rank 0; other ranks only log
    warnings. Times carry the date, so a log that spans days reads unambiguously."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = (logging.DEBUG if verbose else logging.INFO) if rank == 0 else logging.WARNING
    root.setLevel(level)
    console = ProgressBarHandler(sys.stdout)
    console.setFormatter(_FORMAT)
    root.addHandler(console)
    if log_file and rank == 0:
        attach_log_file(log_file)
    elif rank == 0:
        # Kept until attach_log_file: the lines logged before the run owns its folder reach the log file too.
        root.addHandler(logging.handlers.MemoryHandler(capacity=10 ** 6, flushLevel=logging.CRITICAL + 1))
    for noisy in ("PIL", "matplotlib", "urllib3", "visdom", "websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# A process that starts the workers (train.py --nproc_per_node / several --gpu_ids) never owns the run folder: it
# hands the lines it logged to the workers in this environment variable, and rank 0 writes them to train.log first.
LAUNCHER_LOG_ENV = "TRAIN_LAUNCHER_LOG"


def kept_lines():
    """The formatted records kept for the log file since setup_logging (not yet written anywhere)."""
    root = logging.getLogger()
    return "\n".join(_FORMAT.format(record) for h in root.handlers
                     if isinstance(h, logging.handlers.MemoryHandler) for record in h.buffer)


class NoFollowFileHandler(logging.FileHandler):
    """A FileHandler that refuses (util.run.links.LinkRefused) a log file that is a symbolic link."""

    def _open(self):
        return links.open_inside(self.baseFilename, os.path.dirname(self.baseFilename), self.mode,
                                 encoding=self.encoding)


def attach_log_file(log_file):
    """Also log to `log_file` (appending), starting with the lines a launching process handed over and the
    records kept since setup_logging."""
    root = logging.getLogger()
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    handler = NoFollowFileHandler(log_file)
    handler.setFormatter(_FORMAT)
    handed = os.environ.pop(LAUNCHER_LOG_ENV, "")
    if handed:
        handler.stream.write(handed + "\n")
        handler.flush()
    for kept in [h for h in root.handlers if isinstance(h, logging.handlers.MemoryHandler)]:
        kept.setTarget(handler)
        kept.flush()
        root.removeHandler(kept)
        kept.close()
    root.addHandler(handler)


class CsvLog:
    """Append rows to a CSV file; the header is written once, from the first row's keys.

    An existing file is appended to (a resumed run continues its log). A row with keys the header lacks
    rewrites the file with the wider header, keeping the old rows.
    """

    def __init__(self, path):
        self.path = path
        self.fields = None
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            with open(path, newline="") as f:
                self.fields = next(csv.reader(f), None)

    def append(self, row):
        row = {k: _fmt(v) for k, v in row.items()}
        if self.fields is None:
            self.fields = list(row)
            with self._open("w") as f:
                csv.DictWriter(f, self.fields).writeheader()
        elif any(k not in self.fields for k in row):
            self._widen([k for k in row if k not in self.fields])
        with self._open("a") as f:
            csv.DictWriter(f, self.fields, restval="").writerow(row)

    def _refuse_link(self):
        """A rewrite renames a new file over the log: it would replace a link, not write through it, yet the folder
        is refused all the same (it came from elsewhere)."""
        if os.path.islink(self.path):
            raise links.refusal(self.path, os.path.dirname(os.path.abspath(self.path)))

    def _open(self, mode):
        return links.open_inside(self.path, os.path.dirname(os.path.abspath(self.path)), mode, newline="")

    def _widen(self, new_fields):
        self._rewrite(self.fields + new_fields, self.rows())

    def _rewrite(self, fields, rows):
        """Replace the file atomically: a kill never leaves a log without its earlier rows."""
        self._refuse_link()
        text = io.StringIO()
        writer = csv.DictWriter(text, fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, text.getvalue())
        self.fields = list(fields)

    def rows(self):
        """The complete rows (a line cut short by a killed process is left out)."""
        if not os.path.isfile(self.path):
            return []
        with open(self.path, newline="") as f:
            return [row for row in csv.DictReader(f) if None not in row.values() and None not in row]

    def keep(self, predicate):
        """Drop the rows for which `predicate(row)` is false (a resume drops what came after its checkpoint);
        returns how many were dropped."""
        if self.fields is None:
            return 0
        self._refuse_link()
        with open(self.path, newline="") as f:
            lines = sum(1 for _ in f) - 1
        rows = self.rows()
        kept = [row for row in rows if predicate(row)]
        if len(kept) != lines:
            self._rewrite(self.fields, kept)
        return lines - len(kept)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


# ------------------------------------------------------------------------------------------ reading back


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fractional_epochs(rows, images_per_epoch=None):
    """x of each loss_log.csv row in epochs completed: a stored fractional-epoch column, else
    `epoch - 1 + iters / images_per_epoch` (the x train.py plots live, when `images_per_epoch` is the number
    of images one process sees per epoch).

    Without `images_per_epoch` (older logs, other tools) the largest `iters` reached in a finished epoch (one
    followed by another) is the estimate, since the last print of an epoch comes within print_freq of its end.
    """
    for column in ("epoch_frac", "fractional_epoch"):
        if rows and column in rows[0]:
            return np.array([_float(r[column]) for r in rows])
    epochs = np.array([_float(r["epoch"]) for r in rows])
    iters = np.array([_float(r["iters"]) for r in rows])
    if images_per_epoch is None:
        finished = epochs < np.nanmax(epochs)
        images_per_epoch = np.nanmax(iters[finished]) if finished.any() else np.nanmax(iters)
    return epochs - 1 + iters / max(float(images_per_epoch), 1.0)


def read_losses(run_dir, images_per_epoch=None):
    """(x in epochs, {loss name: values}, total_iters or None) from `<run_dir>/loss_log.csv`."""
    path = os.path.join(run_dir, LOSS_LOG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; is {run_dir} a run folder (checkpoints/<name>)?")
    rows = read_csv(path)
    if not rows:
        raise ValueError(f"{path} has no rows yet")
    missing = {"epoch", "iters"} - set(rows[0])
    if missing and not {"epoch_frac", "fractional_epoch"} & set(rows[0]):
        raise ValueError(f"{path} lacks the column(s) {sorted(missing)} needed for the x axis")
    names = [c for c in rows[0] if c not in NON_LOSS_COLUMNS]
    ys = OrderedDict((n, np.array([_float(r.get(n)) for r in rows])) for n in names)
    steps = np.array([_float(r["total_iters"]) for r in rows]) if "total_iters" in rows[0] else None
    return fractional_epochs(rows, images_per_epoch), ys, steps


def read_convergence(run_dir):
    """(epochs, values, gan_mode) from `<run_dir>/convergence.csv`: the per-epoch quantity of the GAN mode the
    log was written for (util.run.convergence); the last row wins for a repeated epoch."""
    path = os.path.join(run_dir, CONVERGENCE_LOG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: convergence.csv is written once per epoch by runs of "
                                "models that report D_real/D_fake (pix2pix, ATME, SEGAN)")
    rows = read_csv(path)
    if not rows:
        raise ValueError(f"{path} has no rows yet")
    mode = convergence.mode_of_columns(list(rows[0]))
    column = convergence.quantity(mode).column
    if column not in rows[0]:
        raise ValueError(f"{path} has no {column} column (columns: {', '.join(rows[0])})")
    by_epoch = OrderedDict()
    for row in rows:
        by_epoch[int(float(row["epoch"]))] = _float(row[column])
    epochs = sorted(by_epoch)
    return np.array(epochs, dtype=float), np.array([by_epoch[e] for e in epochs]), mode


def read_validation(run_dir):
    """(epochs, {score: values}) from `<run_dir>/val_log.csv`; the last row wins for a repeated epoch."""
    path = os.path.join(run_dir, VALIDATION_LOG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: val_log.csv is written by runs with --val_freq > 0")
    by_epoch = OrderedDict()
    for row in read_csv(path):
        by_epoch[int(float(row["epoch"]))] = row
    epochs = sorted(by_epoch)
    names = list(OrderedDict.fromkeys(k for r in by_epoch.values() for k in r if k not in NON_SCORE_COLUMNS))
    ys = OrderedDict((n, np.array([_float(by_epoch[e].get(n)) for e in epochs])) for n in names)
    return np.array(epochs, dtype=float), ys

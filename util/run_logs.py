"""Console and file logging (rank 0 only) and metrics appended as CSV rows."""
import csv
import io
import logging
import logging.handlers
import os
import sys

from util.atomic import atomic_write_text

_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def setup_logging(log_file=None, rank=0, verbose=False):
    """stdout plus an optional log file for rank 0; other ranks only log warnings."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = (logging.DEBUG if verbose else logging.INFO) if rank == 0 else logging.WARNING
    root.setLevel(level)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(_FORMAT)
    root.addHandler(console)
    if log_file and rank == 0:
        attach_log_file(log_file)
    elif rank == 0:
        # Kept until attach_log_file: the lines logged before the run owns its folder reach the log file too.
        root.addHandler(logging.handlers.MemoryHandler(capacity=10 ** 6, flushLevel=logging.CRITICAL + 1))
    for noisy in ("PIL", "matplotlib", "urllib3", "visdom", "websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def attach_log_file(log_file):
    """Also log to `log_file` (appending), starting with the records kept since setup_logging."""
    root = logging.getLogger()
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(_FORMAT)
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
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()
        elif any(k not in self.fields for k in row):
            self._widen([k for k in row if k not in self.fields])
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, restval="").writerow(row)

    def _widen(self, new_fields):
        self._rewrite(self.fields + new_fields, self.rows())

    def _rewrite(self, fields, rows):
        """Replace the file atomically: a kill never leaves a log without its earlier rows."""
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

"""Console and file logging (rank 0 only) and metrics appended as CSV rows."""
import csv
import logging
import os
import sys


def setup_logging(log_file=None, rank=0, verbose=False):
    """stdout plus an optional log file for rank 0; other ranks only log warnings."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = (logging.DEBUG if verbose else logging.INFO) if rank == 0 else logging.WARNING
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    root.addHandler(console)
    if log_file and rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    for noisy in ("PIL", "matplotlib", "urllib3", "visdom", "websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        self.fields = self.fields + new_fields
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, restval="")
            writer.writeheader()
            writer.writerows(rows)

    def rows(self):
        if not os.path.isfile(self.path):
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value

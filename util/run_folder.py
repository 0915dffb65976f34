"""One training run owns its folder: a lock held while it trains, and the checks that keep two runs from
mixing.

The lock is an exclusive `flock` on the run folder itself, so taking it creates no file and the kernel drops it
when the process ends, however it ends: a lock left by a killed process does not block. While it trains, the
owner describes itself in `running.json` (process id, host, start time, command), which a refused second
`train.py` quotes. `flock` is advisory and local: on a network file system that does not support it, two
machines are not kept apart.
"""
import datetime
import fcntl
import glob
import json
import logging
import os
import socket
import sys

from util import atomic

log = logging.getLogger(__name__)

OWNER_FILE = "running.json"
# A folder holding any of these already holds a run (or someone's weights).
RUN_MARKERS = ("train_opt.json", "loss_log.csv", "convergence.csv", "*_net_*.pth", "*_train_state.pth",
               "disc_pool*.npy")


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked; the message says why and what to do."""


def holds_a_run(folder):
    """The files that show `folder` already holds a run, [] when it is new or empty."""
    if not os.path.isdir(folder):
        return []
    found = []
    for pattern in RUN_MARKERS:
        found += sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, pattern)))
    return found


def describe_owner(folder):
    """Who holds the lock, from the owner's `running.json` (best effort)."""
    try:
        with open(os.path.join(folder, OWNER_FILE)) as handle:
            owner = json.load(handle)
    except (OSError, ValueError):
        return "another process (it has not described itself yet)"
    return (f"process {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')} "
            f"({owner.get('command', '')})")


class RunFolder:
    """`<checkpoints_dir>/<name>/` for one training process. `lock()` takes it (creating it if needed) or raises
    `RunFolderError`; `release()` gives it back. Use `check_*` before anything is written."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self._fd = None

    # ------------------------------------------------------------------ checks (read only)
    def check_new_run(self, continue_train, start_over, probe_lock=True):
        """Refuse a folder another process trains in, a fresh run on a folder that holds one (unless
        `start_over`), and contradicting flags. Reads only. The busy probe takes the lock for a moment, so only
        the process that will take it probes (`probe_lock`): a sibling rank's probe could make it fail."""
        if probe_lock:
            self._check_not_busy()
        markers = holds_a_run(self.path)
        if continue_train and start_over:
            raise RunFolderError("--continue_train and --start_over contradict each other: resume the run in "
                                 f"{self.path}, or move it aside and start a new one; pass one of them")
        if continue_train:
            return
        if markers and not start_over:
            raise RunFolderError(
                f"{self.path} already holds a run ({', '.join(markers[:4])}{', ...' if len(markers) > 4 else ''}). "
                f"Resume it with --continue_train, start a new run under another --name, or pass --start_over to "
                f"move that run aside (to {os.path.basename(self.aside_name())}) and start afresh")

    def aside_name(self):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"{self.path}.old-{stamp}"

    def _busy_error(self):
        return RunFolderError(f"{self.path} is in use by {describe_owner(self.path)}: one training run per "
                              f"folder. Wait for it, stop it (Ctrl-C saves a resumable state), or pick another --name")

    def _check_not_busy(self):
        if self._fd is not None or not os.path.isdir(self.path):
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            raise self._busy_error() from None
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ the lock
    def lock(self, argv=None):
        """Create the folder if needed and take its lock; raise RunFolderError when another process holds it."""
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as err:
            raise RunFolderError(f"cannot create or open the run folder {self.path}: {err.strerror or err}. Pass "
                                 f"another --checkpoints_dir (or --name)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy_error() from None
        self._fd = fd
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": datetime.datetime.now().isoformat(timespec="seconds"),
                 "command": " ".join(sys.argv if argv is None else argv)}
        atomic.write_json(os.path.join(self.path, OWNER_FILE), owner)

    def start_over(self):
        """Move the run in this (locked) folder aside and leave the folder empty; returns where it went."""
        aside = self.aside_name()
        os.rename(self.path, aside)  # the lock moves with the folder's inode
        previous, self._fd = self._fd, None
        self.lock()
        os.remove(os.path.join(aside, OWNER_FILE))
        os.close(previous)
        log.warning("--start_over: moved the earlier run to %s; this is a new run", aside)
        return aside

    def tidy(self):
        """Finish saves that a killed process left half-renamed, then remove its temporary files."""
        completed = atomic.recover(self.path)
        if completed:
            log.warning("completed an interrupted save in %s: %s", self.path,
                        ", ".join(os.path.basename(p) for p in completed))
        removed = atomic.remove_stale_temporaries(self.path)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write in %s", len(removed), self.path)

    def release(self):
        if self._fd is None:
            return
        try:
            os.remove(os.path.join(self.path, OWNER_FILE))
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

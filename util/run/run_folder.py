"""One training run owns its folder: a lock held while it trains, and the checks that keep two runs from
mixing.

The lock is an exclusive `flock` on `running.lock`, a regular file in the run folder opened for reading and
writing: the kernel drops it when the process ends, however it ends, so a lock left by a killed process does
not block, and on NFS (where the Linux client turns `flock` into a POSIX lock, which needs a writable
descriptor and a regular file) it keeps two machines apart too. A file system without locks gets a message
that names it and offers `--lock none` (no lock at all: unsafe). While it trains, the owner describes itself in
`running.json` (process id, host, start time, command), which a refused second `train.py` quotes.

A folder may have come from someone else, so before a run writes into an existing one it is checked read-only:
a symbolic link anywhere in it, or a save journal that names anything but its own set's files, refuses it
(util.run.links, util.run.transaction) before anything is written; the lock file is opened with O_NOFOLLOW.
"""
import datetime
import fcntl
import glob
import json
import logging
import os
import socket
import sys

from util.run import atomic, folder_swap, links, transaction

log = logging.getLogger(__name__)

OWNER_FILE = "running.json"
LOCK_FILE = "running.lock"
LOCK_MODES = ("file", "none")
# A folder holding any of these already holds a run (or someone's weights).
RUN_MARKERS = ("train_opt.json", "loss_log.csv", "convergence.csv", "*_net_*.pth", "*_train_state.pth",
               "disc_pool*.npy", ".*" + transaction.JOURNAL_SUFFIX)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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


def file_system_of(path):
    """'<type> mounted at <mount point>' of the file system holding `path`, from /proc/self/mounts (Linux);
    'an unknown file system' elsewhere."""
    path = os.path.realpath(path)
    best = None
    try:
        with open("/proc/self/mounts") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and (best is None or len(mount) >= len(best[0])):
                    best = (mount, fields[2])
    except OSError:
        pass
    return f"{best[1]} mounted at {best[0]}" if best else "an unknown file system"


def lock_error(lock_path, err):
    """The RunFolderError for a lock call that failed with `err` for another reason than a lock held elsewhere."""
    return RunFolderError(
        f"cannot lock {lock_path}: {err.strerror or err} (errno {err.errno}). The run folder is on "
        f"{file_system_of(os.path.dirname(lock_path))}, which does not give this process file locks, and a run "
        f"takes one so that two trainings never write the same folder. Put --checkpoints_dir on a local disk or on "
        f"a file system with locks (NFS: mount without 'nolock', with the lock service running), or, if you make "
        f"sure yourself that no other run uses this folder, pass --lock none (unsafe: two runs on one folder "
        f"overwrite each other's checkpoints)")


def _remove_created(paths):
    for path in reversed(paths):
        try:
            os.rmdir(path) if os.path.isdir(path) else os.remove(path)
        except OSError:
            pass


class RunFolder:
    """`<checkpoints_dir>/<name>/` for one training process. `lock()` takes it (creating it if needed) or raises
    `RunFolderError`; `release()` gives it back. Use `check_*` before anything is written. `locking="none"`
    takes no lock (for file systems without locks; nothing then keeps a second run out)."""

    def __init__(self, path, locking="file"):
        if locking not in LOCK_MODES:
            raise ValueError(f"unknown lock mode {locking!r}; use one of {', '.join(LOCK_MODES)}")
        self.path = os.path.abspath(path)
        self.locking = locking
        self._fd = None
        self._held = False

    @property
    def lock_path(self):
        return os.path.join(self.path, LOCK_FILE)

    # ------------------------------------------------------------------ checks (read only)
    def check_new_run(self, continue_train, start_over, probe_lock=True, commands=None):
        """Refuse a folder another process trains in, a fresh run on a folder that holds one (unless
        `start_over`), and contradicting flags. Reads only. The busy probe takes the lock for a moment, so only
        the process that will take it probes (`probe_lock`): a sibling rank's probe could make it fail.
        `commands()` gives the refusal's advice as whole commands: (resume, start over)."""
        if probe_lock:
            self._check_not_busy()
        markers = holds_a_run(self.path)
        if continue_train and start_over:
            raise RunFolderError("--continue_train and --start_over contradict each other: resume the run in "
                                 f"{self.path}, or move it aside and start a new one; pass one of them")
        if continue_train or not markers:  # a folder this run will write into as it is
            self.check_received()
            return
        if markers and not start_over:
            found = f"{self.path} already holds a run ({', '.join(markers[:4])}{', ...' if len(markers) > 4 else ''})."
            aside = os.path.basename(self.aside_name())
            if commands is None:
                raise RunFolderError(f"{found} Resume it with --continue_train, start a new run under another --name, "
                                     f"or pass --start_over to move that run aside (to {aside}) and start afresh")
            resume, start_afresh = commands()
            raise RunFolderError(
                f"{found}\nResume it (the run's own options come from its train_opt.json):\n  {resume}\n"
                f"or move it aside (to {aside}) and start afresh with your command:\n  {start_afresh}\n"
                f"or start a new run under another --name.")

    def check_received(self):
        """Refuse (RunFolderError) a folder with a symbolic link in it, or with a save journal that names anything
        but the files of its own set: a folder received from someone else could make this run write elsewhere.
        Reads only."""
        try:
            links.check_folder(self.path)
            transaction.check_journals(self.path)
        except (links.LinkRefused, transaction.JournalError) as err:
            raise RunFolderError(str(err)) from None

    def aside_name(self):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"{self.path}.old-{stamp}"

    def _busy_error(self):
        return RunFolderError(f"{self.path} is in use by {describe_owner(self.path)}: one training run per "
                              f"folder. Wait for it, stop it (Ctrl-C saves a resumable state), or pick another --name")

    def _check_not_busy(self):
        if self._held or self.locking == "none" or not os.path.isdir(self.path):
            return
        try:
            fd = os.open(self.lock_path, os.O_RDWR | _NOFOLLOW)  # no O_CREAT: a probe writes nothing
        except FileNotFoundError:
            return  # whoever holds the lock created the file first
        except OSError as err:
            if os.path.islink(self.lock_path):
                raise RunFolderError(str(links.refusal(self.lock_path, self.path))) from None
            raise RunFolderError(f"cannot open {self.lock_path}: {err.strerror or err}. Make the run folder "
                                 f"writable, or pass another --checkpoints_dir (or --name)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            raise self._busy_error() from None
        except OSError as err:
            raise lock_error(self.lock_path, err) from None
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ the lock
    def lock(self, argv=None):
        """Create the folder if needed and take its lock; raise RunFolderError when another process holds it or
        the file system cannot lock."""
        created = [p for p in (self.path, self.lock_path) if not os.path.lexists(p)]
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = None if self.locking == "none" else os.open(self.lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
        except OSError as err:
            if os.path.islink(self.lock_path):  # O_NOFOLLOW: a link, even a dangling one, is not followed
                _remove_created(created)
                raise RunFolderError(str(links.refusal(self.lock_path, self.path))) from None
            raise RunFolderError(f"cannot create or open the run folder {self.path}: {err.strerror or err}. Pass "
                                 f"another --checkpoints_dir (or --name)") from None
        if fd is None:
            log.warning("--lock none: %s is not locked, so nothing stops a second run from writing into it while "
                        "this one trains; make sure none does", self.path)
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy_error() from None
            except OSError as err:
                os.close(fd)
                _remove_created(created)  # a refused command leaves the disk as it found it
                raise lock_error(self.lock_path, err) from None
        self._fd, self._held = fd, True
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": datetime.datetime.now().isoformat(timespec="seconds"),
                 "command": " ".join(sys.argv if argv is None else argv)}
        atomic.write_json(os.path.join(self.path, OWNER_FILE), owner)

    def start_over(self):
        """Move the run in this (locked) folder aside and leave the folder empty; returns where it went."""
        aside = self.aside_name()
        os.rename(self.path, aside)  # the lock file, still locked, moves with the folder
        atomic.fsync_folder(os.path.dirname(self.path))
        previous, self._fd, self._held = self._fd, None, False
        self.lock()
        os.remove(os.path.join(aside, OWNER_FILE))
        if previous is not None:
            os.close(previous)
        log.warning("--start_over: moved the earlier run to %s; this is a new run", aside)
        return aside

    def tidy(self):
        """Finish saves that a killed process left half-renamed, then remove its temporary files."""
        try:
            completed = transaction.recover(self.path)
        except transaction.JournalError as err:
            raise RunFolderError(str(err)) from None
        if completed:
            log.warning("completed an interrupted save in %s: %s", self.path,
                        ", ".join(os.path.basename(p) for p in completed))
        removed = folder_swap.remove_stale_temporaries(self.path)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write in %s", len(removed), self.path)

    def release(self):
        """Give the folder back. The lock file stays: removing it would let a process that opened it just before
        lock a file no longer in the folder while a third creates a new one."""
        if not self._held:
            return
        try:
            os.remove(os.path.join(self.path, OWNER_FILE))
        except OSError:
            pass
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd, self._held = None, False

"""The one way files are written here: to a temporary file beside the target, fsync, then rename.

A reader never sees half a file, and a failed write (full disk, file too large, read-only folder, a writer
that raises) leaves the previous file of that name as it was and raises `WriteError`, which names the file,
the cause and what to do. Temporary files are named `.<target name>.<random>.tmp`; `remove_stale_temporaries`
finds the ones a killed process left behind.

Durability against a power loss, not only a killed process: a file is fsynced before it is renamed, and its
folder after the rename (`fsync_folder`), so a name that a later step relies on is on the disk before that
step. A folder is replaced in one atomic step (`atomic_directory`).
"""
import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import tempfile

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
# A folder's content where `atomic_directory` keeps it behind a symlink: `.<name>.<8 characters>.dir`.
VERSION_SUFFIX = ".dir"
_VERSION_NAME = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.dir$")
# Below this many free bytes a write that failed without an errno is taken for a full disk.
_NEARLY_FULL = 16 * 1024 * 1024


class WriteError(RuntimeError):
    """A file could not be written; the previous file of that name is intact. `cause` says why."""

    def __init__(self, path, cause, errno_=None, hint=None):
        self.path, self.cause, self.errno = path, cause, errno_
        folder = os.path.dirname(os.path.abspath(path))
        super().__init__(f"could not write {path}: {cause}. The previous file of that name, if any, is intact. "
                         f"{_advice(errno_, folder)}" + (f" {hint}" if hint else ""))

    def with_hint(self, hint):
        """The same error with what the caller's user can do about it (e.g. a flag to pass) added."""
        return WriteError(self.path, self.cause, self.errno, hint=hint)


def _advice(code, folder):
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"Free space in {folder} (or point the run at another folder), then try again."
    if code == errno.EFBIG:
        return f"The file size limit of this process (ulimit -f) or of the file system under {folder} was reached."
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Make {folder} writable or choose another folder."
    return f"Check {folder}."


def _describe(exc, folder):
    """(cause text, errno) of a failed write: the OSError in the exception's chain, else a guess from free space.

    torch.save reports a failed write as `RuntimeError: [enforce fail at inline_container.cc] ...` with the
    OSError only in its context.
    """
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            code = seen.errno
            if code == errno.ENOSPC:
                return "the disk is full", code
            if code in (errno.EACCES, errno.EPERM, errno.EROFS):
                return "the folder is not writable", code
            if code == errno.EFBIG:
                return "the file is larger than this process may write", code
            return os.strerror(code), code
        seen = seen.__cause__ or seen.__context__
    try:
        if shutil.disk_usage(folder).free < _NEARLY_FULL:
            return "the disk is full", errno.ENOSPC
    except OSError:
        pass
    return f"{type(exc).__name__}: {exc}", None


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _new_temporary(path):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=TEMP_SUFFIX, dir=folder)
        os.close(fd)
    except OSError as err:
        raise WriteError(path, *_describe(err, folder)) from err
    return tmp


def _finish(tmp):
    """Make a written temporary file durable and readable by others."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared and served


# fsync of a folder: errors that mean this file system cannot do it (its renames are as durable as it makes them).
_NO_FOLDER_FSYNC = (errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES, errno.EROFS)


def fsync_folder(folder):
    """Make the names in `folder` durable: files created, renamed or removed there survive a power loss once
    this returns (a rename is otherwise only in memory until the file system commits it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a folder this process cannot open, it cannot have written to either
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _NO_FOLDER_FSYNC:
            raise
    finally:
        os.close(fd)


def _failed(path, tmp, err):
    """Remove `tmp`; the exception to raise for `err` (a WriteError for write failures, else `err` itself)."""
    _remove_quietly(tmp)
    if isinstance(err, WriteError) or not isinstance(err, (OSError, RuntimeError)):
        return err
    return WriteError(path, *_describe(err, os.path.dirname(os.path.abspath(path))))


def stage(path, fill):
    """Write the future content of `path` into a temporary file beside it with `fill(temporary path)`, make it
    durable, and return the temporary path, not yet renamed (see `Transaction`). A failure removes it."""
    tmp = _new_temporary(path)
    try:
        fill(tmp)
        _finish(tmp)
    except BaseException as err:
        raised = _failed(path, tmp, err)
        if raised is err:
            raise
        raise raised from err
    return tmp


def _write_with(write):
    def fill(tmp):
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
    return fill


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; when the block ends without an error, it becomes `path`.

    For writers that want a file name rather than a file object (numpy memmaps). Any error removes the
    temporary file; OSErrors and writer errors become a `WriteError`, other exceptions pass unchanged.
    """
    tmp = _new_temporary(path)
    try:
        yield tmp
        _finish(tmp)
        os.replace(tmp, path)
        fsync_folder(os.path.dirname(os.path.abspath(path)))
    except BaseException as err:
        raised = _failed(path, tmp, err)
        if raised is err:
            raise
        raise raised from err


@contextlib.contextmanager
def atomic_directory(path):
    """Yield an empty staging folder beside the folder `path`; when the block ends without an error it replaces
    `path` as a whole in one atomic step, and the old folder is removed. A reader, and a restart after a kill or a
    power loss at any moment, finds the old folder or the new one, never a mix and never neither.

    The step is `renameat2(RENAME_EXCHANGE)` where the kernel and the file system have it (Linux on local file
    systems). Elsewhere (NFS, other systems) `path` becomes a symlink to `.<name>.<id>.dir`, replaced with
    `os.replace`; a folder that was a real one is converted first, and a restart finishes a conversion that a
    kill interrupted (`remove_stale_temporaries`).

    Yields a list that receives, after the swap, the number of entries the old folder held. Any error removes
    the staging folder and leaves `path` as it was; OSErrors become a `WriteError`.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=TEMP_SUFFIX, dir=parent)
        os.chmod(staging, 0o755)
    except OSError as err:
        raise WriteError(path, *_describe(err, parent)) from err
    replaced = []
    try:
        yield staging, replaced
        old = _swap_in(staging, path)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):
            raise WriteError(path, *_describe(err, parent)) from err
        raise
    if old is not None:
        replaced.append(len(os.listdir(old)))
        shutil.rmtree(old, ignore_errors=True)  # under a name a restart removes, should this not finish


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = []  # [the C function or None], looked up once


def _exchange(first, second):
    """Swap two existing paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE). False where the C
    library, the kernel or the file system cannot (then nothing changed)."""
    if not _renameat2:
        try:
            function = ctypes.CDLL(None, use_errno=True).renameat2
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            _renameat2.append(function)
        except (AttributeError, OSError):
            _renameat2.append(None)
    if _renameat2[0] is None:
        return False
    if _renameat2[0](_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), second)


def _version_path(path):
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(4)}{VERSION_SUFFIX}")


def _point_link(path, version):
    """Make `path` a symlink to the sibling folder `version`, replacing what `path` is, in one `os.replace`."""
    link = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    os.symlink(os.path.basename(version), link)
    os.replace(link, path)
    fsync_folder(os.path.dirname(path))


def _swap_in(staging, path):
    """Put the folder `staging` at `path` in one step; returns where the old content now is (to remove), or None."""
    parent = os.path.dirname(path)
    if not os.path.lexists(path):
        os.rename(staging, path)
        fsync_folder(parent)
        return None
    if not os.path.islink(path):
        if not os.path.isdir(path):
            raise OSError(errno.ENOTDIR, "a file, not a folder, has that name", path)
        if _exchange(staging, path):
            fsync_folder(parent)
            return staging  # the old folder, under the staging folder's temporary name
        # No exchange here: convert the real folder into a symlink to it first. A kill between the two steps
        # leaves no `path`, and the next `remove_stale_temporaries` points it at the old folder again.
        moved = _version_path(path)
        os.rename(path, moved)
        _point_link(path, moved)
    previous = os.path.join(parent, os.readlink(path))
    version = _version_path(path)
    os.rename(staging, version)
    fsync_folder(parent)
    _point_link(path, version)
    return previous if _is_version_of(os.path.basename(previous), os.path.basename(path)) else None


def _is_version_of(name, base):
    match = _VERSION_NAME.match(name)
    return bool(match) and match.group(1) == base


def _stale_versions(folder, names):
    """Version folders of `atomic_directory` in `folder` that no symlink points to (a kill left them)."""
    stale = []
    for name in names:
        match = _VERSION_NAME.match(name)
        if not match:
            continue
        link = os.path.join(folder, match.group(1))
        if not (os.path.islink(link) and os.readlink(link) == name):
            stale.append(os.path.join(folder, name))
    return stale


def _relink_orphans(folder):
    """A conversion to a symlink that a kill interrupted left `.<name>.<id>.dir` without `<name>`: point `<name>`
    at it again (the newest, should there be several)."""
    orphans = {}
    for name in os.listdir(folder):
        match = _VERSION_NAME.match(name)
        if match and not os.path.lexists(os.path.join(folder, match.group(1))):
            orphans.setdefault(match.group(1), []).append(os.path.join(folder, name))
    for base, versions in orphans.items():
        _point_link(os.path.join(folder, base), max(versions, key=os.path.getmtime))


def atomic_write(path, write):
    """Call `write(binary file)` on a temporary file and rename it to `path` (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        _write_with(write)(tmp)


def atomic_write_bytes(path, payload):
    atomic_write(path, lambda handle: handle.write(payload))


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, payload):
    """`payload` as indented JSON, atomically; returns `path`."""
    atomic_write_text(path, json.dumps(payload, indent=1, allow_nan=True) + "\n")
    return path


def is_temporary(name):
    """Whether a file name is one of this module's temporary files."""
    return bool(_TEMP_NAME.match(os.path.basename(name)))


def stale_temporaries(folder, recursive=True):
    """Paths of this module's temporary files and staging folders under `folder` (left by a process killed
    mid-write)."""
    found = []
    if not os.path.isdir(folder):
        return found
    for root, dirs, files in os.walk(folder):
        found.extend(os.path.join(root, f) for f in files if is_temporary(f))
        found.extend(os.path.join(root, d) for d in dirs if is_temporary(d))
        versions = _stale_versions(root, dirs)
        found.extend(versions)
        dirs[:] = [d for d in dirs if not is_temporary(d) and os.path.join(root, d) not in versions]
        if not recursive:
            break
    return sorted(found)


def remove_stale_temporaries(folder, recursive=True):
    """Remove the temporary files and staging folders under `folder`; returns their paths. Call it only when
    no other process writes there (the run folder's lock is held). A folder that `atomic_directory` was
    converting into a symlink when the process was killed gets its symlink first."""
    if os.path.isdir(folder):
        for root, dirs, _ in os.walk(folder):
            if any(_VERSION_NAME.match(d) for d in dirs):
                _relink_orphans(root)
            dirs[:] = [d for d in dirs if not is_temporary(d)]
            if not recursive:
                break
    removed = stale_temporaries(folder, recursive)
    for path in removed:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            _remove_quietly(path)
    return removed


# ----------------------------------------------------------------------------------------------------
# Several files that become visible together: stage them all, then rename them under a journal.

JOURNAL_SUFFIX = ".journal.json"


class Transaction:
    """Files written together: each is staged (complete and durable under a temporary name) as it is added;
    `commit()` records the renames in a journal, performs them and removes the journal. A process killed during
    the renames leaves the journal, and `recover()` completes it; a failure before `commit()` (a full disk)
    removes the staged files and leaves every existing file as it was.

        with Transaction(folder, "latest") as t:
            t.write(path_a, lambda f: torch.save(a, f))
            t.fill(path_b, lambda tmp: shutil.copyfile(src, tmp))
        # committed here; an exception inside the block aborts instead
    """

    def __init__(self, folder, name):
        self.folder = os.path.abspath(folder)
        self.journal = os.path.join(self.folder, f".{name}{JOURNAL_SUFFIX}")
        self.staged = []  # (temporary path, final path)

    def write(self, path, write):
        """Stage `path`'s new content, written by `write(binary file)`."""
        self.fill(path, _write_with(write))

    def fill(self, path, fill):
        """Stage `path`'s new content, written by `fill(temporary path)`."""
        self.staged.append((stage(path, fill), os.path.abspath(path)))

    def commit(self):
        if not self.staged:
            return
        names = [[os.path.relpath(tmp, self.folder), os.path.relpath(final, self.folder)] for tmp, final in self.staged]
        # Power-loss order: the staged files' names are on the disk before the journal's name (a journal that
        # survives finds every file it names), and the journal's name before the first rename (atomic_write
        # fsyncs its folder), so renames that survive always have their journal.
        for folder in sorted({os.path.dirname(tmp) for tmp, _ in self.staged}):
            fsync_folder(folder)
        atomic_write_text(self.journal, json.dumps({"renames": names}) + "\n")
        _apply(self.folder, names)
        _remove_quietly(self.journal)
        self.staged = []

    def abort(self):
        for tmp, _ in self.staged:
            _remove_quietly(tmp)
        self.staged = []

    def __enter__(self):
        return self

    def __exit__(self, kind, value, trace):
        if kind is None:
            self.commit()
        else:
            self.abort()
        return False


def _apply(folder, names):
    for tmp, final in names:
        tmp, final = os.path.join(folder, tmp), os.path.join(folder, final)
        if os.path.exists(tmp):
            os.replace(tmp, final)
    # The renames are durable before the journal that would redo them goes.
    for parent in sorted({os.path.dirname(os.path.join(folder, final)) for _, final in names}):
        fsync_folder(parent)


def _journals(folder):
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.startswith(".") and f.endswith(JOURNAL_SUFFIX))


def _read_journal(path):
    try:
        with open(path) as handle:
            return json.load(handle)["renames"]
    except (OSError, ValueError, KeyError):
        return None  # never completed: its files were still being staged, so nothing was renamed


def recover(folder):
    """Complete the renames of transactions whose process was killed while committing; returns the final
    paths it completed. Call it before `remove_stale_temporaries`, by the folder's only writer."""
    done = []
    for journal in _journals(folder):
        names = _read_journal(journal)
        if names:
            done += [os.path.join(folder, final) for tmp, final in names if os.path.exists(os.path.join(folder, tmp))]
            _apply(folder, names)
        _remove_quietly(journal)
    return done


def pending(folder):
    """{final path: staged temporary path} of committed transactions whose renames a killed process did not
    finish: what a reader that must not write (test.py) reads instead of the final names."""
    found = {}
    for journal in _journals(folder):
        for tmp, final in _read_journal(journal) or []:
            if os.path.exists(os.path.join(folder, tmp)):
                found[os.path.join(folder, final)] = os.path.join(folder, tmp)
    return found

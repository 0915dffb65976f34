"""The one way a file is written here: to a temporary file beside the target, fsync, then rename.

A reader never sees half a file, and a failed write (full disk, file too large, read-only folder, a writer
that raises) leaves the previous file of that name as it was and raises `WriteError`, which names the file,
the cause and what to do. Temporary files are named `.<target name>.<random>.tmp`; util.run.folder_swap's
`remove_stale_temporaries` finds the ones a killed process left behind.

Durability against a power loss, not only a killed process: a file is fsynced before it is renamed, and its
folder after the rename (`fsync_folder`), so a name that a later step relies on is on the disk before that
step. A folder replaced as a whole is util.run.folder_swap's; files that become visible together,
util.run.transaction's.
"""
import contextlib
import errno
import json
import os
import re
import shutil
import tempfile

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
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

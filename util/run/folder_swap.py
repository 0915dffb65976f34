"""A folder replaced as a whole in one atomic step (`atomic_directory`), and the removal of what a killed writer
left behind (temporary files, staging folders, version folders no link points to: `remove_stale_temporaries`)."""
import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import tempfile

from util.run.atomic import TEMP_SUFFIX, WriteError, _describe, _remove_quietly, fsync_folder, is_temporary

# A folder's content where `atomic_directory` keeps it behind a symlink: `.<name>.<8 characters>.dir`.
VERSION_SUFFIX = ".dir"
_VERSION_NAME = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.dir$")


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
    return previous if is_version_of(os.path.basename(previous), os.path.basename(path)) else None


def is_version_of(name, base):
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

"""Writes into a run folder never go through a symbolic link.

A run folder may have come from someone else (a tarball of `checkpoints/<name>/` to resume or test), and a link
inside it (`train.log`, `loss_log.csv`, `web/`, `running.lock`, ...) would turn an append or a page rewrite into a
write anywhere the link points. So a folder about to be written is checked for links first (`check_folder`, read
only), and each writer that appends or creates opens its file with O_NOFOLLOW under a folder checked link-free
(`open_inside`). The one kind of link the framework makes itself, `<name> -> .<name>.<id>.dir` beside it
(util.run.folder_swap's swap where the kernel has no exchange), is allowed.
"""
import errno
import os

from util.run.folder_swap import is_version_of


class LinkRefused(RuntimeError):
    """A file or folder to be written is a symbolic link; nothing was written through it."""
    refusal = True  # util.command_line.cli: no traceback hint


def _is_own_link(path):
    target = os.readlink(path)
    return "/" not in target and is_version_of(target, os.path.basename(path))


def refusal(link, root):
    """The LinkRefused for the symbolic link `link` found in the folder `root`."""
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    root = os.path.abspath(root)
    return LinkRefused(
        f"{link} is a symbolic link (to {target}): files of the folder {root} are written only inside it, never "
        f"through a link, which could point anywhere (a folder received from someone else may carry such links). "
        f"Nothing was written. Use a copy with the links' contents instead of the links: "
        f"cp -rL '{root}' '{root}.copy', then point the command at the copy; or start afresh (--start_over moves "
        f"the folder aside, or use another --name).")


def check_inside(path, root):
    """Raise LinkRefused when `path` (inside the folder `root`) or a folder between `root` and it is a symbolic
    link (other than the framework's own folder-version links). `root` itself may be one."""
    root, path = os.path.abspath(root), os.path.abspath(path)
    relative = os.path.relpath(path, root)
    if relative == os.curdir:
        return
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise ValueError(f"{path} is not inside {root}")
    current = root
    for part in relative.split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current) and not _is_own_link(current):
            raise refusal(current, root)


def check_folder(root):
    """Raise LinkRefused for the first symbolic link anywhere under the folder `root` (not followed; the
    framework's own folder-version links are allowed). Reads only."""
    if not os.path.isdir(root):
        return
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(folder, name)
            if os.path.islink(path) and not _is_own_link(path):
                raise refusal(path, root)


def open_inside(path, root, mode="a", encoding="utf-8", newline=None):
    """`open(path, mode)` for "a", "w" (text) or "ab", "wb", refusing a link at `path` (O_NOFOLLOW) or on the way
    from `root` to it (LinkRefused names it)."""
    check_inside(os.path.dirname(os.path.abspath(path)), root)
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if mode.startswith("a") else os.O_TRUNC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP or os.path.islink(path):
            raise refusal(path, root) from None
        raise
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding=encoding, newline=newline)

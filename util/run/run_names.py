"""A run name (`--name`) names a folder inside `--checkpoints_dir` and `--results_dir`, never the folder itself
nor anything outside it. Nested names (`group/run`) are folders inside folders and stay allowed; each part is
a plain folder name. The check reads only: a refused name has created or moved nothing."""
import os
import unicodedata

from util.command_line.cli import UsageError

ACCEPTED = ("a folder name such as --name facades_pix2pix (letters, digits, '_', '-', '.'; "
            "group/run for a folder inside a folder)")


def name_problem(name):
    """Why `name` cannot be a run name ('' when it can), from the text alone."""
    if not name:
        return "is empty"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "holds a control character"
    if "\\" in name:
        return "holds a backslash"
    if os.path.isabs(name):
        return "is an absolute path"
    if name.startswith("~"):
        return "starts with '~' (a home folder)"
    parts = name.split("/")
    if ".." in parts:
        return "holds a '..' part"
    if "." in parts:
        return "holds a '.' part (it names the folder itself)"
    if "" in parts:
        return "holds an empty part (a leading, trailing or doubled '/')"
    return ""


def run_path(base, name, base_flag):
    """`<base>/<name>` once `name` is a valid run name that stays inside `base` (symbolic links resolved); a
    UsageError naming the flag, the problem and an accepted form otherwise."""
    problem = name_problem(name)
    path = os.path.join(base, name) if not problem else None
    if path is not None:
        root, real = os.path.realpath(base), os.path.realpath(path)
        if real == root or os.path.commonpath([root, real]) != root:
            problem = f"resolves to {real}, outside {base_flag} {base} (through a symbolic link)"
    if problem:
        raise UsageError(f"--name {name!r} {problem}: a run name must name a folder inside {base_flag}. Use "
                         f"{ACCEPTED}; {base_flag} itself may be any path")
    return path


def check_path_part(value, flag, accepted):
    """A flag that becomes one part of a path (`--phase`, `--epoch`) names a plain file or folder name: no
    separator, no '.' or '..', not absolute. A UsageError naming the flag and an accepted form otherwise; it
    reads only."""
    text = str(value)
    problem = name_problem(text) or ("holds a '/' (one name, not a path)" if "/" in text else "")
    if problem:
        raise UsageError(f"{flag} {text!r} {problem}: it becomes part of a file or folder name inside the run's "
                         f"folders. Use {accepted}")
    return text

"""Argument types that parse properly from the shell.

argparse's `type=bool` treats any non-empty string as True and `type=tuple` splits a string into
characters; these helpers are what every flag in the project uses instead.
"""
import argparse

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}
BOOL_WORDS = _TRUE | _FALSE  # what may follow a boolean flag


def str2bool(value):
    """'true'/'false' (and yes/no, on/off, 1/0, any case) -> bool."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def int_tuple(value):
    """'1,2,4,8' or '1 2 4 8' or '(1, 2, 4, 8)' -> (1, 2, 4, 8)."""
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    cleaned = str(value).strip().strip("()[]")
    parts = [p for p in cleaned.replace(",", " ").split() if p]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4,8, got {value!r}")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,2,4,8, got {value!r}") from None


def gpu_ids(value):
    """'0,1' -> [0, 1]; '-1' -> [] (CPU)."""
    ids = [int(v) for v in str(value).replace(" ", "").split(",") if v != ""]
    return [i for i in ids if i >= 0]


def add_bool_flag(group, name, default=False, help="", **kwargs):
    """A boolean flag usable as `--flag`, `--flag true` or `--flag false` (`kwargs`: e.g. the flag's lifetime)."""
    group.add_argument(name, type=str2bool, nargs="?", const=True, default=default, help=help, **kwargs)

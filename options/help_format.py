"""`--help` a person can read: a short usage line, booleans shown as `--flag`, one default per flag, written the
way it is typed (`1,2,4,8`, not `(1, 2, 4, 8)`), and nothing for flags whose default is "off" or "none"."""
import argparse
import shutil

from util.command_line.arg_types import str2bool

WIDTH = 100


def typed(value):
    """A default as it would be typed on the command line."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if value == float("inf"):
        return "all"
    return str(value)


def is_bool_flag(action):
    return action.nargs == "?" and action.type is str2bool


class HelpFormatter(argparse.HelpFormatter):
    def __init__(self, prog):
        width = min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)
        super().__init__(prog, max_help_position=30, width=width)

    def _format_action_invocation(self, action):
        if is_bool_flag(action):  # `--verbose`, not `--verbose [VERBOSE]` (`--verbose false` still works)
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)

    def _get_default_metavar_for_optional(self, action):
        if action.type is int:
            return "N"
        if action.type is float:
            return "X"
        if action.dest.endswith("dir") or action.dest == "dataroot":
            return "DIR"
        return action.dest.upper() if len(action.dest) <= 10 else "VALUE"

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default in ("", [], ()) or default == argparse.SUPPRESS
                or "default" in text.lower() or not action.option_strings):
            return text
        if is_bool_flag(action):
            return f"{text} (on by default; {action.option_strings[0]} false turns it off)"
        shown = " ".join(map(str, default)) if action.nargs in ("+", "*") else typed(default)
        return f"{text} (default: {shown.replace('%', '%%')})"

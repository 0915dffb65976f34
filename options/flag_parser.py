"""argparse with errors a user can act on: one line instead of a usage dump, "did you mean ...?" for a typo or
an abbreviation (flags are never abbreviated), and a flag the chosen model does not use named as such, with the
models it belongs to, instead of being accepted and ignored."""
import argparse
import difflib

from util.command_line import commands
from util.command_line.cli import UsageError
from util.command_line.flags import INVOCATION, Flag, FlagTable, Options


class _Declaring:
    """`add_argument(..., lifetime=...)`: every flag is declared with its lifetime (util.command_line.flags),
    recorded in the parser's table with the owner that declared it. `shown_default` is how docs/flags.md shows a
    default that depends on the machine."""

    def add_argument(self, *args, lifetime=None, shown_default=None, **kwargs):
        table_parser = getattr(self, "_table_parser", self)
        if kwargs.get("action") == "help":
            lifetime = INVOCATION
        if lifetime is None:
            raise TypeError(f"flag {args[0]} is declared without a lifetime: pass lifetime= one of "
                            f"util.command_line.flags.LIFETIMES")
        action = super().add_argument(*args, **kwargs)
        if action.option_strings:
            table_parser.flag_table.add(Flag(action.dest, action.option_strings[-1], table_parser.owner, lifetime,
                                             action.default, action.help or "", getattr(self, "title", None) or "",
                                             shown_default))
        return action


class _Group(_Declaring, argparse._ArgumentGroup):
    pass


class FlagParser(_Declaring, argparse.ArgumentParser):
    """The options' parser. `not_for_model` maps flags the model does without (removed from the parser, so
    `--help` does not show them) to the model's name; `model_flags` are the flags of the model's own group."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--crop 64` is not silently taken as --crop_size
        self.flag_table = FlagTable()
        self.owner = "shared"  # who declares the flags added next: "model atme", "dataset aligned"
        super().__init__(*args, **kwargs)
        self.not_for_model = {}
        self.model_name = None
        self.flag_owners = lambda flag: []  # the models that have `flag` (set by the options)

    def add_argument_group(self, *args, **kwargs):
        group = _Group(self, *args, **kwargs)
        group._table_parser = self
        self._action_groups.append(group)
        return group

    def error(self, message):
        raise UsageError(message, help_hint=self.help_hint())

    def help_hint(self):
        model = ["--model", self.model_name] if self.model_name else []
        entry = {"train.py": "train", "test.py": "test"}.get(self.prog)
        shown = commands.command(entry, model + ["--help"]) if entry else f"{self.prog} {' '.join(model)} --help"
        return f"`{shown}` lists the flags"

    def remove_flags(self, dests, model_name):
        """Take the flags of `dests` out of the parser: the model `model_name` does not use them."""
        self.model_name = model_name
        for action in [a for a in self._actions if a.dest in dests]:
            self._actions.remove(action)
            for group in self._action_groups:
                if action in group._group_actions:
                    group._group_actions.remove(action)
            for option in action.option_strings:
                self._option_string_actions.pop(option, None)
                self.not_for_model[option] = model_name
            self._defaults.pop(action.dest, None)
            self.flag_table.remove(action.dest)

    def parse_known_args(self, args=None, namespace=None):
        if namespace is None:
            namespace = Options()
            namespace.flag_table = self.flag_table
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        opt, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.refuse_unknown(unknown)
        return opt

    def refuse_unknown(self, unknown):
        flags = [token.split("=", 1)[0] for token in unknown if token.startswith("-")]
        if not flags:
            self.error(f"unexpected argument(s) {' '.join(unknown)}: every value follows its flag")
        flag = flags[0]
        owners = [name for name in self.flag_owners(flag) if name != self.model_name]
        whose = f"--model {' or --model '.join(owners)}" if owners else ""
        if flag in self.not_for_model:
            model = self.not_for_model[flag]
            belongs = f"; it is a flag of {whose}" if owners else ""
            raise UsageError(f"{flag} is not a flag of --model {model}, which does not use it{belongs}.\n"
                             f"Drop {flag}, or pick the model it belongs to.", help_hint=self.help_hint())
        if owners and self.model_name:
            raise UsageError(f"{flag} is a flag of {whose}, not of --model {self.model_name}.\n"
                             f"Drop {flag}, or train with {whose}.", help_hint=self.help_hint())
        known = [option for option in self._option_string_actions if option.startswith("--")]
        longer = [option for option in known if option.startswith(flag)][:3]
        if longer:  # an abbreviation: argparse would have guessed; here the full name is asked for
            self.error(f"unknown flag {flag} (flags are not abbreviated); did you mean {' or '.join(longer)}?")
        close = difflib.get_close_matches(flag, known, n=3, cutoff=0.75)
        suggestion = f"; did you mean {' or '.join(close)}?" if close else ""
        self.error(f"unknown flag {flag}{suggestion}")

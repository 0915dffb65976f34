"""argparse with errors a user can act on: one line instead of a usage dump, "did you mean ...?" for a typo,
and a flag the chosen model does not use named as such instead of being accepted and ignored."""
import argparse
import difflib

from util.cli import UsageError


class FlagParser(argparse.ArgumentParser):
    """The options' parser. `not_for_model` maps flags the model does without (removed from the parser, so
    `--help` does not show them) to the model's name; `model_flags` are the flags of the model's own group."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.not_for_model = {}
        self.model_name = None

    def error(self, message):
        raise UsageError(message, help_hint=self.help_hint())

    def help_hint(self):
        model = f" --model {self.model_name}" if self.model_name else ""
        return f"`python {self.prog}{model} --help` lists the flags"

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
        if flag in self.not_for_model:
            model = self.not_for_model[flag]
            raise UsageError(f"{flag} is not a flag of --model {model}, which does not use it (and would silently "
                             f"ignore it): drop it, or pick the model it belongs to", help_hint=self.help_hint())
        known = [option for option in self._option_string_actions if option.startswith("--")]
        close = difflib.get_close_matches(flag, known, n=3, cutoff=0.75)
        suggestion = f"; did you mean {' or '.join(close)}?" if close else ""
        self.error(f"unknown flag {flag}{suggestion}")

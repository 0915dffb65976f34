"""A flag's lifetime: how long the value typed for it holds. Every flag is declared with one, where its owner
declares it (`group.add_argument("--dim", ..., lifetime=ARCHITECTURE)` in the options, a model's or a data
layout's `modify_commandline_options`), and the options' parser keeps them in one table (`FlagTable`) that the
parser, `--help`, the resume, test.py's stored-option inheritance, the refusals and docs/flags.md all read.
"""
import argparse
from dataclasses import dataclass

ARCHITECTURE = "architecture"
LOSS = "loss"
DATA = "data"
RUN = "run"
INVOCATION = "invocation"

LIFETIMES = {
    ARCHITECTURE: "defines the networks: stored with the run; a resume refuses a change, naming the run's value; "
                  "test.py and the export take it from the run (a contradicting value is refused)",
    LOSS: "defines the loss (and what convergence.csv records): stored; a resume refuses a change",
    DATA: "the run's data and how an image becomes the network's input (and test-time settings that follow the "
          "run): stored; a resume may change it (one WARNING, old -> new); test.py takes it from the run unless "
          "typed",
    RUN: "a setting of the training run (schedule, learning rate, display, batch size, speed): stored; a resume "
         "may change it (one WARNING, old -> new); test.py does not take it from the run",
    INVOCATION: "a property of this one command (which run, which checkpoint, one-shot actions): never stored, "
                "never taken from the run; a later resume does not repeat it",
}
FIXED_ON_RESUME = (ARCHITECTURE, LOSS)
TAKEN_BY_TEST = (ARCHITECTURE, DATA)


@dataclass
class Flag:
    dest: str
    option: str  # as typed, e.g. --dim_mults
    owner: str  # "shared", "model atme", "dataset aligned"
    lifetime: str
    default: object
    help: str
    group: str
    shown_default: str = None  # how docs/flags.md shows a default that depends on the machine


class FlagTable:
    """The flags of one parser by dest, with their owner and lifetime."""

    def __init__(self):
        self.flags = {}

    def add(self, flag):
        if flag.lifetime not in LIFETIMES:
            raise ValueError(f"flag {flag.option} ({flag.owner}) declares lifetime {flag.lifetime!r}; one of: "
                             f"{', '.join(LIFETIMES)}")
        self.flags[flag.dest] = flag

    def remove(self, dest):
        self.flags.pop(dest, None)

    def lifetime(self, dest):
        flag = self.flags.get(dest)
        return flag.lifetime if flag else None

    def names(self, *lifetimes):
        """The dests whose lifetime is one of `lifetimes`, in declaration order."""
        return tuple(dest for dest, flag in self.flags.items() if flag.lifetime in lifetimes)

    def __contains__(self, dest):
        return dest in self.flags

    def __iter__(self):
        return iter(self.flags.values())


class Options(argparse.Namespace):
    """The parsed options. `flag_table` rides along outside the namespace's values, so `vars(opt)` (what is
    stored and shown) holds the flags only, and a model can ask which of them define its networks."""

    __slots__ = ("flag_table",)


def architecture_flags(opt):
    """The dests of `opt` that define the networks (() for options built without the table, e.g. by hand)."""
    table = getattr(opt, "flag_table", None) if isinstance(opt, Options) else None
    return table.names(ARCHITECTURE) if table is not None else ()

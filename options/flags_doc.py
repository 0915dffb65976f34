"""docs/flags.md, made from the flag table: one row per flag of train.py and test.py with its owner, default,
lifetime and help, as the parsers declare them. tests/test_flag_table.py fails when the page is not what this
makes.

    python -m options.flags_doc            write docs/flags.md
    python -m options.flags_doc --check    exit 1 when docs/flags.md is out of date
"""
import os
import sys

if not __package__:  # run as `python options/flags_doc.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from options.flag_parser import FlagParser
from options.help_format import typed
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.command_line.flags import LIFETIMES
from util.command_line.registry import REPO_ROOT, available_names

PAGE = os.path.join(REPO_ROOT, "docs", "flags.md")
HEADER = """# Every flag, with its lifetime

What this page is for: each flag of `train.py` and `test.py`, who declares it, its default and its lifetime,
the rule for how long a typed value holds. It is made from the declarations themselves
(`python -m options.flags_doc`; a test fails when it is out of date), so it cannot drift from the code.
`python train.py --model M --help` shows the same flags for one model.

| lifetime | what it means |
| --- | --- |
"""


def _cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(value):
    if value is None or value == "":
        return ""
    return f"`{typed(value)}`"


def _parsers(options_class):
    """{model: parser} for every model, each with its default data layout."""
    parsers = {}
    for model in available_names("models", "_model"):
        options = options_class()
        parsers[model] = options.build_parser(["--model", model])
    return parsers


def _section(title, options_class):
    parsers = _parsers(options_class)
    shared, own = {}, {}
    for model, parser in parsers.items():
        for flag in parser.flag_table:
            if flag.option == "--help":
                continue
            if flag.owner == "shared":
                shared.setdefault(flag.dest, flag)
            else:
                own.setdefault((flag.owner, flag.dest), (flag, parser.get_default(flag.dest)))
    order = list(options_class().initialize(FlagParser()).flag_table.flags)
    lines = [f"## {title}", "", "| flag | owner | default | lifetime | what it does |",
             "| --- | --- | --- | --- | --- |"]
    for dest in sorted(shared, key=lambda d: order.index(d) if d in order else len(order)):
        flag = shared[dest]
        if flag.shown_default:
            shown = flag.shown_default
        else:
            shown = _default(flag.default)
            changed = [f"{m}: {_default(p.get_default(dest))}" for m, p in parsers.items()
                       if dest in p.flag_table and _default(p.get_default(dest)) != shown]
            shown += f" ({', '.join(changed)})" if changed else ""
        unused = [m for m, p in parsers.items() if dest not in p.flag_table]
        owner = "shared" + (f" (not {', '.join(unused)})" if unused else "")
        lines.append(f"| `{flag.option}` | {_cell(owner)} | {_cell(shown)} | {flag.lifetime} | {_cell(flag.help)} |")
    for (owner, _), (flag, default) in sorted(own.items(), key=lambda item: item[0][0]):
        lines.append(f"| `{flag.option}` | {_cell(owner)} | {_cell(_default(default))} | {flag.lifetime} | "
                     f"{_cell(flag.help)} |")
    return "\n".join(lines) + "\n"


def page():
    lifetimes = "".join(f"| `{name}` | {_cell(text)} |\n" for name, text in LIFETIMES.items())
    return (HEADER + lifetimes + "\n" + _section("train.py", TrainOptions) + "\n" + _section("test.py", TestOptions))


def main(args=None):
    args = sys.argv[1:] if args is None else list(args)
    text = page()
    if "--check" in args:
        current = open(PAGE).read() if os.path.isfile(PAGE) else ""
        if current != text:
            print(f"{PAGE} is out of date: run `python -m options.flags_doc`", file=sys.stderr)
            return 1
        return 0
    with open(PAGE, "w") as handle:
        handle.write(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

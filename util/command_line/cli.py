"""Entry-point wrapper: errors a user can act on are printed as a short message, not a traceback: what is wrong
on the first line, what to do on the next ones (a command to type stays on one line of its own)."""
import logging
import os
import re
import sys
import textwrap

USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, OSError)
WIDTH = 100
# The first sentence of a long message says what is wrong; the rest, what to do.
# A line that is a command to paste (util.command_line.commands builds them): kept whole.
COMMAND_LINE = re.compile(r"\s*([A-Z_]+=\S+ )*([\w.~/-]*/)?(python3?|bash|torchrun) ")
_SENTENCE_END = (re.compile(r"\.\s+(?=[A-Z`(-])"), re.compile(r";\s+"), re.compile(r":\s+"))


class UsageError(ValueError):
    """A command line that cannot be run as given (a bad or unknown flag); `help_hint` says where the flags are."""

    def __init__(self, message, help_hint=None):
        super().__init__(message)
        self.help_hint = help_hint


def _wrap(text, width):
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


def format_error(prog, message, width=WIDTH):
    """`prog: error: <what is wrong>` on the first line, and the advice under it wrapped at `width`; lines that
    start with a command (`  python ...`, `  bash ...`) are left whole so they can be copied."""
    paragraphs = str(message).split("\n")
    head, rest = paragraphs[0], paragraphs[1:]
    first = f"{prog}: error: {head}"
    if len(first) > width:
        for pattern in _SENTENCE_END:
            match = pattern.search(head, 20)
            if match and match.start() < len(head) - 1:
                rest.insert(0, head[match.end():])
                first = f"{prog}: error: {head[:match.end()].rstrip()}"
                break
    # What is wrong stays whole on the first line (its paths and values can be searched for and copied).
    lines = [first]
    for paragraph in rest:
        if COMMAND_LINE.match(paragraph):
            lines.append(paragraph)
        else:
            lines += _wrap(paragraph, width)
    return "\n".join(lines)


def _shows_traceback_hint(err):
    """Whether an error may be a fault of the program rather than of the command: refusals (a flag, a run folder,
    a missing file, a bad value) are not."""
    from util.run.run_folder import RunFolderError
    if getattr(err, "refusal", False):  # a file that failed a check (util.run.integrity, .checkpoint): it says why
        return False
    return not isinstance(err, (UsageError, RunFolderError, FileNotFoundError, ValueError))


def run_main(main):
    """Call `main()` and exit with its return code; user errors exit 2 with their message on stderr.

    `--verbose` on the command line (or RUN_TRACEBACK=1) keeps the full traceback.
    """
    prog = os.path.basename(sys.argv[0])
    try:
        code = main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as err:
        if "--verbose" in sys.argv or os.environ.get("RUN_TRACEBACK") == "1":
            raise
        logging.getLogger(prog).debug("error", exc_info=True)
        hint = err.help_hint if isinstance(err, UsageError) else None
        if hint is None and _shows_traceback_hint(err):
            hint = "run with --verbose for the traceback"
        print(format_error(prog, err) + (f"\n({hint})" if hint else ""), file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)

"""Entry-point wrapper: errors a user can act on are printed as one clear message, not a traceback."""
import logging
import os
import sys

USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, OSError)


class UsageError(ValueError):
    """A command line that cannot be run as given (a bad or unknown flag); `help_hint` says where the flags are."""

    def __init__(self, message, help_hint=None):
        super().__init__(message)
        self.help_hint = help_hint


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
        hint = err.help_hint if isinstance(err, UsageError) else "run with --verbose for the traceback"
        print(f"{prog}: error: {err}\n({hint or 'run with --help for the flags'})", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)

"""Shared fixtures: a tiny demo data set, and helpers that run the CLIs in this process or as subprocesses.

Tests that start a process, a browser or a compiler are marked `slow` (pytest.ini): the README's test command
runs the rest by default and everything with `--full`. tier_guard.py fails a test of the fast tier that does.
"""
import contextlib
import hashlib
import io
import os
import shlex
import subprocess
import sys

import pytest

from datasets.make_demo_dataset import make_demo_dataset
from tier_guard import pytest_runtest_setup, pytest_runtest_teardown, pytest_sessionstart  # noqa: F401  (the fast tier's guard)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """torch runs on one thread in the test process, from before the first module fixture (restored at the end):
    the tests' networks are tiny, and on a busy 2-core machine a second OpenMP thread waiting at each barrier made
    an ATME forward of a 32x32 batch 10-20 times slower (a test took 0.6-1.2 s against 13-14 s, OMP_NUM_THREADS=1
    against 2, side by side). Subprocesses of the slow tier take OMP_NUM_THREADS from `run_cli`."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Each test starts and ends on one torch thread, whatever the one before set."""
    import torch
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A 32x32 demo data set in the aligned layout (train/val/test), shared by the whole session."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    make_demo_dataset(str(out), size=32, n_train=8, n_val=4, n_test=4, seed=0)
    return str(out)


@pytest.fixture(autouse=True)
def restore_logging():
    """CLIs run in this process set logger levels and handlers (e.g. the benchmarks quieten `models`); each test
    starts from the levels and root handlers it found."""
    import logging
    levels = {name: logger.level for name, logger in logging.Logger.manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    yield
    # Only the levels that changed: each setLevel clears the cache of every logger (hundreds, with torch loaded), and
    # setting them all after each test cost 14 s of a 139 s profile of the fast tier.
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level != levels.get(name, logging.NOTSET):
            logger.setLevel(levels.get(name, logging.NOTSET))
    root.setLevel(root_level)
    for handler in list(root.handlers):
        if handler not in root_handlers:
            root.removeHandler(handler)
            handler.close()


def run_cli(script, *args, cwd=None, timeout=600, check=True, env=None):
    """Run `python <script> args...` (or `python -m <module> ...` when `script` is "-m") from the repository root
    in a subprocess; return the CompletedProcess."""
    full_env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    target = ["-m", str(args[0])] if script == "-m" else [os.path.join(ROOT, script)]
    rest = args[1:] if script == "-m" else args
    proc = subprocess.run([sys.executable, *target, *map(str, rest)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\n"
                             f"STDERR:\n{proc.stderr[-4000:]}")
    return proc


def stored_train_options(args):
    """TrainOptions parsed from `args` and written to the run folder, as train.py does once it owns the folder."""
    from options.train_options import TrainOptions
    options = TrainOptions()
    opt = options.parse([str(a) for a in args])
    options.save(opt)
    return opt


def in_process_loading(args):
    """`args` with `--num_threads 0` unless they set it: the data then loads in this process, as loader workers are
    processes (the slow tier's; tier_guard.py)."""
    return args if any(str(a).split("=")[0] == "--num_threads" for a in args) else (*args, "--num_threads", "0")


def train_main(*args, **kwargs):
    """train.py in this process (see `run_main`), loading data in this process unless `args` set --num_threads."""
    import train
    return run_main(train.main, *in_process_loading(args), **kwargs)


def test_main(*args, **kwargs):
    """test.py in this process (see `run_main`), loading data in this process unless `args` set --num_threads."""
    import test
    return run_main(test.main, *in_process_loading(args), **kwargs)


test_main.__test__ = False  # a helper, not a test


class InProcessResult:
    """What `run_main` returns: the exit code and everything written to stdout and stderr."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_main(main, *args, check=True):
    """Call a CLI's `main(args)` in this process through util.command_line.cli.run_main, as its `__main__`
    would: the exit code, the log lines and the one-line error a user sees, without starting a Python process."""
    from util.command_line import cli
    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args]
    old_argv = sys.argv
    sys.argv = ["main"] + argv
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.run_main(lambda: main(argv))
                code = 0
            except SystemExit as stop:
                code = stop.code or 0
    finally:
        sys.argv = old_argv
        import logging
        root = logging.getLogger()
        for handler in list(root.handlers):  # the CLI's handlers point at the captured streams
            if isinstance(handler, logging.FileHandler) or getattr(handler, "stream", None) in (out, err):
                root.removeHandler(handler)
                handler.close()
    result = InProcessResult(code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"main exited {code}\nSTDOUT:\n{result.stdout[-4000:]}\nSTDERR:\n{result.stderr[-4000:]}")
    return result


def printed_commands(text):
    """The commands a message gives a person to paste (the lines util.command_line.commands builds)."""
    from util.command_line.cli import COMMAND_LINE
    return [line.strip() for line in text.splitlines() if COMMAND_LINE.fullmatch(line.rstrip() + " ") or
            COMMAND_LINE.match(line)]


def script_args(command, script):
    """The arguments a printed `command` gives `script` (train.py, test.py, or a module run with -m), checking
    that it runs the interpreter running the tests, as util.command_line.commands names it."""
    from util.command_line.commands import interpreter
    argv = shlex.split(command)
    while argv and "=" in argv[0] and not argv[0].startswith("-"):
        argv.pop(0)  # VAR=value in front
    assert argv[0] == interpreter(), command
    if argv[1] == "-m":
        assert argv[2] == script, command
        return argv[3:]
    assert os.path.basename(argv[1]) == script, command
    return argv[2:]


def folder_state(root, mtimes=False, skip=()):
    """{relative path: what it is} of everything under `root`, links not followed: 'folder', 'link -> <target>',
    or a file's SHA-256 (with its modification time in ns when `mtimes`). Folders in `skip` (full paths) are not
    read. What a command that must change nothing is compared by, before and after."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
        for name in dirs + files:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, root)
            if os.path.islink(path):
                found[key] = "link -> " + os.readlink(path)
            elif os.path.isdir(path):
                found[key] = "folder"
            else:
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                found[key] = (digest, os.lstat(path).st_mtime_ns) if mtimes else digest
    return found

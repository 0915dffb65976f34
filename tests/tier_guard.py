"""The fast tier stays in one process: a test not marked `slow` that starts a process (subprocess, multiprocessing,
fork, a shell), sends a signal or calls torch.compile fails, and the failure tells its author what to do.

conftest.py installs the hooks below. The guard is on from the first fixture a fast test sets up (module and
session fixtures included) to the last one it tears down. Code under test may catch the error (it is an OSError, as
a process that cannot start would raise); the test then still fails at teardown with the same message.
"""
import multiprocessing.process
import os
import signal
import subprocess

import pytest
import torch  # imported here, outside any test: its import asks ldconfig and ld where libdl is

ADVICE = ("{what} in {test}, a test of the fast tier, which stays in one process: mark the test "
          "@pytest.mark.slow (it then runs with `bash scripts/run_tests.sh --full`), or check the same behaviour "
          "in-process at a smaller size")
_LEAKS = pytest.StashKey()
_PATCHES = pytest.StashKey()


class SlowTestInFastTier(OSError):
    """A fast-tier test did what only the slow tier may do."""


def _install(item):
    leaks = item.stash.setdefault(_LEAKS, [])

    def refuse(what):
        message = ADVICE.format(what=what, test=item.nodeid)
        leaks.append(message)
        raise SlowTestInFastTier(message)

    real_kill = os.kill

    def kill(pid, sig):
        if sig == 0:  # a liveness check sends nothing
            return real_kill(pid, sig)
        refuse(f"os.kill({pid}, {signal.Signals(sig).name})")

    patch = pytest.MonkeyPatch()
    patch.setattr(subprocess.Popen, "__init__", lambda self, args, *a, **k: refuse(f"a subprocess ({args!r})"))
    patch.setattr(multiprocessing.process.BaseProcess, "start",
                  lambda self: refuse(f"a multiprocessing process ({self.name})"))
    patch.setattr(os, "kill", kill)
    for name in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp", "killpg"):
        if hasattr(os, name):
            patch.setattr(os, name, lambda *a, _name=name, **k: refuse(f"os.{_name}{a!r}"))
    for name in ("raise_signal", "pthread_kill"):
        if hasattr(signal, name):
            patch.setattr(signal, name, lambda *a, _name=name, **k: refuse(f"signal.{_name}{a!r}"))
    patch.setattr(torch, "compile", lambda *a, **k: refuse("torch.compile"))
    item.stash[_PATCHES] = patch


def pytest_sessionstart(session):
    """matplotlib builds its font cache with `fc-list` the first time it is imported on a machine: before any test."""
    try:
        import matplotlib.font_manager  # noqa: F401
    except ImportError:
        pass


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("slow") is None:
        _install(item)
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        patch = item.stash.get(_PATCHES, None)
        if patch is not None:
            patch.undo()
            del item.stash[_PATCHES]
        leaks = item.stash.get(_LEAKS, [])
        if leaks:
            pytest.fail("\n".join(dict.fromkeys(leaks)), pytrace=False)

"""The two test tiers: a test not marked slow that starts a process, sends a signal or compiles fails, with advice
(tier_guard.py); a slow test may."""
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
import torch

from tier_guard import _LEAKS, SlowTestInFastTier

ADVICE = r"mark the test @pytest.mark\.slow"


@pytest.fixture
def leaks(request):
    """What the guard recorded for this test; cleared at the end, as these leaks are the test's own subject."""
    recorded = request.node.stash[_LEAKS]
    yield recorded
    recorded.clear()


@pytest.mark.parametrize("start", [
    lambda: subprocess.run([sys.executable, "-c", "pass"]),
    lambda: subprocess.check_output(["true"]),
    lambda: multiprocessing.get_context("spawn").Process(target=print).start(),
    lambda: os.system("true"),
    lambda: os.kill(os.getpid(), signal.SIGUSR1),
    lambda: signal.raise_signal(signal.SIGUSR1),
    lambda: torch.compile(torch.nn.Identity()),
], ids=["subprocess.run", "check_output", "multiprocessing", "os.system", "os.kill", "raise_signal",
        "torch.compile"])
def test_a_fast_test_that_starts_a_process_signals_or_compiles_is_told_to_mark_itself_slow(start, leaks):
    with pytest.raises(SlowTestInFastTier, match=ADVICE) as refused:
        start()
    assert "test_tiers.py::" in str(refused.value)  # names the test
    # Code under test that catches the error does not hide the leak: the test still fails at its teardown.
    assert leaks == [str(refused.value)]


def test_a_liveness_check_is_not_a_signal(leaks):
    os.kill(os.getpid(), 0)
    assert leaks == []


@pytest.mark.slow
def test_a_slow_test_may_start_a_process():
    assert subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout == "42\n"

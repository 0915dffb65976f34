"""train() turns Ctrl-C and SIGTERM into a clean stop while it trains, and gives the caller its own handlers
back however it returns (an in-process caller: tests, notebooks, sweep drivers)."""
import os
import signal

import pytest

from conftest import train_main

pytestmark = pytest.mark.slow  # real signals to this process

ARGS = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance", "--load_size", "36",
        "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1",
        "--display_id", "0", "--no_html", "--n_epochs", "1", "--n_epochs_decay", "0"]


@pytest.fixture
def own_handlers():
    """Handlers of a caller, installed for the test and put back after it."""
    seen = []
    mine = {sig: (lambda signum, frame: seen.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    before = {sig: signal.signal(sig, handler) for sig, handler in mine.items()}
    yield mine, seen
    for sig, handler in before.items():
        signal.signal(sig, handler)


def test_training_gives_the_callers_signal_handlers_back(tmp_path, demo_root, own_handlers):
    mine, seen = own_handlers
    train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "done", *ARGS)
    assert {sig: signal.getsignal(sig) for sig in mine} == mine
    os.kill(os.getpid(), signal.SIGINT)
    assert seen == [signal.SIGINT]  # the caller's Ctrl-C works again


def test_a_stopped_training_gives_the_handlers_back(tmp_path, demo_root, own_handlers, monkeypatch):
    from models.base_model import BaseModel
    mine, seen = own_handlers
    real, calls = BaseModel.optimizer_step, [0]

    def interrupted(self, *a, **k):  # Ctrl-C during the third optimiser step
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *a, **k)

    monkeypatch.setattr(BaseModel, "optimizer_step", interrupted)
    result = train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "stopped", *ARGS,
                        "--n_epochs", "3", check=False)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-2000:]
    assert seen == []  # training took the signal ...
    assert {sig: signal.getsignal(sig) for sig in mine} == mine  # ... and gave the handlers back
    assert (tmp_path / "stopped" / "latest_train_state.pth").is_file()

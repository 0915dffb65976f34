"""The pages say what a run is and how it ended: a visible heading with the run, its model and the planned epochs;
"finished 8 of 8 epochs", "stopped by SIGINT at epoch 3 of 6; resumable with <command>" (a command that works,
followed here) or "failed: <message>"; positions named by images seen, never by an ambiguous "step"."""
import html
import os
import re
import signal
from collections import OrderedDict

import pytest
import torch

from conftest import printed_commands, script_args, test_main, train_main
from util.run import run_outcome
from util.dashboard import Dashboard

TINY = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--load_size", "36", "--crop_size", "32",
        "--batch_size", "2", "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1", "--print_freq", "2",
        "--display_id", "0", "--save_latest_freq", "1000", "--n_epochs_decay", "0"]


def visuals():
    return OrderedDict(real_A=torch.zeros(1, 3, 8, 8), fake_B=torch.ones(1, 3, 8, 8), real_B=-torch.ones(1, 3, 8, 8))


def page_of(run_dir):
    return (run_dir / "web" / "index.html").read_text()


def heading(page):
    return re.findall(r"<h2>(.*?)</h2>", page)


def test_outcome_texts():
    assert run_outcome.finished(8, 8) == "finished 8 of 8 epochs"
    assert run_outcome.stopped(signal.SIGINT, 3, 6, "python train.py --continue_train") == \
        "stopped by SIGINT at epoch 3 of 6; resumable with python train.py --continue_train"
    assert run_outcome.stopped(signal.SIGTERM, 3, 6, "C", within_epoch=False) == \
        "stopped by SIGTERM after epoch 3 of 6; resumable with C"
    assert run_outcome.failed(ValueError("bad\n   input")) == "failed: bad input"
    assert run_outcome.failed(KeyboardInterrupt()) == "failed: KeyboardInterrupt"
    assert len(run_outcome.failed(RuntimeError("x" * 5000))) < 320


def test_the_page_heading_names_run_model_and_planned_epochs_and_the_status_the_position(tmp_path):
    dash = Dashboard(tmp_path, "facades_atme", display_id=0,
                     run_options={"model": "atme", "n_epochs": 5, "n_epochs_decay": 3, "lr": 2e-4})
    dash.epoch_snapshot(visuals(), 2, 1200)
    assert dash.flush(timeout=30)
    page = page_of(tmp_path)
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert len(heading(page)) == 1 and heading(page)[0] == title
    assert all(fact in title for fact in ("facades_atme", "atme", "8 epochs"))  # 5 + 3 planned
    status = [line for line in page.splitlines() if "running" in line]
    assert status and "epoch 2 of 8" in status[0] and "1,200 images" in status[0]
    assert "step" not in page.replace("_step", "")  # the views count images, never steps
    dash.close(outcome=run_outcome.finished(8, 8))
    page = page_of(tmp_path)
    assert "finished 8 of 8" in page and "epoch 2 of 8, 1,200 images" in page
    assert 'http-equiv="refresh"' not in page  # a finished run's page stops reloading


def test_a_resumed_page_starts_from_its_newest_snapshot(tmp_path):
    options = {"model": "pix2pix", "n_epochs": 2, "n_epochs_decay": 0}
    first = Dashboard(tmp_path, "r", display_id=0, run_options=options)
    first.epoch_snapshot(visuals(), 1, 8)
    first.close(outcome="stopped by SIGINT after epoch 1 of 2; resumable with python train.py --continue_train")
    assert re.search(r"Training stopped by SIGINT after epoch 1 of 2; resumable with:</p>\s*<pre>\s*<code>"
                     r"python train.py --continue_train</code>", page_of(tmp_path))
    again = Dashboard(tmp_path, "r", display_id=0, run_options=options)
    assert again.flush(timeout=30)
    assert "Training is running: epoch 1 of 2, 8 images seen." in page_of(tmp_path)
    again.close(outcome="finished 2 of 2 epochs")


def test_the_test_page_has_a_heading(tmp_path, demo_root):
    ck = tmp_path / "ck"
    trained = train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "head", *TINY, "--n_epochs", "1")
    # the progress bar counts batches, and says so; the views count images seen
    assert "4/4" in trained.stderr and "batch/s" in trained.stderr and "step" not in trained.stderr
    assert all(fact in heading(page_of(ck / "head"))[0] for fact in ("head", "pix2pix", "1 epoch"))
    assert "Training finished 1 of 1 epochs." in page_of(ck / "head")
    test_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--results_dir", tmp_path / "res", "--name", "head",
              "--model", "pix2pix", "--num_test", "2", "--gpu_ids", "-1", "--num_threads", "0")
    page = (tmp_path / "res" / "head" / "test_latest" / "index.html").read_text()
    assert all(fact in heading(page)[0] for fact in ("head", "pix2pix", "test split", "latest"))


def test_a_failure_is_on_the_page(tmp_path, demo_root, monkeypatch):
    import train

    def broken(*args, **kwargs):
        raise RuntimeError("the val split went away")
    monkeypatch.setattr(train, "validate", broken)
    ck = tmp_path / "ck"
    result = train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "fails", *TINY, "--n_epochs", "2",
                        "--val_freq", "1", check=False)
    assert result.returncode == 2 and "the val split went away" in result.stderr
    page = page_of(ck / "fails")
    assert "Training failed: the val split went away." in page and "Last view: epoch 1 of 2" in page


@pytest.mark.slow  # a real SIGINT to this process
def test_a_stop_says_how_to_resume_and_that_command_finishes_the_run(tmp_path, demo_root, monkeypatch):
    import train
    real_agreed = train.StopRequest.agreed
    calls = []

    def interrupted_at_the_second_step(self):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # caught by StopRequest's handler, as a Ctrl-C would be
        return real_agreed(self)
    monkeypatch.setattr(train.StopRequest, "agreed", interrupted_at_the_second_step)
    ck = tmp_path / "ck"
    result = train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "stopped", *TINY,
                        "--n_epochs", "2", check=False)
    assert result.returncode == 128 + signal.SIGINT
    page = page_of(ck / "stopped")
    found = re.search(r"Training stopped by SIGINT at epoch 1 of 2; resumable with:</p>\s*<pre>\s*<code>"
                      r"([^<]*)</code>", page)
    assert found, page
    monkeypatch.setattr(train.StopRequest, "agreed", real_agreed)
    command = html.unescape(found.group(1))
    # a new run on the name is refused with the same resume command as the page's
    refused = train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "stopped", *TINY, check=False)
    assert refused.returncode == 2 and printed_commands(refused.stderr)[0] == command, refused.stderr
    args = script_args(command, "train.py")
    assert args[-1] == "--continue_train" and "--dataroot" not in args  # the short form: the run has the rest
    train_main(*args)  # the advice, typed as shown
    page = page_of(ck / "stopped")
    assert "Training finished 2 of 2 epochs." in page and "resumable" not in page

"""Every stop saves: a Ctrl-C or SIGTERM agreed anywhere in an epoch (after its last step, during validation,
during the end-of-epoch saves) leaves a `latest` from which `--continue_train` finishes the run exactly as an
uninterrupted one, for each model. The stop is requested in this process, as the signal handler would."""
import signal

import pytest

import train
from conftest import train_main
from test_run_state import assert_same_run
from util.process.stop_request import StopRequest

MODELS = {
    "pix2pix": ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance"],
    "atme": ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8"],
    "segan": ["--model", "segan", "--ngf", "4", "--ndf", "4", "--netD", "n_layers", "--n_layers_D", "2", "--nz", "4",
              "--samples_per_input", "3"],
}
# Epoch 1 of 3 is not a --save_epoch_freq epoch and no `latest` is saved mid-epoch: only the stop's own save can
# make the run resumable from epoch 2.
COMMON = ["--load_size", "36", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
          "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--print_freq", "2", "--n_epochs", "2",
          "--n_epochs_decay", "1", "--save_latest_freq", "1000", "--save_epoch_freq", "5", "--val_freq", "1"]


def args(model, ck, name, demo_root):
    return ["--dataroot", demo_root, "--checkpoints_dir", str(ck), "--name", name, *MODELS[model], *COMMON]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_root):
    ck = tmp_path_factory.mktemp("uninterrupted")
    for model in MODELS:
        train_main(*args(model, ck, model, demo_root))
    return ck


def stop_at(owner, name, monkeypatch, epoch_of_call=lambda *a: True):
    """Replace `owner.name` by a version that requests a stop (as SIGINT would) when it is first called."""
    original = getattr(owner, name)
    fired = []

    def requesting(*a, **k):
        if not fired and epoch_of_call(*a):
            fired.append(1)
            StopRequest.active.request(signal.SIGINT)
        return original(*a, **k)
    monkeypatch.setattr(owner, name, requesting)
    return fired


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("where", ["after_last_step", "during_validation", "during_save"])
def test_a_stop_anywhere_at_the_end_of_an_epoch_resumes_exactly(reference, tmp_path, demo_root, monkeypatch, model,
                                                                   where):
    run = args(model, tmp_path, model, demo_root)
    with monkeypatch.context() as patch:
        if where == "after_last_step":  # the window between the last step and the epoch's saves
            from models.base_model import BaseModel
            fired = stop_at(BaseModel, "update_learning_rate", patch)
        elif where == "during_validation":
            fired = stop_at(train, "validate", patch)
        else:  # the end-of-epoch save of epoch 1 itself (ATME saves `latest` at every epoch end)
            fired = stop_at(train.Trainer, "save", patch, lambda self, tag, epoch, done: done == 0)
        stopped = train_main(*run, check=False)
    # pix2pix and SEGAN save at the end of epoch 3 only, the last: a stop there finds the run done (exit 0)
    done = where == "during_save" and model != "atme"
    assert fired and stopped.returncode == (0 if done else 128 + signal.SIGINT), stopped.stderr[-2000:]
    assert (stopped.stdout + stopped.stderr).count("SIGINT received") == 1
    resumed = train_main("--checkpoints_dir", tmp_path, "--name", model, "--continue_train")
    said = resumed.stdout + resumed.stderr
    assert "resuming from" in said
    if where != "during_save" or model == "atme":  # the stop came in epoch 1: the resume starts epoch 2
        assert "epoch 2, 0 images into it" in said, said[-2000:]
    assert_same_run(str(reference / model), str(tmp_path / model))


@pytest.mark.slow  # a real Ctrl-C to a process group with loader workers
def test_a_terminals_ctrl_c_is_answered_once_not_by_every_loader_worker(tmp_path, demo_root):
    import os
    import subprocess
    import sys
    import time
    from conftest import ROOT
    run = args("pix2pix", tmp_path, "ctrlc", demo_root)
    run[run.index("--num_threads") + 1] = "2"
    run[run.index("--n_epochs") + 1] = "200"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *map(str, run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    log_file = tmp_path / "ctrlc" / "loss_log.csv"
    deadline = time.time() + 240
    while time.time() < deadline and not (log_file.exists() and log_file.read_text().count("\n") > 3):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group, workers included
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    assert (out + err).count("SIGINT received") == 1, err[-3000:]
    assert (tmp_path / "ctrlc" / "train.log").read_text().count("SIGINT received") == 1

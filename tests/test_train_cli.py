"""train.py and test.py end to end on a tiny demo set: results, resume, interruption, bad input."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, run_cli, test_main, train_main

TINY = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--load_size", "36",
        "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--display_id", "0", "--seed", "0",
        "--print_freq", "2", "--display_freq", "4", "--update_html_freq", "4", "--save_latest_freq", "1000"]


def train(demo_root, ck, name, *extra, **kw):
    """train.py in this process."""
    return train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", name, *TINY, *extra, **kw)


def test_train_then_test_end_to_end(demo_root, tmp_path):
    ck, res = tmp_path / "ck", tmp_path / "res"
    train(demo_root, ck, "e2e", "--n_epochs", "1", "--n_epochs_decay", "1", "--val_freq", "1")
    run = ck / "e2e"
    val_rows = list(csv.DictReader(open(run / "val_log.csv")))
    assert [int(r["epoch"]) for r in val_rows] == [1, 2] and all(float(r["psnr"]) > 0 for r in val_rows)
    assert (run / "best_net_G.pth").exists()
    for name in ("latest_net_G.pth", "latest_net_D.pth", "2_net_G.pth", "latest_train_state.pth",
                 "train_opt.txt", "train_opt.json", "loss_log.csv", "convergence.csv", "web/index.html"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader(open(run / "convergence.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        assert abs(float(r["neg_L_GAN"]) - (float(r["D_real"]) + float(r["D_fake"]))) < 1e-4
    losses = list(csv.DictReader(open(run / "loss_log.csv")))
    assert losses and {"G_GAN", "G_L1", "D_real", "D_fake", "time_per_image", "data_time"} <= set(losses[0])

    test_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "e2e", "--results_dir", res)
    page = res / "e2e" / "test_latest" / "index.html"
    assert page.exists()
    images = os.listdir(res / "e2e" / "test_latest" / "images")
    assert len([f for f in images if "fake_B" in f]) == 4  # the whole test split by default
    # the images come from the trained weights: a freshly initialised G gives other outputs
    test_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "e2e", "--results_dir", res,
              "--num_test", "2", "--phase", "val")
    assert len([f for f in os.listdir(res / "e2e" / "val_latest" / "images") if "fake_B" in f]) == 2


def test_resume_continues_epoch_and_optimizer(demo_root, tmp_path):
    ck = tmp_path / "ck"
    train(demo_root, ck, "res", "--n_epochs", "1", "--n_epochs_decay", "2", "--save_epoch_freq", "1")
    state1 = torch.load(ck / "res" / "1_train_state.pth", weights_only=True)
    assert state1["epoch"] == 2 and state1["epoch_iter"] == 0
    # stop after epoch 1 by keeping only its state as latest, then resume to the end
    os.replace(ck / "res" / "1_train_state.pth", ck / "res" / "latest_train_state.pth")
    # a set assembled by hand no longer matches its checksum list: --no_verify loads it unchecked
    out = train(demo_root, ck, "res", "--n_epochs", "1", "--n_epochs_decay", "2", "--continue_train", "--no_verify")
    assert "resuming from" in out.stdout and "epoch 2" in out.stdout
    final = torch.load(ck / "res" / "latest_train_state.pth", weights_only=True)
    assert final["epoch"] == 4
    # Adam moments continued: the step count adds up over both runs (4 steps per epoch, 3 epochs)
    steps = [s["step"] for s in final["optimizers"][0]["state"].values()]
    assert all(int(s) == 12 for s in steps), steps
    # the linear decay went on where it stopped: after epoch 3 of 1+2 the rate is 2e-4 * (1 - 3/3) ... > 0 only before
    lr = final["optimizers"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(2e-4 * (1 - 3 / 3.0), abs=1e-12)
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(ck / "res" / "convergence.csv"))]
    assert epochs[-2:] == [2, 3]


@pytest.mark.slow
def test_sigint_saves_a_resumable_checkpoint(demo_root, tmp_path):
    ck = tmp_path / "ck"
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--dataroot", demo_root, "--checkpoints_dir", str(ck),
           "--name", "int", *TINY, "--n_epochs", "200", "--n_epochs_decay", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="2"))
    deadline = time.time() + 120
    while not (ck / "int" / "convergence.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, out
    assert "Traceback" not in out
    state = torch.load(ck / "int" / "latest_train_state.pth", weights_only=True)
    assert state["epoch"] >= 2
    out = train(demo_root, ck, "int", "--n_epochs", str(state["epoch"]), "--n_epochs_decay", "0", "--continue_train").stdout
    assert f"resuming from" in out
    assert torch.load(ck / "int" / "latest_train_state.pth", weights_only=True)["epoch"] == state["epoch"] + 1


def test_mismatching_checkpoint_lists_keys(demo_root, tmp_path):
    ck = tmp_path / "ck"
    train(demo_root, ck, "mm", "--n_epochs", "1", "--n_epochs_decay", "0")
    # test.py with another generator must explain, not crash with a raw state_dict error
    os.remove(ck / "mm" / "train_opt.json")
    proc = test_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "mm",
                     "--model", "pix2pix", "--netG", "resnet_6blocks", "--results_dir", tmp_path / "r", check=False)
    assert proc.returncode != 0
    assert "does not fit network G" in proc.stderr and "missing keys" in proc.stderr and "train_opt.txt" in proc.stderr
    assert (ck / "mm" / "latest_net_G.pth").exists()


def test_unwritable_checkpoints_dir_is_named(demo_root, tmp_path):
    if os.geteuid() == 0:
        # root ignores permissions: make the run directory's path impossible instead
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where a folder should be")
        ck = blocker
    else:
        ck = tmp_path / "ro"
        ck.mkdir()
        ck.chmod(0o500)
    proc = train(demo_root, ck, "x", "--n_epochs", "1", "--n_epochs_decay", "0", check=False)
    assert proc.returncode != 0
    assert "--checkpoints_dir" in proc.stderr or "--checkpoints_dir" in proc.stdout


def test_missing_dataroot_is_named(tmp_path):
    proc = train_main("--dataroot", tmp_path / "nothing", "--checkpoints_dir", tmp_path / "ck",
                      "--name", "m", *TINY, check=False)
    assert proc.returncode != 0
    assert "--dataroot" in proc.stderr and str(tmp_path / "nothing") in proc.stderr


@pytest.mark.slow
def test_compile_trains_saves_plain_weights_and_times_the_first_step(demo_root, tmp_path):
    """--compile (torch.compile) trains, logs how long the compiling first step took, and saves checkpoints with
    the plain key names (no `_orig_mod.` prefix), so eager runs and test.py load them."""
    ck = tmp_path / "ck"
    proc = run_cli("train.py", "--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "compiled", *TINY, "--compile", "--n_epochs", "1", "--n_epochs_decay", "0")
    assert "first step:" in proc.stdout and "torch.compile" in proc.stdout
    state = torch.load(ck / "compiled" / "latest_net_G.pth", map_location="cpu", weights_only=True)
    assert state and not any(key.startswith("_orig_mod") for key in state)
    losses = list(csv.DictReader(open(ck / "compiled" / "loss_log.csv")))
    assert losses and all(float(r["G_L1"]) > 0 for r in losses)

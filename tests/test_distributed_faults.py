"""Faults in a run of several processes (2 CPU processes, gloo): a NaN on one rank stops every rank in the same
step with the same message; killing the launcher (any signal, SIGKILL included) or one worker leaves no process
behind and a run that resumes. All of them start processes: slow tier."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                 reason="torch.distributed with gloo is not available")]

TINY = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "none", "--no_dropout",
        "--load_size", "32", "--crop_size", "32", "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1",
        "--display_id", "0", "--no_html", "--batch_size", "2", "--print_freq", "1", "--save_epoch_freq", "1"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

# train.py with rank 1's generator loss turned into NaN from `POISON_AT` images on (rank 0's losses stay finite).
POISONED_TRAIN = r"""
import os, sys
sys.path.insert(0, {root!r})
from models.base_model import BaseModel
if os.environ.get("RANK") == "1":
    step = BaseModel.optimizer_step
    def poisoned(self, compute_loss, optimizer):
        if optimizer is self.optimizer_G and self._position[1] >= {poison_at}:
            return step(self, lambda: compute_loss() * float("nan"), optimizer)
        return step(self, compute_loss, optimizer)
    BaseModel.optimizer_step = poisoned
import train
from util.command_line.cli import run_main
run_main(train.main)
"""


def test_nan_on_one_rank_stops_all_ranks_in_the_same_step_with_one_message(demo_root, tmp_path):
    script = tmp_path / "poisoned_train.py"
    script.write_text(POISONED_TRAIN.format(root=ROOT, poison_at=12))  # epoch 2's second step (4 images a step)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), "--dataroot", demo_root, "--checkpoints_dir", str(tmp_path), "--name", "nan",
                           *TINY, "--n_epochs", "3", "--n_epochs_decay", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    out = proc.stdout + proc.stderr
    errors = [line[line.index("error: training"):] for line in out.splitlines() if "error: training diverged" in line]
    assert proc.returncode != 0 and len(errors) == 2, out[-6000:]
    assert errors[0] == errors[1], errors  # the same words on both ranks
    assert "G step was nan at epoch 2, 12 images into training (on rank 1 of 2)" in errors[0], errors[0]
    said = " ".join(out.split())  # the advice under the first line is wrapped: read each message as one line
    assert said.count("The newest checkpoint, 'latest' (epoch 2, 8 images), is intact") == 2, said
    # torchrun ends the other rank once the first has exited, so only the first exit code is certain.
    assert "exitcode  : 2" in out, out[-3000:]
    state = torch.load(tmp_path / "nan" / "latest_train_state.pth", map_location="cpu", weights_only=False)
    assert (state["epoch"], state["total_iters"]) == (2, 8)
    assert all(torch.isfinite(v).all() for net in state["networks"].values() for v in net.values()
               if v.is_floating_point())


def processes_of(marker):
    """pid -> environment of the live processes whose command line holds `marker` (zombies have none)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            if marker not in command:
                continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                pairs = [item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item]
        except OSError:
            continue
        environ = {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}
        environ["_command"] = command
        found[int(entry)] = environ
    return found


def wait_for(condition, what, guard=240):
    """Poll `condition` until it holds; `guard` seconds only keep a broken build from hanging the suite."""
    deadline = time.monotonic() + guard
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("target, signum", [("launcher", signal.SIGKILL), ("launcher", signal.SIGUSR1),
                                            ("torchrun", signal.SIGKILL), ("worker", signal.SIGKILL)])
def test_a_killed_process_leaves_no_other_running_and_a_run_that_resumes(demo_root, tmp_path, target, signum):
    """`train.py --nproc_per_node 2` is three levels: the launcher, torchrun's agent, two workers. Whichever of
    them is killed, by whatever signal, the others stop (the workers with a resumable state when they still can)
    and the lock is free again: `--continue_train` runs."""
    marker = str(tmp_path / "ck")
    common = ["--dataroot", demo_root, "--checkpoints_dir", marker, "--name", "run", *TINY, "--n_epochs_decay", "0",
              "--nproc_per_node", "2"]
    with open(tmp_path / "out.txt", "w") as out:
        launcher = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *common, "--n_epochs", "500"],
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=ENV)
    try:
        wait_for(lambda: (tmp_path / "ck" / "run" / "latest_train_state.pth").exists() or launcher.poll() is not None,
                 "the first checkpoint")
        running = processes_of(marker)
        assert launcher.poll() is None and len(running) == 4, (tmp_path / "out.txt").read_text()[-3000:]
        if target == "launcher":
            victim = launcher.pid
        elif target == "torchrun":
            victim = next(pid for pid, env in running.items() if "torch.distributed.run" in env["_command"])
        else:
            victim = next(pid for pid, env in running.items() if env.get("RANK") == "1")
        os.kill(victim, signum)
        wait_for(lambda: not processes_of(marker), "every process of the run to end")
    finally:
        for pid in processes_of(marker):  # only when the test failed: nothing may outlive it
            os.kill(pid, signal.SIGKILL)
        launcher.wait()
    text = (tmp_path / "out.txt").read_text()
    if target == "worker":
        assert "another process of this run stopped (Connection" in text, text[-4000:]
        assert "so this one (rank 0 of 2) stops too" in text and "intact: resume from it" in text, text[-4000:]
    else:  # the workers were told to stop (and saved, which the resume below relies on)
        assert "SIGTERM received: finishing this step" in text, text[-4000:]
    state = torch.load(tmp_path / "ck" / "run" / "latest_train_state.pth", map_location="cpu", weights_only=False)
    epoch = state["epoch"]
    assert 2 <= epoch < 500
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *common, "--n_epochs", str(epoch),
                           "--continue_train"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (tmp_path / "ck" / "run" / f"{epoch}_net_G.pth").is_file()

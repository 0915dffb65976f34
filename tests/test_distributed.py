"""train.py under torchrun (2 CPU processes, gloo) matches a 1-process run of the same global batch, and resumes;
`train.py --nproc_per_node 2` (or several --gpu_ids) starts that same path by itself."""
import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from models.atme.pool import DiscPool
from util.process.launch import local_processes, worker_environment

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

GLOBAL_BATCH = 4
N_IMAGES = 8  # two steps: the second catches DDP state left over from the first G/D alternation
# Identical data on both sides: no shuffling, flipping, cropping or dropout; per-image norms only.
SAME_DATA = ["--serial_batches", "--no_flip", "--preprocess", "none", "--load_size", "32", "--crop_size", "32",
             "--max_dataset_size", str(N_IMAGES), "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1",
             "--display_id", "0", "--no_html", "--n_epochs", "1", "--n_epochs_decay", "0", "--print_freq", "1",
             "--lr_policy", "step"]  # a constant rate (the linear policy ends epoch 1 at 0)
PIX2PIX = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "none", "--no_dropout"]
ATME = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8"]
# --norm none: in front of an instance norm, conv biases (and the weights of the tiled code, a constant the norm
# removes but at the borders) get gradients that are zero up to rounding, and Adam's first steps turn the sign of
# that rounding into +-lr. Instance norm is per image, so it does not depend on how a batch is split anyway.
SEGAN = ["--model", "segan", "--ngf", "4", "--ndf", "4", "--netD", "n_layers", "--n_layers_D", "2", "--nz", "4",
         "--samples_per_input", "3", "--norm", "none"]
LAUNCHER_ENV = {"OMP_NUM_THREADS": "1"}  # 2 processes on a 2-core machine


def torchrun(*args, nproc=2, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), os.path.join(ROOT, "train.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun train.py exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\n"
                             f"STDERR:\n{proc.stderr[-6000:]}")
    return proc


def weights(run_dir, tag, name):
    return torch.load(os.path.join(run_dir, f"{tag}_net_{name}.pth"), map_location="cpu", weights_only=True)


def assert_same_up_to_adam_rounding(single, ddp, name, lr=2e-4):
    """Adam normalises each gradient element: one whose gradient is zero up to rounding (a conv bias in front of a
    normalisation, a standardised kernel's mean) moves by up to lr per step in the direction the rounding picked,
    and a batch split over two processes rounds differently. A few such elements in a thousand are allowed, each
    within 2 lr per step; all others agree to float noise. (A fault in the synchronisation moves most of them.)"""
    assert single.keys() == ddp.keys()
    diff = torch.cat([(single[k].float() - ddp[k].float()).abs().reshape(-1) for k in single])
    scale = torch.cat([single[k].float().abs().reshape(-1) for k in single])
    off = diff > 1e-5 + 1e-4 * scale
    assert off.float().mean() < 1e-3 and diff.max() <= 2 * lr * (N_IMAGES // GLOBAL_BATCH), \
        f"net{name}: {int(off.sum())} of {diff.numel()} weights differ, by up to {diff.max().item():.2e}"


def assert_same_weights(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol, rtol=1e-4), \
            f"{key}: max difference {(a[key].float() - b[key].float()).abs().max().item()}"


@pytest.fixture(scope="module")
def pix2pix_runs(demo_root, tmp_path_factory):
    ck = tmp_path_factory.mktemp("ddp_pix2pix")
    common = ["--dataroot", demo_root, "--checkpoints_dir", ck, *PIX2PIX, *SAME_DATA]
    run_cli("train.py", *common, "--name", "single", "--batch_size", GLOBAL_BATCH)
    torchrun(*common, "--name", "ddp", "--batch_size", GLOBAL_BATCH // 2)
    run_cli("train.py", *common, "--name", "launched", "--batch_size", GLOBAL_BATCH // 2, "--nproc_per_node", 2,
            env=LAUNCHER_ENV)
    return ck, common


@pytest.mark.slow
def test_two_processes_match_one_process(pix2pix_runs):
    ck, _ = pix2pix_runs
    for name in ("G", "D"):
        single, ddp = weights(ck / "single", 1, name), weights(ck / "ddp", 1, name)
        moved = max((single[k].float() - weights(ck / "single", "latest", name)[k].float()).abs().max()
                    for k in single)
        assert moved == 0  # epoch 1 and latest are the same state
        assert_same_weights(single, ddp)


@pytest.mark.slow
def test_nproc_per_node_launches_the_torchrun_path(pix2pix_runs):
    ck, _ = pix2pix_runs
    for name in ("G", "D"):
        assert_same_weights(weights(ck / "single", 1, name), weights(ck / "launched", 1, name))
    log = (ck / "launched" / "train.log").read_text()
    assert "starting 2 processes" in log and "(2 processes)" in log, log
    # The workers store the options of a torchrun launch; only the run's name (and its folder) and the launch flag
    # differ.
    launched, ddp = (json.loads((ck / run / "train_opt.json").read_text()) for run in ("launched", "ddp"))
    assert launched.pop("nproc_per_node") == 2 and ddp.pop("nproc_per_node") == 0
    for stored, run in ((launched, "launched"), (ddp, "ddp")):  # run_dir, where a version stores it
        assert stored.pop("run_dir", run).endswith(run)
    assert {k: v for k, v in launched.items() if k != "name"} == {k: v for k, v in ddp.items() if k != "name"}


@pytest.mark.slow
def test_resume_under_torchrun_continues(pix2pix_runs):
    ck, common = pix2pix_runs
    args = [a if a != "1" or common[i - 1] != "--n_epochs" else "2" for i, a in enumerate(map(str, common))]
    proc = torchrun(*args, "--name", "ddp", "--batch_size", GLOBAL_BATCH // 2, "--continue_train")
    assert (ck / "ddp" / "2_net_G.pth").is_file(), proc.stdout[-2000:]
    before, after = weights(ck / "ddp", 1, "G"), weights(ck / "ddp", 2, "G")
    assert any(not torch.equal(before[k], after[k]) for k in before), "the resumed epoch did not train"


@pytest.mark.slow
def test_atme_pool_written_by_two_ranks_equals_one_process_pool(demo_root, tmp_path):
    common = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, *ATME, *SAME_DATA]
    run_cli("train.py", *common, "--name", "single", "--batch_size", GLOBAL_BATCH)
    torchrun(*common, "--name", "ddp", "--batch_size", GLOBAL_BATCH // 2)
    single = np.load(tmp_path / "single" / "1_disc_pool.npy")  # D_1, the maps epoch 1 wrote
    ddp = np.load(tmp_path / "ddp" / "1_disc_pool.npy")
    assert single.shape == ddp.shape == (N_IMAGES, *single.shape[1:])
    # Every map was rewritten by the step: none is left as the seeded uniform(0, 1) start.
    start = DiscPool.create(tmp_path / "start.npy", N_IMAGES, single.shape[2:], seed=0).read(range(N_IMAGES))
    assert all(not np.allclose(single[i], start[i].numpy()) for i in range(N_IMAGES))
    # Each rank wrote its own images' maps at their indices: a map written at another image's index would differ
    # by the spread between images (0.18 here). What remains is the step's rounding after Adam's amplification of
    # it in the weights (below): up to 6e-5, and a few millionths for half of the values.
    spread = np.abs(single[:, None] - single[None]).max()
    assert spread > 0.05
    np.testing.assert_allclose(ddp, single, atol=1e-3)
    assert np.median(np.abs(ddp - single)) < 1e-5
    for name in ("G", "W"):
        assert_same_up_to_adam_rounding(weights(tmp_path / "single", 1, name), weights(tmp_path / "ddp", 1, name),
                                        name)


@pytest.mark.slow
def test_resume_under_torchrun_ignores_nproc_per_node(pix2pix_runs):
    """A run started by the launcher resumes under a hand-written torchrun that repeats --nproc_per_node: the
    workers see WORLD_SIZE and do not start processes of their own."""
    ck, common = pix2pix_runs
    args = [a if a != "1" or common[i - 1] != "--n_epochs" else "2" for i, a in enumerate(map(str, common))]
    torchrun(*args, "--name", "launched", "--batch_size", GLOBAL_BATCH // 2, "--nproc_per_node", 2, "--verbose",
             "--continue_train")
    log = (ck / "launched" / "train.log").read_text()
    assert "already under torchrun (WORLD_SIZE=2): --nproc_per_node 2 is ignored" in log
    assert log.count("starting 2 processes") == 1  # the first, launched run only
    before, after = weights(ck / "launched", 1, "G"), weights(ck / "launched", 2, "G")
    assert any(not torch.equal(before[k], after[k]) for k in before), "the resumed epoch did not train"


@pytest.mark.slow
def test_launcher_passes_sigterm_on_and_exits_143(demo_root, tmp_path):
    """SIGTERM to `train.py --nproc_per_node 2` reaches both workers, which stop after the same step and save.
    pix2pix's default --norm batch also runs on CPU processes (per-process statistics, no SyncBatchNorm)."""
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--dataroot", demo_root, "--checkpoints_dir",
           str(tmp_path), "--name", "stop", "--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8",
           "--load_size", "32", "--crop_size", "32", "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1",
           "--display_id", "0", "--no_html", "--n_epochs", "500", "--n_epochs_decay", "0", "--batch_size", "2",
           "--nproc_per_node", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, **LAUNCHER_ENV))
    deadline = time.time() + 240
    while not (tmp_path / "stop" / "convergence.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, out[-6000:]
    assert out.count("SIGTERM received: finishing this step") == 2, out[-6000:]
    state = torch.load(tmp_path / "stop" / "latest_train_state.pth", weights_only=True)
    assert state["epoch"] >= 2 and state["epoch"] < 500


@pytest.fixture
def cuda(monkeypatch):
    """Pretend to have `count` visible GPUs (0: no CUDA)."""
    def pretend(count):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    return pretend


@pytest.mark.parametrize("gpus, gpu_ids, nproc, expected", [
    (0, [], 0, 1),            # --gpu_ids -1
    (0, [], 2, 2),            # --gpu_ids -1 --nproc_per_node 2: CPU processes
    (0, [0, 1], 0, 1),        # several ids without CUDA: one CPU process
    (0, [0, 1], 3, 3),
    (2, [], 2, 2),            # CUDA present but --gpu_ids -1
    (2, [0], 0, 1),
    (2, [0, 1], 0, 2),        # one process per listed GPU
    (4, [0, 1, 2, 3], 2, 2),  # fewer processes than GPUs: the first ones
    (2, [1, 0], 0, 2),
])
def test_local_processes(cuda, gpus, gpu_ids, nproc, expected):
    cuda(gpus)
    assert local_processes(gpu_ids, nproc, environ={}) == expected


def test_local_processes_errors_name_the_flags(cuda):
    cuda(2)
    with pytest.raises(ValueError, match="--nproc_per_node 3 .*--gpu_ids 0,1"):
        local_processes([0, 1], 3, environ={})
    with pytest.raises(ValueError, match="--gpu_ids lists GPU 2, but only 2 GPU"):
        local_processes([0, 2], 0, environ={})
    with pytest.raises(ValueError, match="--nproc_per_node must be"):
        local_processes([], -1, environ={})


def test_no_new_processes_under_torchrun(cuda, caplog):
    cuda(2)
    under_torchrun = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    with caplog.at_level(logging.DEBUG, logger="util.process.launch"):
        assert local_processes([0, 1], 0, environ=under_torchrun) == 1
        assert local_processes([], 2, environ=under_torchrun) == 1
        assert local_processes([0, 1], 3, environ=under_torchrun) == 1  # no error either: torchrun decided
    assert "--nproc_per_node 2 is ignored" in caplog.text


def test_worker_environment_shares_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert worker_environment(2, environ={})["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert worker_environment(cores * 4, environ={})["OMP_NUM_THREADS"] == "1"
    assert worker_environment(2, environ={"OMP_NUM_THREADS": "7"})["OMP_NUM_THREADS"] == "7"


def loss_rows(run_dir):
    with open(run_dir / "loss_log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_segan_two_processes_match_one_process(demo_root, tmp_path):
    """SEGAN draws the codes of image i in epoch e from (--seed, e, i), so two processes with half of the batch
    each draw the 1-process run's codes, fresh MI negatives included; every loss is a mean over the batch (the
    JSD estimator too), so G, D and the statistics network T end the epoch with the same weights."""
    common = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, *SEGAN, *SAME_DATA]
    run_cli("train.py", *common, "--name", "single", "--batch_size", GLOBAL_BATCH)
    torchrun(*common, "--name", "ddp", "--batch_size", GLOBAL_BATCH // 2)
    for name in ("G", "D", "T"):
        assert_same_up_to_adam_rounding(weights(tmp_path / "single", 1, name), weights(tmp_path / "ddp", 1, name),
                                        name)
    single, ddp = loss_rows(tmp_path / "single"), loss_rows(tmp_path / "ddp")
    assert len(single) == len(ddp) == N_IMAGES // GLOBAL_BATCH
    for one, two in zip(single, ddp):  # the logged losses are averaged over the ranks
        for key in ("G_GAN", "G_L1", "MI", "D_real", "D_fake", "T"):
            assert float(one[key]) == pytest.approx(float(two[key]), rel=1e-4, abs=1e-5), key


def rank_streams(run_dir, tag="latest"):
    return torch.load(run_dir / f"{tag}_train_state.pth", weights_only=True)["rng_by_rank"]


def same_stream(a, b):
    return (a["python"] == b["python"] and torch.equal(a["torch"], b["torch"])
            and torch.equal(a["numpy"][1], b["numpy"][1]) and a["numpy"][2:] == b["numpy"][2:])


@pytest.mark.slow
def test_a_stopped_and_resumed_two_process_run_equals_the_uninterrupted_one(demo_root, tmp_path):
    """Each rank saves and restores its own random streams and image pool: with dropout (a mask per rank) and
    --pool_size (a history per rank, drawn from at random), a 2-process run stopped after epoch 1 and resumed ends
    epoch 2 with the uninterrupted run's weights and with each rank's streams where the uninterrupted run's are.
    With rank 0's streams or pool on both ranks the second rank's masks and draws would change."""
    with_dropout = ["--model", "pix2pix", "--netG", "resnet_6blocks", "--ngf", "8", "--ndf", "8", "--norm", "none",
                    "--pool_size", "4"]  # and D trains on a history of generated images, drawn at random, per rank
    common = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, *with_dropout, *SAME_DATA[:-8],
              "--lr_policy", "step", "--batch_size", GLOBAL_BATCH // 2]
    torchrun(*common, "--name", "whole", "--n_epochs", 2, "--n_epochs_decay", 0, "--print_freq", 1)
    torchrun(*common, "--name", "resumed", "--n_epochs", 1, "--n_epochs_decay", 0, "--print_freq", 1)
    after_one = rank_streams(tmp_path / "resumed")
    assert len(after_one) == 2 and not same_stream(after_one[0], after_one[1])  # each rank has its own
    torchrun(*common, "--name", "resumed", "--n_epochs", 2, "--n_epochs_decay", 0, "--print_freq", 1,
             "--continue_train")
    for name in ("G", "D"):
        assert_same_weights(weights(tmp_path / "whole", 2, name), weights(tmp_path / "resumed", 2, name))
    pools = torch.load(tmp_path / "resumed" / "latest_train_state.pth", weights_only=True)["fake_pool_by_rank"]
    assert len(pools) == 2 and not torch.equal(pools[0][0], pools[1][0])  # each rank keeps its own history
    whole, resumed = rank_streams(tmp_path / "whole"), rank_streams(tmp_path / "resumed")
    assert [same_stream(a, b) for a, b in zip(whole, resumed)] == [True, True]


def test_a_resume_with_another_number_of_processes_reseeds_from_rank_0_and_says_so(monkeypatch, caplog):
    """Two ranks resuming a state of one process (or of an older version, which kept rank 0's streams alone): rank 0
    continues the stored stream, rank 1 is seeded from it and its rank (the same on every such resume, not rank 0's),
    and rank 0 says so in one WARNING; with as many ranks as stored, each continues its own stream silently."""
    from util.process import distributed
    from util.process.devices import rng_state
    torch.manual_seed(5)
    stored = rng_state()
    expected_rank0 = torch.rand(4)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    draws = {}
    for here in (0, 1, 1):
        monkeypatch.setattr(distributed, "rank", lambda here=here: here)
        with caplog.at_level(logging.WARNING, logger="util.process.distributed"):
            distributed.restore_rank_rng([stored], "latest_train_state.pth")
        draws.setdefault(here, []).append(torch.rand(4))
    assert torch.equal(draws[0][0], expected_rank0)
    assert torch.equal(draws[1][0], draws[1][1]) and not torch.equal(draws[1][0], expected_rank0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "latest_train_state.pth holds the random streams of 1 process and this run has 2" \
        in warnings[0].getMessage()
    caplog.clear()
    torch.manual_seed(6)
    other = rng_state()
    expected_rank1 = torch.rand(4)
    distributed.restore_rank_rng([stored, other], "latest_train_state.pth")  # rank 1 of 2
    assert torch.equal(torch.rand(4), expected_rank1) and not caplog.records


ORPHAN_WORKER = """
import os, sys, time
sys.path.insert(0, {root!r})
time.sleep(1.0)  # the imports of a real worker, during which torchrun's agent is killed
os.environ["TORCHELASTIC_RUN_ID"] = "test"  # what torchrun sets for its workers
from util.process.launch import stop_with_parent
stop_with_parent()
print("still waiting", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_worker_whose_agent_died_during_its_start_up_stops(tmp_path):
    """A stand-in agent starts a worker and ends at once, before the worker's parent-death check: the worker,
    adopted by init, stops itself (SIGTERM) instead of waiting."""
    agent = ("import subprocess, sys\n"
             f"worker = subprocess.Popen([sys.executable, '-c', {ORPHAN_WORKER.format(root=ROOT)!r}],\n"
             f"                          stdout=open({str(tmp_path / 'out')!r}, 'w'), start_new_session=True)\n"
             f"open({str(tmp_path / 'pid')!r}, 'w').write(str(worker.pid))\n")
    subprocess.run([sys.executable, "-c", agent], check=True, timeout=60)
    pid = int((tmp_path / "pid").read_text())
    deadline = time.time() + 20
    while time.time() < deadline and os.path.exists(f"/proc/{pid}") and \
            open(f"/proc/{pid}/stat").read().split()[2] != "Z":
        time.sleep(0.1)
    try:
        alive = open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        alive = False
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive and "still waiting" not in (tmp_path / "out").read_text()


def test_agent_gone_tells_init_and_other_programs_from_a_python_agent(monkeypatch):
    from util.process import launch
    assert launch.agent_gone(1)
    assert not launch.agent_gone(os.getpid())  # this Python process, as torchrun's agent is
    monkeypatch.setattr(launch.os, "readlink", lambda path: "/usr/lib/systemd/systemd")
    assert launch.agent_gone(4242)  # adopted by a subreaper that is not Python

"""train.py under torchrun (2 CPU processes, gloo) matches a 1-process run of the same global batch, and resumes."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from util.disc_pool import DiscPool

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
    return ck, common


def test_two_processes_match_one_process(pix2pix_runs):
    ck, _ = pix2pix_runs
    for name in ("G", "D"):
        single, ddp = weights(ck / "single", 1, name), weights(ck / "ddp", 1, name)
        moved = max((single[k].float() - weights(ck / "single", "latest", name)[k].float()).abs().max()
                    for k in single)
        assert moved == 0  # epoch 1 and latest are the same state
        assert_same_weights(single, ddp)


def test_resume_under_torchrun_continues(pix2pix_runs):
    ck, common = pix2pix_runs
    args = [a if a != "1" or common[i - 1] != "--n_epochs" else "2" for i, a in enumerate(map(str, common))]
    proc = torchrun(*args, "--name", "ddp", "--batch_size", GLOBAL_BATCH // 2, "--continue_train")
    assert (ck / "ddp" / "2_net_G.pth").is_file(), proc.stdout[-2000:]
    before, after = weights(ck / "ddp", 1, "G"), weights(ck / "ddp", 2, "G")
    assert any(not torch.equal(before[k], after[k]) for k in before), "the resumed epoch did not train"


def test_atme_pool_written_by_two_ranks_equals_one_process_pool(demo_root, tmp_path):
    common = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, *ATME, *SAME_DATA]
    run_cli("train.py", *common, "--name", "single", "--batch_size", GLOBAL_BATCH)
    torchrun(*common, "--name", "ddp", "--batch_size", GLOBAL_BATCH // 2)
    single = np.load(tmp_path / "single" / "disc_pool.npy")
    ddp = np.load(tmp_path / "ddp" / "disc_pool.npy")
    assert single.shape == ddp.shape == (N_IMAGES, *single.shape[1:])
    # Every map was rewritten by the step: none is left as the seeded uniform(0, 1) start.
    start = DiscPool.create(tmp_path / "start.npy", N_IMAGES, single.shape[2:], seed=0).read(range(N_IMAGES))
    assert all(not np.allclose(single[i], start[i].numpy()) for i in range(N_IMAGES))
    np.testing.assert_allclose(ddp, single, atol=1e-5)
    for name in ("G", "W"):
        assert_same_weights(weights(tmp_path / "single", 1, name), weights(tmp_path / "ddp", 1, name))

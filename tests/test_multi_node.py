"""ATME on two nodes, simulated on this machine: two torchrun invocations (--nnodes 2, one process each) whose
run folders are apart, standing in for two machines whose page caches do not see each other's writes. Node 1
never finds rank 0's pool on its disk; every map its ranks read must come through the process group, and must
be D_{t-1}: the maps written in the previous epoch."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from models.atme.pool import DiscPool

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                 reason="torch.distributed with gloo is not available")]

N_IMAGES = 8
ATME = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
        "--serial_batches", "--no_flip", "--preprocess", "none", "--load_size", "32", "--crop_size", "32",
        "--max_dataset_size", str(N_IMAGES), "--num_threads", "1", "--seed", "0", "--gpu_ids", "-1",
        "--display_id", "0", "--no_html", "--n_epochs", "2", "--n_epochs_decay", "0", "--batch_size", "2",
        "--save_epoch_freq", "1", "--val_freq", "0"]

# train.py that records, per step, the epoch, the images and the D_{t-1} maps the model was given (read by the
# loader's worker process), and the folder of the pool this rank reads.
RECORDING_TRAIN = r"""
import atexit, os, sys
sys.path.insert(0, {root!r})
import numpy as np
from models.atme_model import AtmeModel as ATMEModel
reads = {{"epoch": [], "index": [], "maps": [], "folder": []}}
set_input = ATMEModel.set_input
def recording(self, batch):
    set_input(self, batch)
    if "disc_prev" in batch:
        reads["epoch"] += [self._position[0]] * len(batch["index"])
        reads["index"] += [int(i) for i in batch["index"]]
        reads["maps"].append(batch["disc_prev"].numpy())
        reads["folder"].append(self.disc_pool.folder)
ATMEModel.set_input = recording
def save():
    np.savez(os.path.join({out!r}, "reads_rank%s.npz" % os.environ["RANK"]), epoch=np.array(reads["epoch"]),
             index=np.array(reads["index"]), maps=np.concatenate(reads["maps"]), folder=np.array(reads["folder"]))
atexit.register(save)
import train
from util.command_line.cli import run_main
run_main(train.main)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_rank_of_two_nodes_reads_the_maps_of_the_previous_epoch(demo_root, tmp_path):
    script = tmp_path / "recording_train.py"
    script.write_text(RECORDING_TRAIN.format(root=ROOT, out=str(tmp_path)))
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    nodes = []
    for node in range(2):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
                   "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port), str(script),
                   "--dataroot", demo_root, "--checkpoints_dir", str(tmp_path / f"node{node}"), "--name", "run",
                   *ATME]
        nodes.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env))
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, out in zip(nodes, outputs):
        assert node.returncode == 0, out[-6000:]
    run0, run1 = tmp_path / "node0" / "run", tmp_path / "node1" / "run"
    assert not (run1 / "disc_pool.json").exists()  # node 1 never saw rank 0's pool on its disk
    start = DiscPool.create(tmp_path / "start.npy", N_IMAGES, np.load(run0 / "1_disc_pool.npy").shape[2:], seed=0)
    expected = {1: start.read(range(N_IMAGES)).numpy(),  # D_0: the seeded start
                2: np.load(run0 / "1_disc_pool.npy")}    # D_1: what epoch 1 wrote, kept with checkpoint 1
    assert not np.allclose(expected[1], expected[2])
    seen = {1: set(), 2: set()}
    for rank, folder in ((0, run0), (1, run1 / "disc_pool_node1")):
        reads = np.load(tmp_path / f"reads_rank{rank}.npz")
        assert set(reads["folder"].tolist()) == {str(folder)}, reads["folder"]
        for epoch in (1, 2):
            mine = reads["epoch"] == epoch
            assert mine.sum() == N_IMAGES // 2
            np.testing.assert_array_equal(reads["maps"][mine], expected[epoch][reads["index"][mine]],
                                          err_msg=f"rank {rank}, epoch {epoch}")
            seen[epoch] |= set(reads["index"][mine].tolist())
    assert seen == {1: set(range(N_IMAGES)), 2: set(range(N_IMAGES))}
    # Node 1's copy ends holding what rank 0's pool holds.
    for name in ("disc_pool_a.npy", "disc_pool_b.npy"):
        np.testing.assert_array_equal(np.load(run1 / "disc_pool_node1" / name), np.load(run0 / name))

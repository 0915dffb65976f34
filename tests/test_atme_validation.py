"""ATME validates with test-time maps drawn from noise derived from --seed and the epoch, so a resumed run's
val_log.csv and best_net_* equal those of an uninterrupted run."""
import csv
import os
import signal

import torch

from conftest import train_main

ARGS = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
        "--load_size", "36", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
        "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--n_epochs", "2", "--n_epochs_decay", "0",
        "--val_freq", "1", "--pool_test_std", "0.5"]


def val_rows(run):
    with open(os.path.join(run, "val_log.csv")) as handle:
        return list(csv.DictReader(handle))


def best(run):
    return {name: torch.load(os.path.join(run, name), map_location="cpu", weights_only=True)
            for name in sorted(os.listdir(run)) if name.startswith("best_net_")}


def test_a_resumed_run_validates_like_an_uninterrupted_one(tmp_path, demo_root, monkeypatch):
    common = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, *ARGS]
    train_main(*common, "--name", "whole")

    import train
    from models.base_model import BaseModel
    real, real_agreed, calls = BaseModel.optimizer_step, train.StopRequest.agreed, [0]

    def counted(self, *a, **k):
        calls[0] += 1
        return real(self, *a, **k)

    def interrupted(self):  # Ctrl-C in epoch 2 (4 steps of 2 optimiser steps each per epoch)
        if calls[0] >= 11 and self.signum is None:
            self.signum = signal.SIGINT  # what the handler sets on a Ctrl-C (a real one: test_train_signals.py)
        return real_agreed(self)

    monkeypatch.setattr(BaseModel, "optimizer_step", counted)
    monkeypatch.setattr(train.StopRequest, "agreed", interrupted)
    stopped = train_main(*common, "--name", "resumed", check=False)
    monkeypatch.undo()
    assert stopped.returncode == 128 + signal.SIGINT
    assert len(val_rows(tmp_path / "resumed")) == 1  # epoch 1 was validated before the stop
    train_main(*common, "--name", "resumed", "--continue_train")

    whole, resumed = val_rows(tmp_path / "whole"), val_rows(tmp_path / "resumed")
    assert [r["epoch"] for r in whole] == ["1", "2"]
    assert resumed == whole
    a, b = best(tmp_path / "whole"), best(tmp_path / "resumed")
    assert list(a) == list(b) and a
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name} {key} differs"

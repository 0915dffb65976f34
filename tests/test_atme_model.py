"""AtmeModel: noisy input, pool updates, resume, release checkpoints, end-to-end train and test."""
import csv
import os

import numpy as np
import pytest
import torch
from conftest import stored_train_options
from PIL import Image
from torch.utils.data import default_collate

import test as test_cli
import train as train_cli
from data import create_dataset
from models import create_model
from models.atme.release import release_layouts
from models.networks.discriminators import patch_output_size
from options.test_options import TestOptions

N_TRAIN = 4
TINY = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
        "--batch_size", "2", "--load_size", "32", "--crop_size", "32", "--num_threads", "0", "--seed", "0",
        "--gpu_ids", "-1", "--display_id", "0", "--no_html"]


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    """Aligned A|B pairs of 64x32 pixels: N_TRAIN for training, 2 for testing."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for split, count in (("train", N_TRAIN), ("test", 2)):
        os.makedirs(root / split)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(32, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / f"{i:03d}.png")
    return str(root)


def train_model(dataroot, checkpoints, *extra):
    args = ["--dataroot", dataroot, "--checkpoints_dir", str(checkpoints), "--name", "run", *TINY, *extra]
    opt = stored_train_options(args)
    opt.dataset_size = len(create_dataset(opt))  # as train.py sets it: one pool map per image
    model = create_model(opt)
    model.setup(opt)
    model.attach_run_state(opt)
    return model, opt


def batch_of(model, opt, indices):
    """The batch of dataset `indices`, with D_{t-1} read the way the loader reads it."""
    dataset = create_dataset(opt)
    reader = model.sample_readers()["disc_prev"]
    batch = default_collate([dataset[i] for i in indices])
    batch["disc_prev"] = torch.stack([reader(i, model.disc_pool.epoch) for i in indices])
    return batch


def test_noisy_input_is_clean_input_when_w_is_zero(dataroot, tmp_path):
    model, opt = train_model(dataroot, tmp_path)
    with torch.no_grad():
        head = model.netW.model[6]  # the last 1x1 conv before tanh
        head.weight.zero_()
        head.bias.zero_()
    model.set_input(batch_of(model, opt, [0, 1]))
    model.forward()
    assert torch.count_nonzero(model.W) == 0
    assert torch.equal(model.noisy_A, model.real_A)
    assert model.fake_B.shape == model.real_B.shape and model.fake_B.abs().max() <= 1
    with torch.no_grad():
        head.bias.fill_(0.5)
    model.forward()
    assert torch.allclose(model.noisy_A, model.real_A * (1 + np.tanh(0.5)))


def test_steps_update_visited_pool_entries_only_and_resume_keeps_them(dataroot, tmp_path):
    model, opt = train_model(dataroot, tmp_path)
    pool = model.disc_pool
    assert len(pool) == N_TRAIN and pool.map_size == patch_output_size("basic", 3, 32, 32)
    before, written_before = pool.read(range(N_TRAIN)), pool.read_written(range(N_TRAIN))
    g_before = [p.detach().clone() for p in model.netW.parameters()]
    visited = [0, 2]
    model.set_input(batch_of(model, opt, visited))
    model.optimize_parameters()
    after = pool.read_written(range(N_TRAIN))
    changed = [i for i in range(N_TRAIN) if not torch.equal(written_before[i], after[i])]
    assert changed == visited
    assert torch.equal(pool.read(range(N_TRAIN)), before)  # D_{t-1} does not change during the epoch
    # prob mode: the stored map is sigmoid of the D output used for the G loss
    assert torch.allclose(after[visited], torch.sigmoid(model.disc_fake.detach()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.netW.parameters())), "W did not learn"

    model.save_training_state("latest", 1, 2, 2)
    resumed, _ = train_model(dataroot, tmp_path, "--continue_train")
    assert torch.equal(resumed.disc_pool.read(range(N_TRAIN)), before)
    assert torch.equal(resumed.disc_pool.read_written(range(N_TRAIN)), after)
    fresh, _ = train_model(dataroot, tmp_path)  # a new run (no --continue_train) starts a new pool
    assert not torch.equal(fresh.disc_pool.read_written(visited), after[visited])


def test_resume_with_other_dataset_size_names_the_fix(dataroot, tmp_path):
    model, _ = train_model(dataroot, tmp_path)
    model.save_training_state("latest", 1, 0, 0)
    with pytest.raises(ValueError, match=r"(?s)made for 4 images of 2 x 2 maps.*now has 3 images.*--name"):
        train_model(dataroot, tmp_path, "--continue_train", "--max_dataset_size", "3")


def test_logits_mode_and_bad_crop_size(dataroot, tmp_path):
    model, opt = train_model(dataroot, tmp_path, "--pool_stores", "logits")
    model.set_input(batch_of(model, opt, [1]))
    model.optimize_parameters()
    assert torch.allclose(model.disc_pool.read_written([1]), model.disc_fake.detach())
    with pytest.raises(ValueError, match="--crop_size 36"):
        train_model(dataroot, tmp_path / "b", "--crop_size", "36", "--load_size", "36", "--dim_mults", "1,1,1,1")


def test_test_time_maps_are_half_with_small_noise(dataroot, tmp_path):
    model, _ = train_model(dataroot, tmp_path)
    model.save_networks("latest")
    opt = TestOptions().parse(["--dataroot", dataroot, "--checkpoints_dir", str(tmp_path), "--name", "run",
                               "--results_dir", str(tmp_path / "results"), "--num_threads", "0"])
    assert opt.dim_mults == (1, 2) and opt.dim == 8  # taken from the run's stored options
    tester = create_model(opt)
    tester.setup(opt)
    assert tester.model_names == ["G", "W"]
    tester.set_input(default_collate([create_dataset(opt)[i] for i in range(2)]))
    tester.test()  # the translator makes the map for the input's size
    assert tester.disc_prev.shape == (2, 1, 2, 2)
    assert torch.all((tester.disc_prev - 0.5).abs() < 0.01) and tester.disc_prev.std() > 0
    assert set(tester.get_current_visuals()) == {"real_A", "W", "noisy_A", "fake_B", "real_B"}


def test_release_checkpoints_load_by_their_names(dataroot, tmp_path):
    layout = release_layouts()
    run_dir = tmp_path / "release"
    os.makedirs(run_dir)
    gen = torch.Generator().manual_seed(0)
    released = {}
    for net, filename in (("G", "latest_net_G.pth"), ("W", "latest_net_T.pth")):  # the release calls W "T"
        released[net] = {k: torch.randn(shape, generator=gen) for k, shape in layout[net].items()}
        torch.save(released[net], run_dir / filename)
    opt = TestOptions().parse(["--dataroot", dataroot, "--checkpoints_dir", str(tmp_path), "--name", "release",
                               "--model", "atme", "--gpu_ids", "-1", "--results_dir", str(tmp_path / "r")])
    model = create_model(opt)
    model.setup(opt)
    for net in ("G", "W"):
        state = getattr(model, "net" + net).state_dict()
        assert all(torch.equal(state[k], v) for k, v in released[net].items())


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])  # 1: a loader worker process
def test_two_epochs_end_to_end_then_test(dataroot, tmp_path, workers):
    common = ["--dataroot", dataroot, "--checkpoints_dir", str(tmp_path), "--name", "e2e"]
    train_args = common + TINY + ["--num_threads", str(workers), "--n_epochs", "1", "--n_epochs_decay", "1",
                                  "--n_save_noisy", "2", "--print_freq", "2"]
    assert train_cli.main(train_args) == 0
    run = tmp_path / "e2e"
    for name in ("latest_net_G.pth", "latest_net_W.pth", "latest_net_D.pth", "disc_pool_a.npy", "disc_pool_b.npy",
                 "2_disc_pool.npy"):
        assert (run / name).is_file(), name
    pool = np.load(run / "2_disc_pool.npy")  # D_2: epoch 2's maps, the pool epoch 3 would read
    assert pool.shape == (N_TRAIN, 1, 2, 2) and 0 <= pool.min() and pool.max() <= 1
    with open(run / "convergence.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    history = sorted(os.listdir(run / "noisy_history"))
    assert "epoch_002_img_3_W.png" in history and "epoch_001_img_0_D.npy" in history
    assert np.load(run / "noisy_history" / "epoch_002_img_3_D.npy").shape == (2, 2)

    results = tmp_path / "results"
    assert test_cli.main(common + ["--results_dir", str(results), "--num_threads", "0"]) == 0
    images = os.listdir(results / "e2e" / "test_latest" / "images")
    for visual in ("fake_B", "W", "noisy_A"):
        assert sum(visual in name for name in images) == 2, (visual, images)


def test_only_rank_0_reads_the_pool_through_at_a_resume(dataroot, tmp_path, monkeypatch):
    """A resume under DDP: rank 0 checks the pool's files (reading them through); the other ranks do not read them
    again, and a fault rank 0 found stops them with its message."""
    import models.atme_model as atme_model
    from util.process import distributed
    model, _ = train_model(dataroot, tmp_path)
    model.save_training_state("latest", 1, 0, 0)
    checked = []
    monkeypatch.setattr(atme_model, "check_run_pool", lambda *args, **kwargs: checked.append(args[0]))
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    train_model(dataroot, tmp_path, "--continue_train")
    assert checked == []
    monkeypatch.setattr(distributed, "first_report", lambda message: message or "pool file x is missing (on rank 0)")
    with pytest.raises(ValueError, match="pool file x is missing"):
        train_model(dataroot, tmp_path, "--continue_train")
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "first_report", lambda message: message)
    train_model(dataroot, tmp_path, "--continue_train")
    assert len(checked) == 1

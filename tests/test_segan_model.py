"""SeganModel: one step of each variant, loss composition (Eq. 8), synchronised test codes, test.py output."""
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from conftest import stored_train_options, test_main, train_main
from data import create_dataset
from models import create_model
from options.test_options import TestOptions

TINY = ["--model", "segan", "--ngf", "4", "--ndf", "4", "--netD", "n_layers", "--n_layers_D", "2", "--nz", "4",
        "--batch_size", "2", "--samples_per_input", "3", "--load_size", "32", "--crop_size", "32",
        "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1", "--display_id", "0", "--no_html"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def unaligned_root(tmp_path_factory):
    """trainA/ and trainB/ with 3 random 32x32 images each (unpaired)."""
    root = tmp_path_factory.mktemp("unaligned")
    rng = np.random.default_rng(0)
    for folder in ("trainA", "trainB"):
        os.makedirs(root / folder)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")
    return str(root)


def build(dataroot, checkpoints, *extra):
    opt = stored_train_options(["--dataroot", dataroot, "--checkpoints_dir", str(checkpoints), "--name", "run",
                                *TINY, *extra])
    model = create_model(opt)
    model.setup(opt)
    return model, opt


def first_batch(opt):
    dataset = create_dataset(opt)
    return default_collate([dataset[0], dataset[1]])


VARIANTS = {
    "supervised": ([], ["G", "D", "T"], ["G_GAN", "G_L1", "MI", "D_real", "D_fake", "T"]),
    "unsupervised": (["--dataset_mode", "unaligned"], ["G", "D", "T"], ["G_GAN", "MI", "D_real", "D_fake", "T"]),
    "pix2pix_noise": (["--lambda_MI", "0"], ["G", "D"], ["G_GAN", "G_L1", "D_real", "D_fake"]),
    "conditional_dv": (["--conditional_D", "--mi_estimator", "dv", "--n_neg", "2"], ["G", "D", "T"],
                       ["G_GAN", "G_L1", "MI", "D_real", "D_fake", "T"]),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_step_changes_every_network_with_finite_losses(variant, demo_root, unaligned_root, tmp_path):
    extra, networks, losses = VARIANTS[variant]
    model, opt = build(unaligned_root if variant == "unsupervised" else demo_root, tmp_path, *extra)
    assert model.model_names == networks and model.loss_names == losses
    assert hasattr(model, "netT") == ("T" in networks)
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in model.networks()}
    model.set_input(first_batch(opt))
    model.optimize_parameters()
    for name, net in model.networks():
        changed = any(not torch.equal(old, new) for old, new in zip(before[name], net.parameters()))
        assert changed, f"net{name} did not change"
    values = model.get_current_losses()
    assert list(values) == losses and all(math.isfinite(v) for v in values.values())
    # 2 inputs x 3 codes: T and the L1 term see all 6 outputs; the dashboard shows 3 per input.
    assert model.fake_B_all.shape == (6, 3, 32, 32) and model.z.shape == (6, 4)
    visuals = model.get_current_visuals()
    assert list(visuals) == ["real_A", "real_B", "fake_B_0", "fake_B_1", "fake_B_2"]
    assert not torch.equal(visuals["fake_B_0"], visuals["fake_B_1"])
    d_channels = model.netD.scales[0].model[0].in_channels
    assert d_channels == (6 if "--conditional_D" in extra else 3)  # D(b) of Eq. 2 unless conditional


def test_generator_loss_is_eq8(demo_root, tmp_path):
    model, opt = build(demo_root, tmp_path, "--lambda_MI", "0.5", "--lambda_L1", "3")
    model.set_input(first_batch(opt))
    model.optimize_parameters()
    expected = model.loss_G_GAN + model.loss_G_L1 - 0.5 * model.loss_MI
    assert torch.allclose(model.loss_G, expected)
    # The L1 term compares every sample with its own input's target, weighted by lambda_L1.
    target = model.real_B.repeat_interleave(3, dim=0)
    assert torch.allclose(model.loss_G_L1, 3 * (model.fake_B_all - target).abs().mean())
    # The MI estimate with the JSD estimator lies in (-inf, 0], and T's loss is minus an estimate.
    assert model.loss_MI.item() <= 0 and model.loss_T.item() >= 0


def test_bad_options_are_named(demo_root, unaligned_root, tmp_path):
    with pytest.raises(ValueError, match="--netG"):
        build(demo_root, tmp_path, "--netG", "resnet_9blocks")
    with pytest.raises(ValueError, match="--conditional_D"):
        build(unaligned_root, tmp_path, "--dataset_mode", "unaligned", "--conditional_D")
    with pytest.raises(ValueError, match="--crop_size"):
        build(demo_root, tmp_path, "--netD", "basic")  # 32 is too small for 2 scales of a 3-layer PatchGAN


def test_sampling_codes_are_shared_seeded_and_interpolated(demo_root, tmp_path):
    model, opt = build(demo_root, tmp_path)
    model.save_networks("latest")
    common = ["--dataroot", demo_root, "--checkpoints_dir", str(tmp_path), "--name", "run", "--model", "segan",
              "--results_dir", str(tmp_path / "results"), "--num_threads", "0", "--gpu_ids", "-1"]

    def sampler(*extra):
        test_opt = TestOptions().parse(common + list(extra))
        test_model = create_model(test_opt)
        test_model.setup(test_opt)
        return test_model, test_opt

    sampling, test_opt = sampler("--n_samples", "3", "--sample_seed", "5")
    assert torch.equal(sampling.netG.state_dict()["down.1.1.weight"], model.netG.state_dict()["down.1.1.weight"])
    assert torch.equal(sampling.sample_codes, sampler("--n_samples", "3", "--sample_seed", "5")[0].sample_codes)
    assert not torch.equal(sampling.sample_codes, sampler("--n_samples", "3", "--sample_seed", "6")[0].sample_codes)
    # The same input twice in a batch: same code -> same output (a column is one style); codes differ.
    batch = default_collate([create_dataset(test_opt)[0]] * 2)
    sampling.set_input(batch)
    sampling.test()
    visuals = sampling.get_current_visuals()
    assert list(visuals) == ["real_A", "real_B", "fake_B_0", "fake_B_1", "fake_B_2"]
    assert torch.equal(visuals["fake_B_1"][0], visuals["fake_B_1"][1])
    assert not torch.equal(visuals["fake_B_0"], visuals["fake_B_1"])

    walking, _ = sampler("--interp", "4")
    steps = walking.sample_codes.diff(dim=0)
    assert walking.sample_codes.shape == (4, 4) and torch.allclose(steps, steps[:1].expand_as(steps), atol=1e-6)
    walking.set_input(batch)
    walking.test()
    assert [n for n in walking.get_current_visuals() if n.startswith("interp")] == [f"interp_{k}" for k in range(4)]
    with pytest.raises(ValueError, match="--interp"):
        sampler("--interp", "1")


def test_test_cli_writes_distinct_samples_per_input(demo_root, tmp_path):
    model, _ = build(demo_root, tmp_path)
    model.save_networks("latest")
    results = tmp_path / "results"
    test_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "run", "--model", "segan",
              "--results_dir", results, "--n_samples", "3", "--num_test", "2", "--num_threads", "0", "--gpu_ids", "-1")
    images = results / "run" / "test_latest" / "images"
    stems = sorted({name.split("_")[0] for name in os.listdir(images)})
    assert len(stems) == 2
    for stem in stems:
        samples = [np.asarray(Image.open(images / f"{stem}_fake_B_{k}.png"), dtype=np.int16) for k in range(3)]
        assert not (images / f"{stem}_fake_B_3.png").exists()
        for a in range(3):
            for b in range(a + 1, 3):
                assert np.abs(samples[a] - samples[b]).mean() > 0.5, (stem, a, b)


def test_codes_depend_on_seed_epoch_and_image_only(demo_root, tmp_path):
    """Image i's codes in epoch e come from (--seed, e, i): the same in any batch it lands in (so a batch split
    over processes draws the codes of one process), fresh MI negatives included; another epoch, other codes."""
    model, opt = build(demo_root, tmp_path, "--n_neg", "2")
    dataset = create_dataset(opt)

    def codes(*indices):
        model.set_input(default_collate([dataset[i] for i in indices]))
        with torch.no_grad():
            model.forward()
        return model.z, model.fresh_codes

    z, fresh = codes(0, 1)
    z_alone, fresh_alone = codes(1)
    assert torch.equal(z[3:], z_alone)  # 3 codes per image
    for step in ("T", "G"):  # row n * 6 + (3 i + j) pairs with output (i, j): image 1's rows are 3:6 and 9:12
        assert torch.equal(fresh[step].reshape(2, 6, 4)[:, 3:], fresh_alone[step].reshape(2, 3, 4))
    assert not torch.equal(fresh["T"], fresh["G"]) and not torch.equal(z[:3], z[3:])
    assert torch.equal(codes(0, 1)[0], z)  # reproducible
    model.on_epoch_end(opt.epoch_count)
    assert not torch.equal(codes(0, 1)[0], z)
    other_seed, _ = build(demo_root, tmp_path / "other", "--seed", "1")
    other_seed.set_input(default_collate([dataset[0], dataset[1]]))
    with torch.no_grad():
        other_seed.forward()
    assert not torch.equal(other_seed.z, z)


def test_training_with_validation_scores_the_first_code(demo_root, tmp_path):
    """train.py --val_freq scores SEGAN's first-code translation (fake_B) against B on the val split."""
    import csv
    train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "val", *TINY,
               "--n_epochs", "1", "--n_epochs_decay", "0", "--val_freq", "1")
    rows = list(csv.DictReader(open(tmp_path / "val" / "val_log.csv")))
    assert len(rows) == 1 and 0 < float(rows[0]["l1"]) < 2 and float(rows[0]["n_images"]) == 4
    assert (tmp_path / "val" / "best_net_G.pth").exists()

    model, _ = build(demo_root, tmp_path)
    model.set_input(default_collate([create_dataset(model.opt)[i] for i in range(2)]))
    model.test()
    assert torch.equal(model.fake_B, model.fake_B_0)

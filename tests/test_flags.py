"""Every flag does what it says: GAN modes (the gradient penalty, the convergence record per mode), schedules
(plateau, extending a finished run, nothing left to do), the generated-sample pool, flags a model does not use,
devices, --epoch_count, typos and the default number of loader workers."""
import csv
import math
import os

import pytest
import torch

from conftest import stored_train_options, train_main
from models import create_model
from models.networks.losses import GANLoss, conditional_d_losses
from options.train_options import TrainOptions
from util.run import convergence
from util.command_line.cli import UsageError
from models.image_pool import ImagePool

PIX2PIX = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance",
           "--load_size", "32", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
           "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--print_freq", "2"]


def args_for(demo_root, ck, name, *extra):
    return ["--dataroot", demo_root, "--checkpoints_dir", str(ck), "--name", name, *PIX2PIX, *extra]


def read(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------- GAN modes
def test_wgangp_adds_the_gradient_penalty_with_its_gradient():
    """A linear critic on pairs: its input gradient is its weight w everywhere, so the penalty is
    lambda * (|w| - 1)^2 and its gradient with respect to w is 2 lambda (|w| - 1) w / |w|."""
    torch.manual_seed(0)
    critic = torch.nn.Conv2d(6, 1, kernel_size=4, bias=False)  # 4x4 inputs -> one score per pair
    real_A, real_B, fake_B = (torch.randn(3, 3, 4, 4) for _ in range(3))
    criterion = GANLoss("wgangp")
    loss_D, loss_real, loss_fake, loss_gp = conditional_d_losses(critic, criterion, real_A, real_B, fake_B,
                                                                 lambda_gp=10.0)
    w = critic.weight.detach().flatten()
    expected = 10.0 * (w.norm() - 1) ** 2
    torch.testing.assert_close(loss_gp, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss_D, 0.5 * (loss_real + loss_fake + loss_gp))
    critic.zero_grad()
    loss_gp.backward()
    torch.testing.assert_close(critic.weight.grad.flatten(), 2 * 10.0 * (w.norm() - 1) * w / w.norm(),
                               rtol=1e-4, atol=1e-5)
    # The vanilla game has no penalty.
    assert conditional_d_losses(critic, GANLoss("vanilla"), real_A, real_B, fake_B)[3] is None


def test_each_gan_mode_records_its_own_equilibrium():
    """At the equilibrium D outputs 1/2 (vanilla: logit 0; least squares: 1/2): the record sits on the line."""
    half_logit, half = torch.zeros(4), torch.full((4,), 0.5)
    vanilla = convergence.record("vanilla", float(GANLoss("vanilla")(half_logit, True)),
                                 float(GANLoss("vanilla")(half_logit, False)))
    assert vanilla["neg_L_GAN"] == pytest.approx(math.log(4), abs=1e-6)
    assert vanilla["neg_L_GAN_minus_log4"] == pytest.approx(0, abs=1e-6)
    lsgan = convergence.record("lsgan", float(GANLoss("lsgan")(half, True)), float(GANLoss("lsgan")(half, False)))
    assert lsgan["neg_L_GAN"] == pytest.approx(0.5) and lsgan["neg_L_GAN_minus_half"] == pytest.approx(0, abs=1e-6)
    critic = convergence.record("wgangp", -2.0, 0.5)  # E[D(real)] = 2, E[D(fake)] = 0.5
    assert critic["wasserstein_estimate"] == 1.5 and "neg_L_GAN" not in critic
    assert convergence.quantity("wgangp").equilibrium is None


def test_a_wgangp_step_penalises_its_critic_and_records_the_wasserstein_estimate(tmp_path):
    """pix2pix's D step with --gan_mode wgangp and a linear critic D(x) = <w, x> + b (one score per 32x32 pair):
    its input gradient is w everywhere, so the penalty is lambda_gp * (|w| - 1)^2 whatever the interpolates, and
    E[D(real)] - E[D(fake)] is known from w, b and the pairs."""
    opt = stored_train_options(args_for(str(tmp_path), tmp_path, "w", "--gan_mode", "wgangp", "--lambda_gp", "3"))
    opt.dataset_size = 2
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup(opt)
    critic = torch.nn.Conv2d(6, 1, kernel_size=32)
    with torch.no_grad():
        critic.weight.mul_(2 / critic.weight.norm())  # |w| = 2: the penalty is lambda_gp * (2 - 1)^2 = 3
    model.netD = critic
    model.optimizer_D.param_groups[0]["params"] = list(critic.parameters())
    w, b = critic.weight.detach().clone(), critic.bias.detach().clone()
    real_A, real_B = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    model.set_input({"A": real_A, "B": real_B, "A_paths": ["a.png", "b.png"], "B_paths": ["a.png", "b.png"]})
    model.optimize_parameters()

    def score(pair):
        return (pair * w).sum(dim=(1, 2, 3)) + b

    d_real = score(torch.cat((real_A, real_B), 1)).mean()
    d_fake = score(torch.cat((real_A, model.fake_B.detach()), 1)).mean()  # the fakes D was shown
    losses = model.get_current_losses()
    assert losses["D_gp"] == pytest.approx(3.0, rel=1e-4)
    assert losses["D_real"] == pytest.approx(float(-d_real), rel=1e-4, abs=1e-5)
    assert losses["D_fake"] == pytest.approx(float(d_fake), rel=1e-4, abs=1e-5)
    row = model.pop_convergence()
    assert row["wasserstein_estimate"] == pytest.approx(float(d_real - d_fake), rel=1e-4, abs=1e-5)
    assert not torch.equal(critic.weight, w)  # and the critic took its step


# ------------------------------------------------------------------------------------------- schedules
def test_plateau_lowers_the_rate_when_the_validation_l1_rises(tmp_path):
    opt = stored_train_options(args_for(str(tmp_path), tmp_path, "p", "--lr_policy", "plateau", "--val_freq", "1"))
    opt.dataset_size = 8
    model = create_model(opt)
    model.setup(opt)
    lr = model.optimizers[0].param_groups[0]["lr"]
    model.update_learning_rate(0.5)
    for _ in range(6):
        model.update_learning_rate(None)  # epochs without a validation keep the rate
    assert model.optimizers[0].param_groups[0]["lr"] == lr
    for value in (0.6, 0.7, 0.8, 0.9, 1.0, 1.1):  # rising: no improvement for 6 validations > patience 5
        model.update_learning_rate(value)
    assert model.optimizers[0].param_groups[0]["lr"] == pytest.approx(lr * 0.2)


def test_plateau_needs_validation(tmp_path):
    with pytest.raises(UsageError, match="--val_freq"):
        TrainOptions().parse(args_for(str(tmp_path), tmp_path, "p", "--lr_policy", "plateau"))


def test_extending_a_finished_run_continues_the_new_schedule(demo_root, tmp_path):
    args = args_for(demo_root, tmp_path, "ext", "--save_epoch_freq", "1", "--n_epochs", "1", "--n_epochs_decay", "1")
    train_main(*args)
    finished = torch.load(tmp_path / "ext" / "latest_train_state.pth", weights_only=True)
    assert finished["optimizers"][0]["param_groups"][0]["lr"] == 0.0  # the old plan ended at zero
    again = train_main(*args, check=False)
    nothing = train_main(*args, "--continue_train")  # nothing left: said so, nothing written
    assert "nothing left to train" in nothing.stdout and "finished epoch 2" in nothing.stdout
    assert again.returncode != 0  # a new run on the folder is refused
    result = train_main(*args[:-4], "--n_epochs", "2", "--n_epochs_decay", "2", "--continue_train")
    assert "re-planned" in result.stdout and "--n_epochs 1 -> 2" in result.stdout
    losses = [r for r in read(tmp_path / "ext" / "loss_log.csv") if int(r["epoch"]) == 3]
    assert losses, "epoch 3 trained"
    # epoch 3 of 2 + 2 runs at 2e-4 * (1 - 1/3); the schedule's next value follows the new plan too
    log_lines = [line for line in result.stdout.splitlines() if "learning rate" in line]
    assert any("0.0001333 -> 0.0000667" in line for line in log_lines), log_lines
    # The states saved after epochs 3 and 4 (--save_epoch_freq 1) carry the new plan: 2e-4 * (1 - 2/3), then 0.
    for epoch, lr in ((3, 2e-4 / 3), (4, 0.0)):
        state = torch.load(tmp_path / "ext" / f"{epoch}_train_state.pth", weights_only=True)
        assert state["epoch"] == epoch + 1
        assert state["optimizers"][0]["param_groups"][0]["lr"] == pytest.approx(lr, abs=1e-12), epoch
    latest = torch.load(tmp_path / "ext" / "latest_train_state.pth", weights_only=True)
    assert latest["epoch"] == 5


# ------------------------------------------------------------------------------------------- the sample pool
def test_pool_size_gives_d_earlier_fakes(demo_root, tmp_path):
    opt = stored_train_options(args_for(demo_root, tmp_path, "pool", "--pool_size", "4"))
    opt.dataset_size = 8
    model = create_model(opt)
    model.setup(opt)
    assert isinstance(model.fake_pool, ImagePool) and model.fake_pool.pool_size == 4
    from data import create_dataset
    from torch.utils.data import default_collate
    dataset = create_dataset(opt)
    for start in (0, 2, 4):
        model.set_input(default_collate([dataset[i] for i in (start, start + 1)]))
        model.optimize_parameters()
    assert len(model.fake_pool) == 4  # D has been shown stored (input, output) pairs
    assert model.fake_pool.images[0].shape == (1, 6, 32, 32)
    model.save_training_state("latest", 1, 6, 6)
    opt.continue_train = True
    resumed = create_model(opt)
    resumed.setup(opt)
    assert all(torch.equal(a, b) for a, b in zip(resumed.fake_pool.images, model.fake_pool.images))


# ------------------------------------------------------------------------------------------- flags
def test_a_flag_the_model_does_not_use_is_refused(tmp_path, capsys):
    base = ["--dataroot", str(tmp_path), "--checkpoints_dir", str(tmp_path), "--model", "atme"]
    with pytest.raises(UsageError, match="--netG is not a flag of --model atme"):
        TrainOptions().parse(base + ["--netG", "resnet_9blocks"])
    with pytest.raises(UsageError, match="--ngf is not a flag of --model atme"):
        TrainOptions().parse(base + ["--ngf", "32"])
    with pytest.raises(SystemExit):
        TrainOptions().parse(base + ["--help"])
    out = capsys.readouterr().out
    assert "--dim_mults" in out and "--netG" not in out and "--ngf" not in out
    assert "--netG" in _help(["--model", "pix2pix"], capsys)


def _help(args, capsys):
    with pytest.raises(SystemExit):
        TrainOptions().parse(args + ["--help"])
    return capsys.readouterr().out


def test_a_typo_gets_a_suggestion_in_one_line(demo_root, tmp_path):
    result = train_main("--dataroot", demo_root, "--modle", "atme", check=False)
    assert result.returncode == 2
    assert "unknown flag --modle; did you mean --model?" in result.stderr
    assert "--help" in result.stderr and "usage:" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_ids_naming_a_missing_gpu_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"--gpu_ids 3\b.*no CUDA.*--gpu_ids -1"):  # the flag, why, and the fix
        TrainOptions().parse(["--dataroot", str(tmp_path), "--gpu_ids", "3"])
    assert TrainOptions().parse(["--dataroot", str(tmp_path)]).gpu_ids == []  # the default fits the machine
    assert TrainOptions().parse(["--dataroot", str(tmp_path), "--gpu_ids", "-1"]).gpu_ids == []


def test_epoch_count_numbers_a_fresh_run_and_is_refused_on_resume(demo_root, tmp_path):
    args = args_for(demo_root, tmp_path, "count", "--epoch_count", "3", "--n_epochs", "4", "--n_epochs_decay", "0",
                    "--save_epoch_freq", "1")
    train_main(*args)
    assert [int(r["epoch"]) for r in read(tmp_path / "count" / "convergence.csv")] == [3, 4]
    assert (tmp_path / "count" / "3_net_G.pth").is_file() and not (tmp_path / "count" / "1_net_G.pth").exists()
    refused = train_main(*args, "--continue_train", check=False)
    assert refused.returncode == 2 and "--epoch_count" in refused.stderr and "drop --epoch_count" in refused.stderr


def test_num_threads_defaults_to_the_cores_the_process_may_use(tmp_path, monkeypatch):
    cores = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(0, cores[:1])  # this thread may run on one core only
        assert TrainOptions().parse(["--dataroot", str(tmp_path)]).num_threads == 1
    finally:
        os.sched_setaffinity(0, cores)
    if len(cores) >= 2:
        assert TrainOptions().parse(["--dataroot", str(tmp_path)]).num_threads >= 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert TrainOptions().parse(["--dataroot", str(tmp_path)]).num_threads == 8  # at most 8 loader workers

import json

import pytest

from conftest import stored_train_options
from util.command_line.arg_types import gpu_ids, int_tuple, str2bool
from util.command_line.cli import UsageError
from options.test_options import TestOptions


def train_args(tmp_path, *extra):
    return ["--dataroot", str(tmp_path), "--checkpoints_dir", str(tmp_path / "ck"), "--name", "run", *extra]


def test_booleans_parse_from_the_shell(tmp_path):
    opt = stored_train_options(train_args(tmp_path, "--no_flip", "false", "--serial_batches"))
    assert opt.no_flip is False and opt.serial_batches is True
    opt = stored_train_options(train_args(tmp_path, "--no_flip", "TRUE"))
    assert opt.no_flip is True
    with pytest.raises(UsageError, match="--no_flip.*expected a boolean"):
        stored_train_options(train_args(tmp_path, "--no_flip", "maybe"))
    assert str2bool("off") is False and str2bool("1") is True


def test_int_tuples_and_gpu_ids(tmp_path):
    assert int_tuple("1,2,4,8") == (1, 2, 4, 8)
    assert int_tuple("(1, 1, 2)") == (1, 1, 2)
    assert int_tuple("1 2") == (1, 2)
    opt = stored_train_options(train_args(tmp_path, "--gpu_ids", "-1"))
    assert opt.gpu_ids == []
    assert gpu_ids("0,1") == [0, 1] and gpu_ids("-1") == []


def test_model_changes_defaults_and_adds_flags(tmp_path):
    opt = stored_train_options(train_args(tmp_path, "--model", "pix2pix"))
    assert (opt.netG, opt.norm, opt.dataset_mode, opt.gan_mode, opt.lambda_L1) == ("unet_256", "batch", "aligned", "vanilla", 100.0)
    assert (opt.lr, opt.beta1, opt.n_epochs, opt.n_epochs_decay) == (0.0002, 0.5, 100, 100)


def test_unknown_model_lists_available(tmp_path):
    with pytest.raises(ValueError, match="available: .*pix2pix"):
        stored_train_options(train_args(tmp_path, "--model", "nosuchmodel"))


def test_unknown_dataset_mode_lists_available(tmp_path):
    with pytest.raises(ValueError, match="aligned"):
        stored_train_options(train_args(tmp_path, "--dataset_mode", "nosuchmode"))


def test_options_are_written_with_defaults_marked(tmp_path):
    stored_train_options(train_args(tmp_path, "--model", "pix2pix", "--ngf", "32"))
    run = tmp_path / "ck" / "run"
    text = (run / "train_opt.txt").read_text()
    ngf_line = next(line for line in text.splitlines() if line.strip().startswith("ngf:"))
    assert "[default: 64]" in ngf_line
    lr_line = next(line for line in text.splitlines() if line.strip().startswith("lr:"))
    assert "default" not in lr_line
    stored = json.loads((run / "train_opt.json").read_text())
    assert stored["ngf"] == 32 and stored["model"] == "pix2pix"


def test_test_options_take_the_stored_architecture(tmp_path):
    stored_train_options(train_args(tmp_path, "--model", "pix2pix", "--ngf", "32", "--netG", "unet_128",
                                    "--norm", "instance", "--crop_size", "128"))
    # no architecture flags given: they come from the run, including the model
    opt = TestOptions().parse(["--dataroot", str(tmp_path), "--checkpoints_dir", str(tmp_path / "ck"), "--name", "run"])
    assert (opt.model, opt.ngf, opt.netG, opt.norm, opt.crop_size, opt.load_size) == ("pix2pix", 32, "unet_128", "instance", 128, 128)
    assert opt.no_flip and opt.serial_batches and not opt.isTrain


def test_test_options_reject_a_contradicting_flag(tmp_path):
    stored_train_options(train_args(tmp_path, "--model", "pix2pix", "--ngf", "32"))
    with pytest.raises(ValueError, match=r"--ngf 64 \(the run was trained with --ngf 32\)"):
        TestOptions().parse(["--dataroot", str(tmp_path), "--checkpoints_dir", str(tmp_path / "ck"),
                             "--name", "run", "--ngf", "64"])
    # repeating the stored value is fine
    opt = TestOptions().parse(["--dataroot", str(tmp_path), "--checkpoints_dir", str(tmp_path / "ck"),
                               "--name", "run", "--ngf", "32", "--num_test", "3"])
    assert opt.ngf == 32 and opt.num_test == 3


def test_model_architecture_flags_are_checked_at_test_time(tmp_path):
    stored_train_options(train_args(tmp_path, "--model", "atme", "--dim", "16", "--dim_mults", "1,2"))
    base = ["--dataroot", str(tmp_path), "--checkpoints_dir", str(tmp_path / "ck"), "--name", "run"]
    opt = TestOptions().parse(base)
    assert opt.model == "atme" and opt.dim == 16 and tuple(opt.dim_mults) == (1, 2)
    with pytest.raises(ValueError, match="--dim 32"):
        TestOptions().parse(base + ["--dim", "32"])


def test_help_shows_the_models_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        stored_train_options(["--model", "atme", "--help"])
    out = capsys.readouterr().out
    assert "--dim_mults" in out and "--pool_stores" in out

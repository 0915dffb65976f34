"""--help a person can read, and flags that are never guessed: no abbreviations, a flag of another model named as
such, errors that say what is wrong first and what to type next."""
import pytest
import torch

from conftest import train_main
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.command_line.cli import COMMAND_LINE, UsageError, format_error


def help_text(options, args, capsys):
    with pytest.raises(SystemExit):
        options.parse(args + ["--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("model", ["pix2pix", "atme", "segan"])
def test_help_shows_booleans_as_flags_and_one_default_each_as_typed(model, capsys):
    text = help_text(TrainOptions(), ["--model", model], capsys)
    assert "[VERBOSE]" not in text and "--verbose " in text  # `--verbose`, not `--verbose [VERBOSE]`
    assert "(1, 2, 4, 8)" not in text and "inf" not in text.replace("info", "")
    for line in text.splitlines():
        assert line.count("default") <= 1, line
    assert len(text.splitlines()) < 175  # was 243-286 lines
    usage = text.splitlines()[0]
    assert usage.startswith("usage: train.py --dataroot DIR [--name NAME]") and len(text.split("usage:")) == 2
    assert len(help_text(TestOptions(), ["--model", model], capsys).splitlines()) < 115  # was 132-162


def test_atme_help_writes_tuples_the_way_they_are_typed(capsys):
    text = help_text(TrainOptions(), ["--model", "atme"], capsys)
    assert "(default: 1,2,4,8)" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="the default on a machine without CUDA")
def test_gpu_ids_default_fits_a_machine_without_cuda(capsys):
    text = help_text(TrainOptions(), [], capsys)
    assert "(default: 0)" not in text.split("--gpu_ids", 1)[1].split("--cpu_allocator")[0]
    assert TrainOptions().parse(["--dataroot", "x"]).gpu_ids == []


def test_abbreviations_are_refused_with_the_full_name():
    with pytest.raises(UsageError, match=r"unknown flag --crop \(flags are not abbreviated\); did you mean "
                                         r"--crop_size\?"):
        TrainOptions().parse(["--dataroot", "x", "--crop", "64"])


def test_a_flag_of_another_model_names_its_model():
    with pytest.raises(UsageError, match="--lambda_MI is a flag of --model segan, not of --model pix2pix"):
        TrainOptions().parse(["--dataroot", "x", "--model", "pix2pix", "--lambda_MI", "1"])
    with pytest.raises(UsageError, match="--netG is not a flag of --model atme.*it is a flag of --model pix2pix or "
                                         "--model segan"):
        TrainOptions().parse(["--dataroot", "x", "--model", "atme", "--netG", "unet"])
    with pytest.raises(UsageError, match=r"unknown flag --lambda_L2; did you mean --lambda_L1"):
        TrainOptions().parse(["--dataroot", "x", "--model", "pix2pix", "--lambda_L2", "1"])


def test_long_errors_say_what_is_wrong_first_and_keep_commands_whole():
    message = ("/some/where/checkpoints/a_rather_long_run_name already holds a run (train_opt.json, loss_log.csv, "
               "latest_net_G.pth, ...). Resume it with --continue_train, start a new run under another --name, or "
               "pass --start_over to move that run aside and start afresh\n"
               "  python train.py --dataroot ./datasets/facades --name a_rather_long_run_name --model pix2pix "
               "--direction BtoA --start_over")
    lines = format_error("train.py", message).splitlines()
    assert lines[0] == ("train.py: error: /some/where/checkpoints/a_rather_long_run_name already holds a run "
                        "(train_opt.json, loss_log.csv, latest_net_G.pth, ...).")
    assert all(len(line) <= 100 for line in lines[1:-1]) and lines[-1].strip().startswith("python train.py")
    assert any(line.startswith("Resume it with --continue_train") for line in lines)
    assert format_error("train.py", "short one") == "train.py: error: short one"


def test_refusals_carry_no_traceback_hint(demo_root, tmp_path):
    refused = train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "n", "--continue_train",
                         check=False)
    assert refused.returncode == 2 and "--verbose" not in refused.stderr
    assert all(len(line) <= 100 or COMMAND_LINE.match(line) for line in refused.stderr.splitlines()[1:])


def test_output_to_a_file_has_no_blank_bar_lines_nor_unchanged_learning_rates(demo_root, tmp_path):
    """Piped to a file, each epoch's bar ends as a line of its own (not a line of spaces), and the learning rate is
    logged when it changes, not every epoch."""
    result = train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "f", "--model", "pix2pix",
                        "--netG", "unet", "--ngf", "8", "--ndf", "8", "--load_size", "32", "--crop_size", "32",
                        "--batch_size", "4", "--num_threads", "0", "--display_id", "0", "--gpu_ids", "-1",
                        "--n_epochs", "2", "--n_epochs_decay", "1")
    output = result.stdout + result.stderr
    pieces = [p for line in output.split("\n") for p in line.split("\r")]
    assert not [p for p in pieces if p and not p.strip()], "a line of spaces"
    rates = [line for line in output.splitlines() if "learning rate" in line]
    # epochs 1 and 2 run at 2e-4, epoch 3 at 1e-4, then 0: two changes, two lines
    assert len(rates) == 2 and "0.0002000 -> 0.0001000" in rates[0] and "0.0001000 -> 0.0000000" in rates[1], rates



def test_an_error_of_hundreds_of_characters_is_not_one_line():
    """A 450-character refusal: its first sentence (what is wrong) on the first line, the advice wrapped under it."""
    message = ("the discriminator pool /a/run/disc_pool_a.npy was made for 200 images of 30 x 30 maps, but this run "
               "now has 100 images of 30 x 30 maps (dataset size, --crop_size or --netD changed). Resume with the "
               "run's own data and options (drop --dataroot, --max_dataset_size, --crop_size and --netD: "
               "--continue_train takes them from train_opt.json), or start afresh with --start_over instead of "
               "--continue_train, or under another --name")
    assert len(message) > 400
    lines = format_error("train.py", message).splitlines()
    assert lines[0].endswith("(dataset size, --crop_size or --netD changed).") and len(lines[0]) < 200
    assert len(lines) >= 4 and all(len(line) <= 100 for line in lines[1:])
    assert lines[1].startswith("Resume with the run's own data")

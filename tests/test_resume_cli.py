"""A resume continues the run it resumes, and every refusal of train.py and test.py names a command that works:
each test below types the advised command as printed and checks that it succeeds."""
import json
import os
import re
import shlex
import shutil

import pytest
import torch

from conftest import folder_state, printed_commands, script_args, test_main, train_main
from util.run.integrity import sha256_of

TINY = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--load_size", "36", "--crop_size", "32",
        "--batch_size", "4", "--num_threads", "0", "--display_id", "0", "--seed", "0", "--print_freq", "4",
        "--save_latest_freq", "1000", "--gpu_ids", "-1"]


def advised(stderr, script="train.py"):
    """The one command a refusal tells the user to type, as arguments for `script`."""
    commands = printed_commands(stderr)
    assert len(commands) == 1, stderr
    return script_args(commands[0], script)


def make_epoch_one_the_latest(run):
    """Make the epoch-1 training state the latest, as a run stopped after epoch 1 leaves it; the set's checksum
    list records the state it now holds, as a save would have."""
    os.replace(run / "1_train_state.pth", run / "latest_train_state.pth")
    manifest = run / "latest_checksums.json"
    sums = json.loads(manifest.read_text())
    sums["sha256"]["latest_train_state.pth"] = sha256_of(run / "latest_train_state.pth")
    manifest.write_text(json.dumps(sums))


def train_stopped_run(demo_root, ck):
    """A run of 1 + 1 epochs in `ck`/run stopped after its first epoch (its epoch-1 state made the latest)."""
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "run", *TINY, "--n_epochs", "1",
               "--n_epochs_decay", "1", "--save_epoch_freq", "1", "--lr", "0.0003", "--gan_mode", "lsgan")
    make_epoch_one_the_latest(ck / "run")
    os.remove(ck / "run" / "2_train_state.pth")
    return ck


@pytest.fixture(scope="module")
def stopped_run_template(demo_root, tmp_path_factory):
    return train_stopped_run(demo_root, tmp_path_factory.mktemp("stopped") / "ck")


@pytest.fixture
def stopped_run(stopped_run_template, tmp_path):
    """The stopped run, trained once per module and copied into this test's own folder (the copy records the
    template's --checkpoints_dir; a test of what a resume changes trains its own: `train_stopped_run`)."""
    ck = tmp_path / "ck"
    shutil.copytree(stopped_run_template, ck)
    return ck


def test_a_plain_resume_continues_with_the_runs_own_options(demo_root, monkeypatch, tmp_path):
    ck = train_stopped_run(demo_root, tmp_path / "ck")
    before = json.load(open(ck / "run" / "train_opt.json"))
    monkeypatch.chdir(tmp_path)  # nothing may depend on being typed from the repository with its defaults
    result = train_main("--checkpoints_dir", ck, "--name", "run", "--continue_train")
    assert "WARNING" not in result.stdout + result.stderr, result.stdout  # nothing typed, nothing changed
    after = json.load(open(ck / "run" / "train_opt.json"))
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == set() and "continue_train" not in after, changed  # an invocation flag is never stored
    assert after["batch_size"] == 4 and after["n_epochs"] + after["n_epochs_decay"] == 2 and after["display_id"] == 0
    state = torch.load(ck / "run" / "latest_train_state.pth", weights_only=False)
    assert state["epoch"] == 3  # epoch 2 of 2 was trained, not a re-planned 200
    # Adam stepped 8 images / 4 per step = 2 times per epoch: the run's own batch size
    assert {int(s["step"]) for s in state["optimizers"][0]["state"].values()} == {4}
    # the run's learning rate and schedule: epoch 2 of 1 + 1 runs at 3e-4 * (1 - 1/2), then decays to zero
    assert state["optimizers"][0]["param_groups"][0]["initial_lr"] == pytest.approx(3e-4)


def test_a_typed_change_is_one_warning_old_to_new(stopped_run, demo_root):
    result = train_main("--checkpoints_dir", stopped_run, "--name", "run", "--continue_train", "--print_freq", "8",
                        "--lr", "0.0001")
    warnings = [line for line in result.stdout.splitlines() if "WARNING --continue_train" in line]
    assert len(warnings) == 2, result.stdout
    assert any("--lr 0.0003 -> 0.0001" in line for line in warnings)
    assert any("--print_freq 4 -> 8" in line for line in warnings)
    assert json.load(open(stopped_run / "run" / "train_opt.json"))["lr"] == 0.0001


@pytest.mark.parametrize("flag, value, old", [("--gan_mode", "vanilla", "--gan_mode is vanilla, the run has lsgan"),
                                              ("--netG", "unet_128", "--netG is unet_128, the run has unet"),
                                              ("--model", "atme", "--model is atme, the run has pix2pix")])
def test_architecture_and_loss_changes_are_refused_and_the_advice_resumes(stopped_run, flag, value, old):
    before = folder_state(stopped_run, mtimes=True)
    refused = train_main("--checkpoints_dir", stopped_run, "--name", "run", "--continue_train", flag, value,
                         check=False)
    assert refused.returncode == 2 and old in refused.stderr, refused.stderr
    assert folder_state(stopped_run, mtimes=True) == before  # a refused command changes nothing on disk
    if flag == "--model":
        return  # atme's flags differ: the message names the old model, the other cases follow the advice
    argv = advised(refused.stderr)
    assert flag not in argv
    train_main(*argv)
    assert torch.load(stopped_run / "run" / "latest_train_state.pth", weights_only=False)["epoch"] == 3


def test_a_finished_run_needs_larger_totals_and_the_advice_extends_it(stopped_run):
    train_main("--checkpoints_dir", stopped_run, "--name", "run", "--continue_train")  # finish it
    before = folder_state(stopped_run, mtimes=True)
    nothing = train_main("--checkpoints_dir", stopped_run, "--name", "run", "--continue_train")
    assert "nothing left to train" in nothing.stdout and folder_state(stopped_run, mtimes=True) == before
    argv = advised(nothing.stdout)
    assert "--n_epochs" in argv
    train_main(*argv)
    assert torch.load(stopped_run / "run" / "latest_train_state.pth", weights_only=False)["epoch"] > 3


def test_resuming_a_run_that_does_not_exist_lists_the_runs_before_building_anything(stopped_run, demo_root,
                                                                                    monkeypatch):
    import train

    def no_dataset(opt):
        raise AssertionError("the data set was built before the run was checked")

    monkeypatch.setattr(train, "create_dataset", no_dataset)
    refused = train_main("--dataroot", demo_root, "--checkpoints_dir", stopped_run, "--name", "nope", *TINY,
                         "--n_epochs", "1", "--n_epochs_decay", "0", "--continue_train", check=False)
    assert refused.returncode == 2 and "there is no run 'nope'" in refused.stderr
    assert "Runs in" in refused.stderr and "run." in refused.stderr
    assert "--verbose" not in refused.stderr
    monkeypatch.undo()
    argv = advised(refused.stderr)
    assert "--continue_train" not in argv
    train_main(*argv)
    assert (stopped_run / "nope" / "latest_train_state.pth").is_file()


def test_a_run_killed_before_its_first_save_is_led_to_start_over(demo_root, tmp_path):
    ck = tmp_path / "ck"
    args = ["--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "k", *TINY, "--n_epochs", "1",
            "--n_epochs_decay", "0"]
    train_main(*args)
    for name in os.listdir(ck / "k"):  # as if killed during the first save: options and logs, no state
        if name.endswith(".pth"):
            os.remove(ck / "k" / name)
    resumed = train_main(*args, "--continue_train", check=False)
    assert resumed.returncode == 2 and "saved no resumable state" in resumed.stderr
    argv = advised(resumed.stderr)
    assert "--start_over" in argv and "--continue_train" not in argv
    train_main(*argv)
    assert (ck / "k" / "latest_train_state.pth").is_file()


def test_a_missing_epoch_lists_the_ones_there_are(stopped_run):
    refused = train_main("--checkpoints_dir", stopped_run, "--name", "run", "--continue_train", "--epoch", "7",
                         check=False)
    assert refused.returncode == 2 and "It has latest;" in refused.stderr, refused.stderr
    train_main(*advised(refused.stderr))


def test_test_py_on_an_unknown_name_or_epoch_says_what_exists_before_building_anything(stopped_run, demo_root,
                                                                                       tmp_path, monkeypatch):
    import test as test_cli

    def no_dataset(opt):
        raise AssertionError("the data set was built before the run was checked")

    monkeypatch.setattr(test_cli, "create_dataset", no_dataset)
    common = ["--dataroot", demo_root, "--checkpoints_dir", stopped_run, "--results_dir", tmp_path / "res"]
    refused = test_main(*common, "--name", "typo", check=False)
    assert refused.returncode == 2 and "no run folder" in refused.stderr and "Runs in" in refused.stderr
    wrong_epoch = test_main(*common, "--name", "run", "--epoch", "9", check=False)
    assert wrong_epoch.returncode == 2 and "It has 1, 2, latest;" in wrong_epoch.stderr, wrong_epoch.stderr
    monkeypatch.undo()
    for message in (refused.stderr, wrong_epoch.stderr):
        test_main(*advised(message, "test.py"))


def test_atme_pool_refusal_changes_nothing_and_its_advice_resumes(demo_root, tmp_path):
    """A resume on other data (fewer images) does not fit the run's discriminator pool: refused before the run
    folder is touched (train_opt.json keeps the run's options), and dropping the flags it names resumes."""
    ck = tmp_path / "ck"
    atme = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
            "--batch_size", "2", "--load_size", "32", "--crop_size", "32", "--num_threads", "0", "--seed", "0",
            "--gpu_ids", "-1", "--display_id", "0", "--no_html"]
    base = ["--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "a", *atme]
    train_main(*base, "--n_epochs", "1", "--n_epochs_decay", "1", "--save_epoch_freq", "1")
    make_epoch_one_the_latest(ck / "a")
    before = folder_state(ck / "a", mtimes=True)
    typed = ["--checkpoints_dir", str(ck), "--name", "a", "--continue_train", "--max_dataset_size", "4"]
    refused = train_main(*typed, check=False)
    assert refused.returncode == 2 and "discriminator pool" in refused.stderr, refused.stderr
    assert folder_state(ck / "a", mtimes=True) == before
    advice = refused.stderr.split("\n", 1)[1]
    named = [flag for flag in ("--dataroot", "--max_dataset_size", "--crop_size", "--netD") if f"{flag}" in advice]
    kept = [a for i, a in enumerate(typed) if a not in named and (i == 0 or typed[i - 1] not in named)]
    assert "--max_dataset_size" in named and kept == ["--checkpoints_dir", str(ck), "--name", "a", "--continue_train"]
    train_main(*kept)
    assert torch.load(ck / "a" / "latest_train_state.pth", weights_only=False)["epoch"] == 3


def test_a_second_run_on_the_folder_is_refused_and_each_advised_flag_works(stopped_run, demo_root):
    """"already holds a run ... Resume it with --continue_train ... or pass --start_over": both, added to the same
    command, work (the resume needs nothing else typed)."""
    command = ["--dataroot", demo_root, "--checkpoints_dir", stopped_run, "--name", "run", *TINY, "--n_epochs", "1",
               "--n_epochs_decay", "1", "--lr", "0.0003", "--gan_mode", "lsgan"]
    refused = train_main(*command, check=False)
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    assert "--continue_train" in refused.stderr and "--start_over" in refused.stderr
    resumed = train_main(*command, "--continue_train")
    assert "WARNING" not in resumed.stdout  # the same flags as the run's: nothing changes
    assert torch.load(stopped_run / "run" / "latest_train_state.pth", weights_only=False)["epoch"] == 3
    both = train_main(*command, "--continue_train", "--start_over", check=False)
    assert both.returncode == 2 and "contradict" in both.stderr
    train_main(*command, "--start_over")
    assert any(name.startswith("run.old-") for name in os.listdir(stopped_run))


def advised_commands(stderr, prog="train.py"):
    """The commands a refusal shows on lines of their own, as argument lists (without `python train.py`)."""
    return [script_args(command, prog) for command in printed_commands(stderr)]


def test_the_already_holds_a_run_refusal_shows_whole_commands_that_work(stopped_run, demo_root):
    """Each command the refusal prints, typed as shown: the short one resumes the run with its own options,
    the other starts afresh with the refused command's flags and moves the old run aside."""
    command = ["--dataroot", demo_root, "--checkpoints_dir", str(stopped_run), "--name", "run", *TINY,
               "--n_epochs", "1", "--n_epochs_decay", "1", "--lr", "0.0003", "--gan_mode", "lsgan"]
    refused = train_main(*command, check=False)
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    resume, start_over = advised_commands(refused.stderr)
    assert resume == ["--name", "run", "--checkpoints_dir", str(stopped_run), "--continue_train"]
    resumed = train_main(*resume)
    assert "WARNING" not in resumed.stdout  # nothing typed, nothing changed
    assert torch.load(stopped_run / "run" / "latest_train_state.pth", weights_only=True)["epoch"] == 3
    assert start_over[-1] == "--start_over" and start_over[:-1] == [str(a) for a in command]
    train_main(*start_over)
    assert any(name.startswith("run.old-") for name in os.listdir(stopped_run))


def demo_flags(model):
    """The train.py flags scripts/demo.sh gives `model` (its ARCH line and the shared ones)."""
    from conftest import ROOT
    script = open(os.path.join(ROOT, "scripts", "demo.sh")).read()
    arch = re.search(rf"^\s*{model}\)\s*ARCH=\((.*?)\)\s*;;", script, re.S | re.M).group(1)
    display = re.search(r"(--display_id \S+ --print_freq \S+ --display_freq \S+ --update_html_freq \S+ "
                        r"--save_latest_freq \S+)", script).group(1)
    return shlex.split(arch.replace("\\\n", " ")) + shlex.split(display)


def test_a_plain_resume_of_the_demo_run_keeps_its_batch_size_schedule_and_display(demo_root, tmp_path):
    """The demo's ATME run, stopped after its first epoch, resumed with `--name --continue_train` only: its batch
    size, its 1 + 1 epochs and its display settings, nothing else changed."""
    ck = tmp_path / "ck"
    flags = demo_flags("atme")
    assert "--batch_size" in flags and "--display_id" in flags
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "demo_atme", "--model", "atme",
               "--load_size", "36", "--crop_size", "32", "--num_threads", "0", "--seed", "0", *flags,
               "--n_epochs", "1", "--n_epochs_decay", "1", "--save_epoch_freq", "1", "--gpu_ids", "-1")
    make_epoch_one_the_latest(ck / "demo_atme")
    before = json.load(open(ck / "demo_atme" / "train_opt.json"))
    result = train_main("--checkpoints_dir", ck, "--name", "demo_atme", "--continue_train")
    assert "WARNING" not in result.stdout and "visdom" not in result.stdout.lower()
    after = json.load(open(ck / "demo_atme" / "train_opt.json"))
    assert {k for k in before if before[k] != after.get(k)} == set() and "continue_train" not in after
    assert after["batch_size"] == before["batch_size"] == int(flags[flags.index("--batch_size") + 1])
    assert torch.load(ck / "demo_atme" / "latest_train_state.pth", weights_only=False)["epoch"] == 3


def test_test_py_with_flags_that_contradict_the_run_names_the_command_without_them(stopped_run, demo_root,
                                                                                  tmp_path):
    common = ["--dataroot", demo_root, "--checkpoints_dir", stopped_run, "--name", "run", "--results_dir",
              tmp_path / "res"]
    refused = test_main(*common, "--netG", "resnet_6blocks", "--ngf", "16", check=False)
    assert refused.returncode == 2 and "--netG resnet_6blocks (the run was trained with --netG unet)" in refused.stderr
    argv = advised(refused.stderr, "test.py")
    assert "--netG" not in argv and "--ngf" not in argv
    test_main(*argv)
    assert (tmp_path / "res" / "run" / "test_latest" / "index.html").is_file()

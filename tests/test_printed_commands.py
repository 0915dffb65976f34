"""Every command the framework prints works when typed as printed, for a flat run name and a nested one
(group/run): the refusals of train.py and test.py, the resume on the run's page, pix2pix's `--model test`.
The fast tests type them in this process; the slow one types them into a shell whose PATH has no venv."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, folder_state, printed_commands, script_args, test_main, train_main
from datasets.make_demo_dataset import make_demo_dataset
from options.train_options import TrainOptions
from util.command_line import commands

TINY = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--load_size", "36", "--crop_size", "32",
        "--batch_size", "4", "--num_threads", "0", "--display_id", "0", "--seed", "0", "--gpu_ids", "-1",
        "--n_epochs", "1", "--n_epochs_decay", "0"]
NAMES = ["a", "group/a"]


def only_command(text):
    found = printed_commands(text)
    assert len(found) == 1, text
    return found[0]


@pytest.mark.parametrize("name", NAMES)
def test_a_resume_of_a_run_that_saved_nothing_is_answered_with_a_start_over_that_works(tmp_path, demo_root, name,
                                                                                       monkeypatch):
    ck = tmp_path / "ck"
    from models.pix2pix_model import Pix2PixModel

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the run dies before its first save, after it took its folder
    with monkeypatch.context() as patch:
        patch.setattr(Pix2PixModel, "optimize_parameters", killed)
        train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", name, *TINY, check=False)
    assert (ck / name / "train_opt.json").exists()
    refused = train_main("--checkpoints_dir", ck, "--name", name, "--continue_train", check=False)
    assert refused.returncode == 2 and "saved no resumable state" in refused.stderr
    advice = script_args(only_command(refused.stderr), "train.py")
    assert "--dataroot" in advice and advice[advice.index("--name") + 1] == name
    train_main(*advice)  # typed as printed
    assert (ck / name / "latest_net_G.pth").exists()


@pytest.mark.parametrize("name", NAMES)
def test_resuming_a_run_that_does_not_exist_offers_one_that_does(tmp_path, demo_root, name):
    ck = tmp_path / "ck"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", name, *TINY)
    refused = train_main("--checkpoints_dir", ck, "--name", "nosuch", "--continue_train", check=False)
    assert refused.returncode == 2 and f"Runs in {ck}: {name}." in refused.stderr
    advice = script_args(only_command(refused.stderr), "train.py")
    assert advice[advice.index("--name") + 1] == name and "--continue_train" in advice
    done = train_main(*advice)  # the run has finished: the resume says so and leaves it
    assert "nothing left to train" in done.stdout + done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_test_py_on_a_name_that_does_not_exist_names_the_nested_run_that_does(tmp_path, demo_root, name):
    ck = tmp_path / "ck"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", name, *TINY)
    refused = test_main("--checkpoints_dir", ck, "--name", "nosuch", "--results_dir", tmp_path / "res",
                        "--dataroot", demo_root, check=False)
    assert refused.returncode == 2 and f"Runs in {ck}: {name}." in refused.stderr
    test_main(*script_args(only_command(refused.stderr), "test.py"))
    assert any((tmp_path / "res" / name).iterdir())


@pytest.mark.parametrize("name", NAMES)
def test_the_refusal_and_the_page_give_one_resume_command(tmp_path, demo_root, name):
    ck = tmp_path / "ck"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", name, *TINY)
    refused = train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", name, *TINY, check=False)
    resume = printed_commands(refused.stderr)[0]
    options = TrainOptions()
    opt = options.parse(["--checkpoints_dir", str(ck), "--name", name, "--continue_train"])
    assert resume == options.resume_command(opt) == commands.resume_command(name, str(ck))
    assert script_args(resume, "train.py") == ["--name", name, "--checkpoints_dir", str(ck), "--continue_train"]


def test_pix2pix_model_test_is_refused_with_the_test_py_command_that_does_it(tmp_path, demo_root):
    ck, photos = tmp_path / "ck", tmp_path / "photos"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "run", *TINY)
    os.makedirs(photos)
    for name in sorted(os.listdir(os.path.join(demo_root, "test")))[:2]:
        shutil.copy(os.path.join(demo_root, "test", name), photos / name)
    refused = test_main("--model", "test", "--checkpoints_dir", ck, "--name", "run", "--dataroot", photos,
                        "--results_dir", tmp_path / "res", check=False)
    assert refused.returncode == 2 and "--dataset_mode single" in refused.stderr
    advice = script_args(only_command(refused.stderr), "test.py")
    assert "--model" not in advice
    test_main(*advice)


@pytest.mark.parametrize("flag, value", [("--phase", "../../elsewhere/ph2"), ("--phase", "/abs/dir"),
                                         ("--epoch", "../other/latest"), ("--phase", "a/b")])
def test_path_flags_stay_inside_and_a_refusal_writes_nothing(tmp_path, demo_root, flag, value):
    ck = tmp_path / "ck"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "run", *TINY)
    before = folder_state(tmp_path)
    refused = test_main("--checkpoints_dir", ck, "--name", "run", "--results_dir", tmp_path / "res", flag, value,
                        check=False)
    assert refused.returncode == 2 and f"{flag} {value!r}" in refused.stderr
    assert folder_state(tmp_path) == before and not os.path.exists("/abs/dir")
    refused = train_main("--checkpoints_dir", ck, "--name", "run", "--continue_train", flag, value, check=False)
    assert refused.returncode == 2 and f"{flag} {value!r}" in refused.stderr and folder_state(tmp_path) == before


def test_the_usage_line_does_not_show_name_as_required():
    usage = TrainOptions().build_parser([]).format_usage()
    assert "[--name NAME]" in usage and re.search(r"(?<!\[)--name NAME", usage) is None


@pytest.mark.slow  # starts shells
@pytest.mark.parametrize("name", NAMES)
def test_printed_commands_work_in_a_shell_without_the_venv(tmp_path, name):
    """From the repository root, with a PATH that has no venv on it: the refusal's resume, typed into bash."""
    data = tmp_path / "demo"
    make_demo_dataset(str(data), size=32, n_train=4, n_val=2, n_test=2, seed=0)
    ck = tmp_path / "ck"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = "/usr/bin:/bin"
    env["OMP_NUM_THREADS"] = "1"
    first = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "train.py", "--dataroot", str(data),
                            "--checkpoints_dir", str(ck), "--name", name, *TINY, "--n_epochs", "2"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    again = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "train.py", "--dataroot", str(data),
                            "--checkpoints_dir", str(ck), "--name", name, *TINY], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    resume = printed_commands(again.stderr)[0]
    assert resume.startswith(".venv/bin/python train.py "), resume
    typed = subprocess.run(["bash", "-c", resume + " --n_epochs 3"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    assert typed.returncode == 0, typed.stderr[-3000:]
    assert "resuming from" in typed.stdout + typed.stderr
    page = (ck / name / "web" / "index.html").read_text()
    assert "Training finished 3 of 3 epochs." in page
    # "no run 'nosuch'": the run it offers instead, typed into the shell
    nosuch = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "train.py", "--checkpoints_dir", str(ck),
                             "--name", "nosuch", "--continue_train"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    offered = printed_commands(nosuch.stderr)[0]
    typed = subprocess.run(["bash", "-c", offered], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert typed.returncode == 0 and "nothing left to train" in typed.stdout + typed.stderr, typed.stderr[-3000:]


def test_a_demo_run_is_resumed_through_the_demo(monkeypatch):
    """train.py started by scripts/demo.sh prints the demo's own resume, which also tests the run afterwards."""
    monkeypatch.setenv("LAUNCHED_BY", "scripts/demo.sh")
    monkeypatch.setenv("DEMO_MODEL", "atme")
    monkeypatch.setenv("DEMO_NAME", "demo_atme")
    assert commands.resume_command("demo_atme").endswith("bash scripts/demo.sh --continue_train")
    monkeypatch.setenv("DEMO_MODEL", "pix2pix")
    monkeypatch.setenv("DEMO_NAME", "mine")
    assert commands.resume_command("mine") == \
        f"MODEL=pix2pix NAME=mine {commands.command('demo', ['--continue_train'])}"
    assert "LAUNCHED_BY=scripts/demo.sh" in open(os.path.join(ROOT, "scripts", "demo.sh")).read()
    monkeypatch.delenv("LAUNCHED_BY")
    assert "train.py --name mine --continue_train" in commands.resume_command("mine")

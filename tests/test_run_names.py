"""A run name stays inside --checkpoints_dir and --results_dir: each bad form is refused by train.py (also with
--start_over and --continue_train) and test.py before anything is created or moved, with an accepted form."""
import os

import pytest

from conftest import folder_state, test_main, train_main
from util.command_line.cli import UsageError
from util.run.run_names import name_problem, run_path

TINY = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance",
        "--load_size", "36", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
        "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--n_epochs", "1", "--n_epochs_decay", "0"]


def bad_names(outer):
    return ["", ".", "..", "../escape", "x/../../escape2", "x/..", str(outer / "absolute"), "~/run", "a\\b",
            "a\nb", "tab\there", "a//b", "run/", "./run", "link/run", "link"]


@pytest.fixture
def playground(tmp_path, demo_root):
    """tmp/outer/{ck, res}: ck holds an earlier run (what --start_over would move) and `link`, a symbolic link to
    a folder outside ck; every bad name is tried against this tree."""
    outer = tmp_path / "outer"
    ck = outer / "ck"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "earlier", *TINY)
    (outer / "elsewhere").mkdir()
    os.symlink(outer / "elsewhere", ck / "link")
    (outer / "res").mkdir()
    return outer


@pytest.mark.parametrize("extra", [[], ["--start_over"], ["--continue_train"]])
def test_train_refuses_every_bad_name_and_changes_nothing(playground, demo_root, extra):
    before = folder_state(playground.parent)
    for name in bad_names(playground):
        result = train_main("--dataroot", demo_root, "--checkpoints_dir", playground / "ck", "--name", name,
                            *TINY, *extra, check=False)
        assert result.returncode == 2, (name, result.stderr[-2000:])
        assert f"--name {name!r}" in result.stderr and "--name facades_pix2pix" in result.stderr, result.stderr
        assert folder_state(playground.parent) == before, f"--name {name!r} {' '.join(extra)} changed the disk"


def test_test_py_refuses_every_bad_name_and_changes_nothing(playground, demo_root):
    before = folder_state(playground.parent)
    for name in bad_names(playground):
        result = test_main("--dataroot", demo_root, "--checkpoints_dir", playground / "ck", "--name", name,
                           "--results_dir", playground / "res", "--gpu_ids", "-1", "--num_threads", "0",
                           check=False)
        assert result.returncode == 2, (name, result.stderr[-2000:])
        assert f"--name {name!r}" in result.stderr, result.stderr
        assert folder_state(playground.parent) == before, f"test.py --name {name!r} changed the disk"


def test_results_dir_is_checked_too(playground, demo_root):
    """A name that is fine under --checkpoints_dir but leaves --results_dir through a link there."""
    os.symlink(playground / "elsewhere", playground / "res" / "earlier")
    before = folder_state(playground.parent)
    result = test_main("--dataroot", demo_root, "--checkpoints_dir", playground / "ck", "--name", "earlier",
                       "--results_dir", playground / "res", "--gpu_ids", "-1", check=False)
    assert result.returncode == 2 and "outside --results_dir" in result.stderr
    assert folder_state(playground.parent) == before


def test_the_accepted_forms_work(playground, demo_root):
    """A nested name trains and tests inside the folders; --checkpoints_dir and --results_dir stay free paths."""
    ck = playground / "ck"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "group/run.v2", *TINY)
    assert (ck / "group" / "run.v2" / "latest_net_G.pth").is_file()
    test_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "group/run.v2",
              "--results_dir", playground / ".." / "res_free", "--gpu_ids", "-1", "--num_threads", "0")
    assert (playground.parent / "res_free" / "group" / "run.v2" / "test_latest" / "index.html").is_file()


def test_name_rules():
    assert name_problem("facades_pix2pix") == "" and name_problem("group/run-1.2") == ""
    assert name_problem("..hidden") == "" and name_problem("a..b") == ""
    for name in ("", ".", "..", "a/../b", "/abs", "a\\b", "a\x7fb", "a\x00b", "a//b", "a/"):
        assert name_problem(name), name
    with pytest.raises(UsageError, match="--results_dir"):
        run_path("res", "../x", "--results_dir")
    assert run_path("res", "a/b", "--results_dir") == os.path.join("res", "a", "b")

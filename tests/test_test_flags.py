"""test.py's own flags say what they do: --tile_overlap needs --tile, --num_threads above test.py's cap is said,
and --gpu_ids' help speaks of test.py's one process."""
import pytest

from conftest import test_main, train_main
from options.test_options import TestOptions

TINY = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--load_size", "32", "--crop_size",
        "32", "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1", "--display_id", "0", "--no_html",
        "--n_epochs", "1", "--n_epochs_decay", "0", "--max_dataset_size", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root):
    ck = tmp_path_factory.mktemp("flags") / "ck"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "run", *TINY)
    return ck


def run_test(trained, demo_root, tmp_path, *extra, check=True):
    return test_main("--dataroot", demo_root, "--checkpoints_dir", trained, "--name", "run", "--results_dir",
                     tmp_path / "res", "--gpu_ids", "-1", "--num_test", "1", *extra, check=check)


def test_tile_overlap_without_tile_is_refused_naming_tile(trained, demo_root, tmp_path):
    result = run_test(trained, demo_root, tmp_path, "--tile_overlap", "16", "--num_threads", "0", check=False)
    assert result.returncode == 2 and "--tile_overlap 16 applies to tiles" in result.stderr
    assert "--tile 512 --tile_overlap 16" in result.stderr
    assert not (tmp_path / "res").exists()


@pytest.mark.slow  # the loader starts worker processes
def test_num_threads_above_the_cap_is_said(trained, demo_root, tmp_path):
    result = run_test(trained, demo_root, tmp_path, "--num_threads", "6")
    assert "--num_threads 6 -> 2: test.py loads data with at most 2 worker processes" in result.stderr + result.stdout
    quiet = run_test(trained, demo_root, tmp_path, "--num_threads", "0")
    assert "--num_threads" not in quiet.stderr + quiet.stdout


def test_gpu_ids_help_names_no_flag_test_py_lacks(capsys):
    with pytest.raises(SystemExit):
        TestOptions().parse(["--help"])
    text = capsys.readouterr().out
    assert "--nproc_per_node" not in text and "test.py runs one process" in " ".join(text.split())

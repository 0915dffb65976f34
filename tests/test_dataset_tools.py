"""combine_A_and_B, make_subset and the download script (no network: a closed local port and file:// URLs)."""
import importlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOWNLOAD = ROOT / "datasets" / "download_pix2pix_dataset.sh"


def load_tool(name):
    return importlib.import_module(f"datasets.{name}")


def save(path, value, size=(8, 8), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode).save(path)


# ------------------------------------------------------------------------------------------- combine_A_and_B
def test_combine_pairs_images_side_by_side_and_reports_every_mismatch(tmp_path):
    A, B, AB = tmp_path / "A", tmp_path / "B", tmp_path / "AB"
    for i in range(3):
        save(A / "train" / f"{i}.png", 10 * i)
        save(B / "train" / f"{i}.png", 200, mode="L")  # grey B next to colour A: converted to RGB
    save(A / "train" / "onlyA.png", 1)  # missing partner in B
    save(B / "train" / "onlyB.png", 1)  # missing partner in A
    save(A / "train" / "big.png", 1, size=(8, 8))
    save(B / "train" / "big.png", 1, size=(16, 8))  # size mismatch
    save(A / "train" / "broken.png", 1)
    (B / "train" / "broken.png").write_bytes(b"not an image")  # unreadable
    save(A / "test" / "t.png", 5)  # B has no test split at all
    tool = load_tool("combine_A_and_B")
    written, problems = tool.main(["--fold_A", str(A), "--fold_B", str(B), "--fold_AB", str(AB),
                                   "--no_multiprocessing"])
    assert written == 3
    assert sorted(p.name for p in (AB / "train").iterdir()) == ["0.png", "1.png", "2.png"]
    combined = np.asarray(Image.open(AB / "train" / "2.png"))
    assert combined.shape == (8, 16, 3)
    assert (combined[:, :8] == 20).all() and (combined[:, 8:] == 200).all()
    text = "\n".join(problems)
    assert len(problems) == 5
    assert "onlyA.png: no partner" in text and "onlyB.png: no partner in" in text
    assert "big.png is 8x8 but" in text and "is 16x8" in text
    assert "broken.png: unreadable" in text
    assert "test does not exist" in text


@pytest.mark.slow
def test_combine_exits_non_zero_when_anything_could_not_be_paired(tmp_path):
    A, B = tmp_path / "A", tmp_path / "B"
    save(A / "train" / "0.png", 10)
    save(B / "train" / "0.png", 20)
    save(A / "train" / "onlyA.png", 1)
    cli = [sys.executable, "-m", "datasets.combine_A_and_B", "--fold_A", str(A), "--fold_B", str(B),
           "--fold_AB", str(tmp_path / "AB"), "--no_multiprocessing"]
    run = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1 and "1 files could not be paired" in run.stderr and "onlyA.png" in run.stderr
    (A / "train" / "onlyA.png").unlink()
    assert subprocess.run(cli, capture_output=True, text=True, cwd=ROOT).returncode == 0


@pytest.mark.parametrize("in_processes", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_combine_use_AB_names_num_imgs_and_clean_exit(tmp_path, in_processes):
    folder = tmp_path / "both"
    for i in range(4):
        save(folder / "train" / f"x{i}_A.jpg", 30)
        save(folder / "train" / f"x{i}_B.jpg", 90)
    tool = load_tool("combine_A_and_B")
    written, problems = tool.combine(str(folder), str(folder), str(tmp_path / "AB"), use_AB=True, num_imgs=3,
                                     multiprocessing_ok=in_processes)
    assert problems == [] and written == 3
    assert sorted(p.name for p in (tmp_path / "AB" / "train").iterdir()) == ["x0.jpg", "x1.jpg", "x2.jpg"]
    with pytest.raises(FileNotFoundError, match="--fold_B .* is not a folder"):
        tool.combine(str(folder), str(tmp_path / "nope"), str(tmp_path / "AB"))


# ------------------------------------------------------------------------------------------- make_subset
def test_make_subset_takes_the_first_n_in_loader_order_and_links_other_splits(tmp_path):
    root = tmp_path / "night2day"
    names = ["10.jpg", "2.jpg", "1.jpg", "3.jpg", "sub/0.jpg"]
    for k, name in enumerate(names):
        save(root / "train" / name, k, size=(16, 8))
    save(root / "test" / "t.jpg", 1, size=(16, 8))
    tool = load_tool("make_subset")
    written = tool.main(["--dataroot", str(root), "--out", str(tmp_path / "n5k"), "--n", "3"])
    assert written[str(tmp_path / "n5k" / "train")] == 3
    kept = sorted(str(p.relative_to(tmp_path / "n5k" / "train")) for p in (tmp_path / "n5k" / "train").rglob("*.jpg"))
    assert kept == ["1.jpg", "10.jpg", "2.jpg"]  # sorted paths, as data/image_folder.make_dataset lists them
    assert os.path.islink(tmp_path / "n5k" / "train" / "1.jpg")
    assert os.path.islink(tmp_path / "n5k" / "test") and (tmp_path / "n5k" / "test" / "t.jpg").is_file()
    with pytest.raises(FileExistsError, match="--force"):
        tool.main(["--dataroot", str(root), "--out", str(tmp_path / "n5k"), "--n", "3"])


def test_make_subset_unpaired_writes_halves(tmp_path):
    root = tmp_path / "edges"
    image = np.zeros((8, 16, 3), dtype=np.uint8)
    image[:, 8:] = 255
    (root / "train").mkdir(parents=True)
    Image.fromarray(image).save(root / "train" / "a.png")
    tool = load_tool("make_subset")
    tool.make_subset(str(root), str(tmp_path / "out"), unpaired=True, other_phases=())
    left = np.asarray(Image.open(tmp_path / "out" / "trainA" / "a.png"))
    right = np.asarray(Image.open(tmp_path / "out" / "trainB" / "a.png"))
    assert left.shape == right.shape == (8, 8, 3) and left.max() == 0 and right.min() == 255


# ------------------------------------------------------------------------------------------- download script
def run_download(name, tmp_path, url):
    env = dict(os.environ, DATASETS_DIR=str(tmp_path / "data"), PIX2PIX_DATASETS_URL=url)
    return subprocess.run(["bash", str(DOWNLOAD), name], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.slow  # bash
def test_download_unknown_name_lists_valid_names(tmp_path):
    run = run_download("facade", tmp_path, "http://127.0.0.1:9")
    assert run.returncode != 0
    assert "unknown dataset 'facade'" in run.stderr
    for name in ("facades", "maps", "cityscapes", "night2day", "edges2shoes", "edges2handbags"):
        assert name in run.stderr
    assert "Downloading" not in run.stdout


@pytest.mark.slow  # bash
def test_download_failure_says_what_to_do(tmp_path):
    run = run_download("maps", tmp_path, "http://127.0.0.1:9")  # a closed local port: fails at once
    assert run.returncode != 0
    assert "could not download http://127.0.0.1:9/maps.tar.gz" in run.stderr
    assert "tar -xzf maps.tar.gz" in run.stderr
    assert not (tmp_path / "data" / "maps").exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == []  # the temporary folder is cleaned up


@pytest.mark.slow  # bash
def test_download_unpacks_an_archive(tmp_path):
    source = tmp_path / "mirror_src" / "facades"
    save(source / "train" / "1.jpg", 1, size=(16, 8))
    save(source / "val" / "1.jpg", 1, size=(16, 8))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "facades.tar.gz", "w:gz") as tar:
        tar.add(source, arcname="facades")
    run = run_download("facades", tmp_path, f"file://{mirror}")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "data" / "facades" / "train" / "1.jpg").is_file()
    assert "train: 1 images" in run.stdout
    again = run_download("facades", tmp_path, f"file://{mirror}")
    assert again.returncode == 0 and "nothing to do" in again.stdout


# ------------------------------------------------------------------------------------------- per-dataset scripts
def dry_run(script, *args, **env):
    full_env = dict(os.environ, DRY_RUN="1", DATASETS_DIR="/nonexistent/data", **env)
    return subprocess.run(["bash", str(ROOT / "scripts" / "experiments" / script), *args], capture_output=True, text=True,
                          env=full_env, timeout=60)


def commands(run, program):
    return [line for line in run.stdout.splitlines() if line.startswith("+ ") and program in line]


@pytest.mark.slow  # bash
def test_every_model_dataset_script_exists_and_runs_the_papers_settings():
    for model in ("atme", "pix2pix"):
        for dataset in ("facades", "maps", "cityscapes", "night2day"):
            run = dry_run(f"{model}/{dataset}.sh")
            assert run.returncode == 0, run.stderr
            trains = commands(run, "train.py")
            assert len(trains) == 2  # both directions
            for direction, line in zip(("AtoB", "BtoA"), trains):
                assert f"--name {dataset}_{model}_{direction} " in line and f"--direction {direction}" in line
                # ATME paper, Sec. 5.3: batch 48, 100 + 100 epochs, instance norm, lr 2e-4, beta1 0.5
                for flag in ("--batch_size 48", "--n_epochs 100", "--n_epochs_decay 100", "--norm instance",
                             "--lr 0.0002", "--beta1 0.5", f"--model {model}"):
                    assert flag in line
            phase = "val" if dataset in ("maps", "cityscapes") else "test"
            kids = commands(run, "scripts.eval.compute_kid")
            assert len(kids) == 2 and f"/{dataset}_{model}_BtoA/{phase}_latest" in kids[1]
    night = commands(dry_run("atme/night2day.sh", "BtoA", "prepare", "train"), "")
    assert any("datasets.make_subset" in line and "--n 5000" in line for line in night)
    assert any("train.py --dataroot /nonexistent/data/night2day_5k" in line for line in night)


@pytest.mark.slow  # bash
def test_segan_scripts_follow_the_supervised_and_unsupervised_settings():
    facades = dry_run("segan/facades.sh")
    train = commands(facades, "train.py")[0]
    for flag in ("--name facades_segan_BtoA", "--nz 8", "--lambda_MI 1", "--lambda_L1 3", "--samples_per_input 8",
                 "--batch_size 4", "--crop_size 256"):
        assert flag in train
    assert "--n_samples 20 --num_test 100" in commands(facades, "test.py")[0]
    assert "--num_inputs 100 --num_samples 20" in commands(facades, "scripts.eval.diversity")[0]
    shoes = dry_run("segan/edges2shoes.sh")
    train = commands(shoes, "train.py")[0]
    assert "--dataset_mode unaligned" in train and "--crop_size 128" in train and "--lambda_L1" not in train
    assert "edges2shoes_unpaired" in train and "--unpaired" in commands(shoes, "datasets.make_subset")[0]
    assert "--dataset_mode aligned" in commands(shoes, "test.py")[0]


@pytest.mark.slow  # bash
def test_experiment_script_rejects_bad_arguments():
    run = dry_run("experiment.sh", "atme", "facades", "sideways")
    assert run.returncode == 2 and "unknown stage 'sideways'" in run.stderr
    run = dry_run("pix2pix/facades.sh", "AtoB", "fcn")  # fcn is for cityscapes B->A only
    assert run.returncode == 0 and "skipped" in run.stdout
    run = dry_run("experiment.sh", "segan", "night2day")
    assert run.returncode == 2 and "segan runs on facades, maps, edges2shoes" in run.stderr
    run = dry_run("atme/cityscapes.sh", "BtoA", SEG_WEIGHTS="/w/fcn.pth")
    assert len(commands(run, "scripts.eval.eval_cityscapes")) == 2  # generated photos and the ground-truth row

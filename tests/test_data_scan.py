"""Scanning a data folder terminates and lists each image once: symbolic links to folders are followed once by
their resolved path, and a link that makes a loop is named."""
import logging
import os
import pytest
from PIL import Image

from data.image_folder import make_dataset, scan_images


def images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (4, 4)).save(folder / name)


@pytest.fixture
def dataroot(tmp_path):
    root = tmp_path / "data"
    images(root / "train", [f"{i}.png" for i in range(6)])
    images(root / "train" / "sub", ["6.png", "7.png"])
    images(root / "val", ["v.png"])
    return root


@pytest.mark.timeout(60)
def test_a_link_to_itself_and_a_link_to_its_parent_list_each_image_once(dataroot, caplog):
    train = dataroot / "train"
    os.symlink(".", train / "self")
    os.symlink("..", train / "sub" / "loop")
    os.symlink("..", train / "up")  # leads to the data root: val/ must not join the training images
    with caplog.at_level(logging.WARNING, logger="data.image_folder"):
        paths = make_dataset(str(train))
    assert sorted(os.path.relpath(p, train) for p in paths) == [*(f"{i}.png" for i in range(6)), "sub/6.png",
                                                                 "sub/7.png"]
    for link in ("self", "sub/loop", "up"):
        assert any(f"{train / link} -> " in r.message and "a loop" in r.message for r in caplog.records), link


@pytest.mark.timeout(60)
def test_links_to_one_outside_folder_are_followed_once(tmp_path, dataroot):
    outside = tmp_path / "shared"
    images(outside, ["s.png"])
    train = dataroot / "train"
    os.symlink(outside, train / "a_shared")
    os.symlink(outside, train / "b_shared_again")
    os.symlink(train / "sub", train / "alias_of_sub")  # sorts before sub/: the real folder still wins
    paths, skipped = scan_images(str(train))
    names = sorted(os.path.relpath(p, train) for p in paths)
    assert names == [*(f"{i}.png" for i in range(6)), "a_shared/s.png", "sub/6.png", "sub/7.png"]
    assert sorted((os.path.basename(link), is_loop) for link, _, is_loop in skipped) == [
        ("alias_of_sub", False), ("b_shared_again", False)]


@pytest.mark.timeout(60)
def test_many_loops_at_every_depth_stay_bounded(tmp_path):
    root = tmp_path / "deep"
    folder = root
    for depth in range(12):
        images(folder, [f"{depth}.png"])
        os.symlink(root, folder / "to_root")
        os.symlink(".", folder / "here")
        folder = folder / f"level{depth}"
    paths, skipped = scan_images(str(root))
    assert len(paths) == 12 and len(skipped) == 24


@pytest.mark.timeout(60)
def test_train_options_dataset_counts_each_image_once_with_loops(tmp_path, demo_root):
    """The issue's case: `self -> .` and `loop -> ..` in --dataroot/train; the training set keeps its 8 images."""
    import shutil
    from data import create_dataset
    from options.train_options import TrainOptions
    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)
    os.symlink(".", root / "train" / "self")
    os.symlink("..", root / "train" / "loop")
    opt = TrainOptions().parse(["--dataroot", str(root), "--checkpoints_dir", str(tmp_path / "ck"), "--name", "x",
                                "--model", "pix2pix", "--load_size", "32", "--crop_size", "32", "--gpu_ids", "-1",
                                "--num_threads", "0", "--display_id", "0"])
    assert len(create_dataset(opt)) == len(os.listdir(os.path.join(demo_root, "train"))) == 8
    assert not (tmp_path / "ck").exists()

"""The synthetic facades generator: deterministic, laid out for `--dataset_mode aligned`, learnable."""
import argparse
import filecmp
import importlib
import logging
import os

import pytest
from PIL import Image

from data.aligned_dataset import AlignedDataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


demo = importlib.import_module("datasets.make_demo_dataset")
SMALL = dict(size=32, n_train=5, n_val=2, n_test=3)


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_layout_and_image_format(tmp_path):
    out = demo.make_demo_dataset(str(tmp_path / "demo"), **SMALL)
    assert sorted(os.listdir(out)) == ["demo_dataset.json", "test", "train", "val"]
    assert sorted(os.listdir(os.path.join(out, "train"))) == [f"{i:04d}.png" for i in range(5)]
    assert len(os.listdir(os.path.join(out, "val"))) == 2 and len(os.listdir(os.path.join(out, "test"))) == 3
    image = Image.open(os.path.join(out, "train", "0000.png"))
    assert image.size == (64, 32) and image.mode == "RGB"


def test_same_arguments_same_bytes_and_stable_prefix(tmp_path):
    first = demo.make_demo_dataset(str(tmp_path / "one"), **SMALL)
    second = demo.make_demo_dataset(str(tmp_path / "two"), **SMALL)
    names = _files(first)
    assert names == _files(second)
    _, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    assert not mismatch and not errors
    longer = demo.make_demo_dataset(str(tmp_path / "longer"), **dict(SMALL, n_train=8))
    assert filecmp.cmp(os.path.join(first, "train", "0004.png"), os.path.join(longer, "train", "0004.png"), shallow=False)
    other = demo.make_demo_dataset(str(tmp_path / "other"), **dict(SMALL, seed=1))
    assert not filecmp.cmp(os.path.join(first, "train", "0000.png"), os.path.join(other, "train", "0000.png"),
                           shallow=False)


def test_label_side_is_flat_palette_and_photo_side_is_not(tmp_path):
    palette = {tuple(rgb) for rgb in demo.PALETTE.values()}
    assert len(palette) == len(demo.CLASSES)
    for index in range(6):
        labels, photo = demo.render_pair(64, 0, "train", index)
        label_colours = {tuple(c) for c in labels.reshape(-1, 3)}
        assert label_colours <= palette
        assert {demo.PALETTE[c] for c in ("wall", "window", "frame", "door", "cornice")} <= label_colours
        assert len({tuple(c) for c in photo.reshape(-1, 3)}) > 200  # texture and shading, not flat colours


def test_photo_follows_the_labels():
    """Per image, the photo's classes are told apart by colour: glass darker than wall, sky bluish."""
    darker, bluish = 0, 0
    for index in range(20):
        labels, photo = demo.render_pair(64, 0, "val", index)
        lum = photo.astype(float).mean(axis=2)
        mask = {name: (labels == demo.PALETTE[name]).all(axis=2) for name in demo.CLASSES}
        darker += lum[mask["window"]].mean() < lum[mask["wall"]].mean()
        if mask["sky"].any():
            sky = photo[mask["sky"]].astype(float).mean(axis=0)
            bluish += sky[2] > sky[0]
        else:
            bluish += 1
        # Inside one class the photo varies far less than across the image.
        assert photo[mask["window"]].std(axis=0).mean() < photo.reshape(-1, 3).std(axis=0).mean()
    assert darker >= 18 and bluish == 20


def test_rerun_skips_complete_set_and_force_rebuilds(tmp_path, caplog):
    out = str(tmp_path / "demo")
    demo.make_demo_dataset(out, **SMALL)
    stamp = os.path.join(out, "train", "0000.png")
    os.utime(stamp, (1, 1))
    with caplog.at_level(logging.INFO, logger="make_demo_dataset"):
        demo.make_demo_dataset(out, **SMALL)
    assert "already holds" in caplog.text and os.path.getmtime(stamp) == 1
    demo.make_demo_dataset(out, **SMALL, force=True)
    assert os.path.getmtime(stamp) > 1
    demo.make_demo_dataset(out, **dict(SMALL, n_train=2))  # other arguments: rebuilt, stale files gone
    assert sorted(os.listdir(os.path.join(out, "train"))) == ["0000.png", "0001.png"]


def test_refuses_foreign_folder_and_bad_size(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--force"):
        demo.make_demo_dataset(str(foreign), **SMALL)
    with pytest.raises(ValueError, match="--size"):
        demo.make_demo_dataset(str(tmp_path / "x"), size=30)


def test_cli_and_loading_through_aligned_dataset(tmp_path):
    out = str(tmp_path / "cli")
    assert demo.main(["--out", out, "--size", "32", "--n_train", "4", "--n_val", "1", "--n_test", "1", "--seed", "2"]) == 0
    opt = argparse.Namespace(dataroot=out, phase="train", direction="BtoA", input_nc=3, output_nc=3,
                             preprocess="none", load_size=32, crop_size=32, no_flip=True,
                             max_dataset_size=float("inf"), serial_batches=False, skip_bad_images=False,
                             isTrain=True)
    dataset = AlignedDataset(opt)
    sample = dataset[3]
    assert len(dataset) == 4 and sample["A"].shape == sample["B"].shape == (3, 32, 32)
    # BtoA: B (the target) is the label map, exactly the palette colours; A (the input) is the photo.
    palette = {tuple(rgb) for rgb in demo.PALETTE.values()}

    def colours(tensor):
        rgb = ((tensor + 1) * 127.5).round().to(int).permute(1, 2, 0).reshape(-1, 3)
        return {tuple(c) for c in rgb.tolist()}
    assert colours(sample["B"]) <= palette and not colours(sample["A"]) <= palette

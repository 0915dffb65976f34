"""Every pixel encoding a dataset file may hold reaches the network at the right scale, or is refused by name.

Tiny images are built with PIL and numpy; each is read through a dataset with `--preprocess none` and no
flip, so the tensor holds the file's pixels mapped to [-1, 1] (v -> 2 v / full_scale - 1).
"""
import argparse
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import data
from data.aligned_dataset import AlignedDataset
from data.image_folder import load_image
from data.image_modes import to_model_form
from data.single_dataset import SingleDataset

RAMP16 = np.array([0, 257, 1000, 32768, 65535, 12345, 4, 65534], np.uint16)  # one row, 8 pixels


def make_opt(root, **kw):
    base = dict(dataroot=str(root), phase="train", direction="AtoB", input_nc=3, output_nc=3, dataset_mode="single",
                preprocess="none", load_size=8, crop_size=8, no_flip=True, max_dataset_size=float("inf"),
                serial_batches=True, num_threads=0, batch_size=1, seed=0, skip_bad_images=False, isTrain=True)
    base.update(kw)
    return argparse.Namespace(**base)


def folder(tmp_path):
    path = tmp_path / "train"
    path.mkdir(exist_ok=True)
    return path


def single(tmp_path, **kw):
    return SingleDataset(make_opt(tmp_path, **kw))[0]["A"]


def expected(values, full_scale):
    return torch.tensor(np.asarray(values, np.float64) / full_scale * 2 - 1, dtype=torch.float32)


def ramp_image(rows=4):
    return np.tile(RAMP16, (rows, 1))


# ------------------------------------------------------------------ high-depth grayscale
def _save_16(kind, path):
    if kind == "I;16 png":
        Image.fromarray(ramp_image()).save(path / "g.png")
    elif kind == "I;16 tiff":
        Image.fromarray(ramp_image()).save(path / "g.tif")
    elif kind == "I;16B tiff":
        Image.frombytes("I;16B", (8, 4), ramp_image().astype(">u2").tobytes()).save(path / "g.tif")
    else:  # 16-bit binary PGM in a .ppm file
        (path / "g.ppm").write_bytes(b"P5 8 4 65535\n" + ramp_image().astype(">u2").tobytes())


@pytest.mark.parametrize("kind", ["I;16 png", "I;16 tiff", "I;16B tiff", "16-bit ppm"])
def test_16_bit_grayscale_maps_v_to_v_over_65535(tmp_path, kind):
    _save_16(kind, folder(tmp_path))
    gray = single(tmp_path, input_nc=1)
    assert gray.shape == (1, 4, 8)
    assert torch.allclose(gray[0, 0], expected(RAMP16, 65535), atol=1e-6)  # full precision, not 8 bits
    rgb = single(tmp_path, input_nc=3)
    assert rgb.shape == (3, 4, 8) and all(torch.allclose(rgb[c], gray[0]) for c in range(3))


def _int32_tiff(path, values, unsigned=False):
    Image.fromarray(np.tile(np.asarray(values, np.int64).astype(np.int32), (4, 1))).save(path)
    if unsigned:  # Pillow writes SampleFormat 2 (signed) for mode I; mark the file as unsigned 32-bit
        raw = path.read_bytes()
        entry = b"\x53\x01\x03\x00\x01\x00\x00\x00\x02\x00"
        assert raw.count(entry) == 1
        path.write_bytes(raw.replace(entry, entry[:-2] + b"\x01\x00"))


def test_32_bit_integer_images_use_their_types_range(tmp_path):
    values = [0, 1, 2**20, 2**30, 2**31 - 1, 7, 70000, 2**31 - 2]
    _int32_tiff(folder(tmp_path) / "s.tif", values)
    assert torch.allclose(single(tmp_path, input_nc=1)[0, 0], expected(values, 2**31 - 1), atol=1e-6)
    os.remove(tmp_path / "train" / "s.tif")
    unsigned = [0, 2**31, 2**32 - 1, 2**16, 5, 2**31 - 1, 2**32 - 2, 3 * 2**30]
    _int32_tiff(tmp_path / "train" / "u.tif", [v - 2**32 if v >= 2**31 else v for v in unsigned], unsigned=True)
    assert torch.allclose(single(tmp_path, input_nc=1)[0, 0], expected(unsigned, 2**32 - 1), atol=1e-6)


def test_negative_integer_image_is_refused_by_name(tmp_path):
    _int32_tiff(folder(tmp_path) / "neg.tif", [0, -5, 10, 20, 30, 40, 50, 60])
    dataset = SingleDataset(make_opt(tmp_path))
    with pytest.raises(ValueError, match=r"neg\.tif.*negative values.*unsigned 16-bit"):
        dataset[0]


def test_integer_image_of_unknown_range_is_refused_by_name():
    with pytest.raises(ValueError, match=r"x\.tif has pixel mode I, which the loader cannot map to \[0, 1\]; save it"):
        to_model_form(Image.new("I", (2, 2)), "", "x.tif")  # no raw mode from a decoder: the range is unknown


def test_float_image_in_unit_range_is_read_as_is(tmp_path):
    values = np.array([0.0, 0.25, 0.5, 1.0, 0.125, 0.75, 0.999, 0.001], np.float32)
    Image.fromarray(np.tile(values, (4, 1))).save(folder(tmp_path) / "f.tif")
    assert torch.allclose(single(tmp_path, input_nc=1)[0, 0], expected(values, 1.0), atol=1e-6)


@pytest.mark.parametrize("bad,reason", [(655.35, r"holds values in \[0, 655\.35\].*\[0, 1\]"),
                                        (float("nan"), "NaN")])
def test_float_image_outside_unit_range_is_refused_or_skipped(tmp_path, caplog, bad, reason):
    values = np.array([0.0, 0.5, 1.0, bad, 0.1, 0.2, 0.3, 0.4], np.float32)
    Image.fromarray(np.tile(values, (4, 1))).save(folder(tmp_path) / "zz_float.tif")
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(tmp_path / "train" / "ok.png")
    dataset = SingleDataset(make_opt(tmp_path))
    with pytest.raises(ValueError, match=r"zz_float\.tif.*" + reason):
        dataset[1]
    with caplog.at_level(logging.WARNING):
        kept = SingleDataset(make_opt(tmp_path, skip_bad_images=True))
    assert [os.path.basename(p) for p in kept.A_paths] == ["ok.png"]
    assert "skipped 1 of 2" in caplog.text and "zz_float.tif" in caplog.text


# ------------------------------------------------------------------ transparency, palette, CMYK
ALPHA = [0, 128, 255, 255, 0, 128, 255, 255]
OVER_WHITE = [255, 127, 0, 0, 255, 127, 0, 0]  # a black or red-only channel composited onto white


def test_rgba_and_la_are_composited_onto_white_and_said_once(tmp_path, caplog):
    rgba = np.zeros((4, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, ALPHA  # red, with transparency
    for i in range(3):
        Image.fromarray(rgba, "RGBA").save(folder(tmp_path) / f"rgba{i}.png")
    with caplog.at_level(logging.INFO):
        SingleDataset(make_opt(tmp_path))
        dataset = SingleDataset(make_opt(tmp_path))  # built again in the same run: not said again
    a = ((dataset[0]["A"] + 1) * 127.5).round()
    assert a[0, 0].tolist() == [255.0] * 8
    assert np.abs(np.array(a[1, 0].tolist()) - OVER_WHITE).max() <= 1 and torch.equal(a[1], a[2])
    said = [r.getMessage() for r in caplog.records if "alpha" in r.getMessage()]
    assert len(said) == 1 and "3 of the 3 images" in said[0] and "composited onto white" in said[0]

    la = np.stack([np.zeros((4, 8), np.uint8), np.tile(np.array(ALPHA, np.uint8), (4, 1))], axis=-1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    gray = np.asarray(load_image(str(tmp_path / "la.png")))
    assert load_image(str(tmp_path / "la.png")).mode == "L"
    assert np.abs(gray[0].astype(int) - OVER_WHITE).max() <= 1


def _palette_image(transparent):
    img = Image.new("P", (8, 4), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # 0 red, 1 blue
    for x in range(0, 8, 2):
        img.putpixel((x, 0), 1)
    return img, ({"transparency": 1} if transparent else {})


def test_palette_with_and_without_transparency_and_cmyk(tmp_path, caplog):
    img, extra = _palette_image(transparent=False)
    img.save(tmp_path / "p.png", **extra)
    assert np.asarray(load_image(str(tmp_path / "p.png")))[0, :2].tolist() == [[0, 0, 255], [255, 0, 0]]
    img, extra = _palette_image(transparent=True)
    img.save(tmp_path / "pt.png", **extra)
    assert np.asarray(load_image(str(tmp_path / "pt.png")))[0, :2].tolist() == [[255, 255, 255], [255, 0, 0]]

    Image.new("CMYK", (8, 4), (0, 255, 255, 0)).save(folder(tmp_path) / "c.jpg", quality=100)
    with caplog.at_level(logging.INFO):
        a = ((single(tmp_path) + 1) * 127.5)
    assert torch.allclose(a.mean(dim=(1, 2)), torch.tensor([255.0, 0.0, 0.0]), atol=3)
    assert "are CMYK: converted to RGB" in caplog.text and "c.jpg" in caplog.text


# ------------------------------------------------------------------ EXIF orientation
def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((8, 16, 3), np.uint8)  # 16 wide, 8 high; the top-left 8x8 block white
    stored[:, :8] = 255
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(folder(tmp_path) / "cam.jpg", quality=100, exif=exif.tobytes())
    a = single(tmp_path)
    assert a.shape == (3, 16, 8)  # shown 8 wide, 16 high
    assert a[:, :8].mean() > 0.95 and a[:, 8:].mean() < -0.95  # the left block is now the top one
    path = str(tmp_path / "train" / "cam.jpg")
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(ImageOps.exif_transpose(Image.open(path))))


def test_exif_rotation_counts_for_the_aligned_layout(tmp_path):
    """A 48x96 file shown as 96x48 is a valid pair; the check must look at the shown size."""
    stored = np.zeros((96, 48, 3), np.uint8)
    exif = Image.Exif()
    exif[274] = 8
    Image.fromarray(stored).save(folder(tmp_path) / "pair.jpg", quality=95, exif=exif.tobytes())
    sample = AlignedDataset(make_opt(tmp_path, preprocess="resize_and_crop", load_size=40, crop_size=32))[0]
    assert sample["A"].shape == (3, 32, 32)


# ------------------------------------------------------------------ every dataset, every process
@pytest.mark.parametrize("mode", ["aligned", "unaligned", "single", "template"])
def test_every_dataset_reads_16_bit_at_full_scale(tmp_path, mode):
    half = np.tile(RAMP16, (8, 1))
    if mode == "aligned":
        Image.fromarray(np.concatenate([half, 65535 - half], axis=1)).save(folder(tmp_path) / "p.png")
    elif mode == "unaligned":
        for side in "AB":
            (tmp_path / f"train{side}").mkdir()
            Image.fromarray(half).save(tmp_path / f"train{side}" / "x.png")
    else:
        Image.fromarray(half).save(folder(tmp_path) / "x.png")
    opt = make_opt(tmp_path, dataset_mode=mode, input_nc=1, output_nc=1, template_factor=1)
    sample = data.find_dataset_using_name(mode)(opt)[0]
    assert torch.allclose(sample["A"][0, 0], expected(RAMP16, 65535), atol=1e-6)
    if mode == "aligned":
        assert torch.allclose(sample["B"][0, 0], expected(65535 - RAMP16, 65535), atol=1e-6)


@pytest.mark.slow  # a loader worker process
def test_loader_in_worker_processes(tmp_path):
    Image.fromarray(ramp_image()).save(folder(tmp_path) / "g.png")
    opt = make_opt(tmp_path, input_nc=1, num_threads=1)
    dataset = SingleDataset(opt)
    batch = next(iter(data.create_dataloader(dataset, opt, shuffle=False)))
    assert torch.allclose(batch["A"][0, 0, 0], expected(RAMP16, 65535), atol=1e-6)

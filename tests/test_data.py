"""The data package: dataset modes, transforms, errors a user can act on, and the loader."""
import argparse
import logging
import os
import random
import shutil
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

import data
from conftest import train_main
from data.aligned_dataset import AlignedDataset
from data.base_dataset import get_params, get_transform
from data.image_folder import IMG_EXTENSIONS, is_image_file, load_image, make_dataset
from data.samplers import EpochSampler
from data.single_dataset import SingleDataset
from options.flag_parser import FlagParser
from data.unaligned_dataset import UnalignedDataset

LEFT, RIGHT = (220, 40, 40), (40, 40, 220)  # colours of the A and B halves of a test pair


def make_opt(**kw):
    base = dict(dataroot=None, phase="train", direction="AtoB", input_nc=3, output_nc=3, dataset_mode="aligned",
                preprocess="resize_and_crop", load_size=40, crop_size=32, no_flip=False,
                max_dataset_size=float("inf"), serial_batches=False, num_threads=0, batch_size=2, seed=0,
                skip_bad_images=False, isTrain=True)
    base.update(kw)
    return argparse.Namespace(**base)


def write_pair(path, w=96, h=48, noise_seed=0):
    """An A|B image: left half near LEFT, right half near RIGHT, with a little noise."""
    rng = np.random.default_rng(noise_seed)
    array = np.zeros((h, w, 3), np.uint8)
    array[:, : w // 2] = LEFT
    array[:, w // 2:] = RIGHT
    array = np.clip(array.astype(int) + rng.integers(-10, 10, array.shape), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_image(path, w=48, h=48, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def aligned_root(tmp_path, n=4, **size):
    for i in range(n):
        write_pair(str(tmp_path / "train" / f"{i:03d}.png"), noise_seed=i, **size)
    return str(tmp_path)


def channel_means(tensor):
    return [float(c) for c in tensor.mean(dim=(1, 2))]


# ------------------------------------------------------------------ aligned
@pytest.mark.parametrize("preprocess,expected", [("resize_and_crop", (32, 32)), ("crop", (32, 32)),
                                                 ("scale_width", (40, 40)), ("scale_width_and_crop", (32, 32)),
                                                 ("none", (48, 48))])
def test_aligned_shapes_per_preprocess(tmp_path, preprocess, expected):
    dataset = AlignedDataset(make_opt(dataroot=aligned_root(tmp_path), preprocess=preprocess))
    sample = dataset[1]
    assert set(sample) == {"A", "B", "A_paths", "B_paths", "index"}
    assert sample["A"].shape == (3, *expected) and sample["B"].shape == (3, *expected)
    assert sample["A"].dtype == torch.float32
    assert -1.0 <= sample["A"].min() and sample["A"].max() <= 1.0
    assert sample["index"] == 1 and sample["A_paths"].endswith("001.png")


def test_none_rounds_sizes_to_a_multiple_of_4(tmp_path, caplog):
    root = str(tmp_path)
    write_pair(os.path.join(root, "train", "a.png"), w=102, h=30)  # halves 51x30
    with caplog.at_level(logging.WARNING):
        sample = AlignedDataset(make_opt(dataroot=root, preprocess="none"))[0]
    h, w = sample["A"].shape[1:]
    assert h % 4 == 0 and w % 4 == 0 and abs(w - 51) <= 2 and abs(h - 30) <= 2
    assert "multiple of 4" in caplog.text


def test_direction_swaps_a_and_b(tmp_path):
    root = aligned_root(tmp_path)
    random.seed(0)
    a_to_b = AlignedDataset(make_opt(dataroot=root))[0]
    random.seed(0)  # the same crop and flip, so only the swap differs
    b_to_a = AlignedDataset(make_opt(dataroot=root, direction="BtoA"))[0]
    red, blue = channel_means(a_to_b["A"]), channel_means(a_to_b["B"])
    assert red[0] > 0.5 and red[2] < -0.5 and blue[2] > 0.5
    assert torch.allclose(b_to_a["A"], a_to_b["B"]) and torch.allclose(b_to_a["B"], a_to_b["A"])


def test_same_crop_and_flip_for_both_halves(tmp_path):
    root = str(tmp_path)
    array = np.zeros((48, 96, 3), np.uint8)
    array[:, :48] = np.arange(48, dtype=np.uint8)[None, :, None] * 5  # horizontal ramp in both halves
    array[:, 48:] = array[:, :48]
    os.makedirs(os.path.join(root, "train"))
    Image.fromarray(array).save(os.path.join(root, "train", "ramp.png"))
    dataset = AlignedDataset(make_opt(dataroot=root, preprocess="crop"))
    random.seed(1)
    samples = [dataset[0] for _ in range(6)]
    assert all(torch.equal(s["A"], s["B"]) for s in samples)
    assert len({float(s["A"][0, 0, 0]) for s in samples}) > 1  # crops and flips did vary


def test_grayscale_channels_follow_the_network_sides(tmp_path):
    root = aligned_root(tmp_path)
    sample = AlignedDataset(make_opt(dataroot=root, input_nc=1))[0]
    assert sample["A"].shape[0] == 1 and sample["B"].shape[0] == 3
    swapped = AlignedDataset(make_opt(dataroot=root, output_nc=1, direction="BtoA"))[0]
    assert swapped["A"].shape[0] == 3 and swapped["B"].shape[0] == 1


def test_max_dataset_size(tmp_path):
    assert len(AlignedDataset(make_opt(dataroot=aligned_root(tmp_path, n=5), max_dataset_size=3))) == 3


def test_odd_width_and_wrong_ratio_name_the_file(tmp_path):
    root = str(tmp_path)
    write_pair(os.path.join(root, "train", "odd.png"), w=97, h=48)
    with pytest.raises(ValueError, match=r"odd\.png is 97x48.*odd"):
        AlignedDataset(make_opt(dataroot=root))
    os.remove(os.path.join(root, "train", "odd.png"))
    write_pair(os.path.join(root, "train", "wide.png"), w=160, h=48)
    with pytest.raises(ValueError, match=r"wide\.png is 160x48.*twice the height"):
        AlignedDataset(make_opt(dataroot=root, preprocess="crop"))
    # Non-square halves are fine with scale_width: 80x48 -> width 40, height 24 raised to the crop size.
    sample = AlignedDataset(make_opt(dataroot=root, preprocess="scale_width"))[0]
    assert sample["A"].shape == (3, 32, 40)


def test_crop_larger_than_image_names_flags_and_file(tmp_path):
    root = aligned_root(tmp_path)
    with pytest.raises(ValueError, match=r"--crop_size 64.*000\.png is 48x48.*--load_size"):
        AlignedDataset(make_opt(dataroot=root, preprocess="crop", crop_size=64))
    with pytest.raises(ValueError, match=r"--crop_size 64.*--preprocess resize_and_crop"):
        AlignedDataset(make_opt(dataroot=root, load_size=40, crop_size=64))


def test_invalid_preprocess_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"--preprocess 'resize'.*scale_width_and_crop"):
        AlignedDataset(make_opt(dataroot=aligned_root(tmp_path), preprocess="resize"))


def test_transform_without_params_and_without_conversion():
    opt = make_opt(preprocess="scale_width_and_crop", no_flip=True)
    image = Image.new("RGB", (80, 20), (255, 0, 0))
    params = get_params(opt, image.size)
    assert set(params) == {"crop_pos", "flip"}
    out = get_transform(opt, convert=False)(image)
    assert isinstance(out, Image.Image) and out.size == (32, 32)


# ------------------------------------------------------------------ folders and files
def test_make_dataset_recursive_sorted_ignores_non_images(tmp_path):
    write_image(str(tmp_path / "b.png"))
    write_image(str(tmp_path / "sub" / "a.JPG"))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    paths = make_dataset(str(tmp_path))
    assert [os.path.relpath(p, tmp_path) for p in paths] == ["b.png", os.path.join("sub", "a.JPG")]
    assert is_image_file("X.TIFF") and is_image_file("y.webp") and not is_image_file("z.gif")
    assert ".webp" in IMG_EXTENSIONS


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*--dataroot.*--phase.*datasets.make_demo_dataset"):
        AlignedDataset(make_opt(dataroot=str(tmp_path / "nowhere")))
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"holds no images.*\.png"):
        AlignedDataset(make_opt(dataroot=str(tmp_path)))


def _truncated_png(path, w=64, h=64):
    write_image(path, w=w, h=h)
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2])


@pytest.mark.parametrize("kind,stage", [("garbage", "build"), ("truncated_jpeg", "build"), ("truncated_png", "read")])
def test_bad_image_is_named(tmp_path, kind, stage):
    """A file whose header is broken stops the dataset's build; one whose pixels are cut off (found only by
    decoding, which the build skips without --skip_bad_images) stops when it is read."""
    root = aligned_root(tmp_path, n=2)
    bad = str(tmp_path / "train" / ("zz_bad.jpg" if kind == "truncated_jpeg" else "zz_bad.png"))
    if kind == "garbage":
        open(bad, "wb").write(b"this is not a png")
    elif kind == "truncated_png":
        _truncated_png(bad, w=96, h=48)
    else:
        Image.new("RGB", (96, 48), (10, 200, 30)).save(bad, quality=95)
        raw = open(bad, "rb").read()
        open(bad, "wb").write(raw[: len(raw) // 2])
    if stage == "build":
        with pytest.raises(ValueError, match=r"zz_bad\.(png|jpg).*--skip_bad_images"):
            AlignedDataset(make_opt(dataroot=root))
    else:
        dataset = AlignedDataset(make_opt(dataroot=root))
        with pytest.raises(ValueError, match=r"zz_bad\.png.*--skip_bad_images"):
            dataset[2]
    with pytest.raises(ValueError, match="zz_bad"):
        load_image(bad)


def test_skip_bad_images_drops_and_reports(tmp_path, caplog):
    root = aligned_root(tmp_path, n=3)
    open(tmp_path / "train" / "bad1.png", "wb").write(b"garbage")
    _truncated_png(str(tmp_path / "train" / "bad2.png"))
    with caplog.at_level(logging.WARNING):
        dataset = AlignedDataset(make_opt(dataroot=root, skip_bad_images=True))
    assert len(dataset) == 3 and all("bad" not in os.path.basename(p) for p in dataset.AB_paths)
    assert "skipped 2 of 5" in caplog.text and "bad1.png" in caplog.text and "bad2.png" in caplog.text
    for name in ("000.png", "001.png", "002.png"):
        os.remove(tmp_path / "train" / name)
    with pytest.raises(ValueError, match="none of the 2 images"):
        AlignedDataset(make_opt(dataroot=root, skip_bad_images=True))


# ------------------------------------------------------------------ unaligned, single, template
def test_unaligned_dataset(tmp_path):
    for i in range(3):
        write_image(str(tmp_path / "trainA" / f"a{i}.png"), seed=i)
    for i in range(5):
        write_image(str(tmp_path / "trainB" / f"b{i}.png"), w=40, h=40, seed=10 + i)
    opt = make_opt(dataroot=str(tmp_path), serial_batches=True)
    dataset = UnalignedDataset(opt)
    assert len(dataset) == 5
    sample = dataset[4]
    assert sample["index"] == 1 and sample["A_paths"].endswith("a1.png") and sample["B_paths"].endswith("b4.png")
    assert sample["A"].shape == sample["B"].shape == (3, 32, 32)
    swapped = UnalignedDataset(make_opt(dataroot=str(tmp_path), direction="BtoA", serial_batches=True))[4]
    assert swapped["A_paths"].endswith("b4.png") and swapped["index"] == 4
    random.seed(0)
    partners = {UnalignedDataset(make_opt(dataroot=str(tmp_path)))[0]["B_paths"] for _ in range(12)}
    assert len(partners) > 1  # B is drawn at random without --serial_batches


def test_single_dataset_prefers_phase_folder(tmp_path):
    write_image(str(tmp_path / "flat.png"))
    opt = make_opt(dataroot=str(tmp_path), phase="test", input_nc=1)
    sample = SingleDataset(opt)[0]
    assert set(sample) == {"A", "A_paths", "index"} and sample["A"].shape == (1, 32, 32)
    assert sample["A_paths"].endswith("flat.png")
    write_image(str(tmp_path / "test" / "in_phase.png"))
    dataset = SingleDataset(opt)
    assert len(dataset) == 1 and dataset[0]["A_paths"].endswith("in_phase.png")


def test_template_dataset_works_and_adds_its_flag(tmp_path):
    write_image(str(tmp_path / "train" / "photo.png"), w=48, h=48)
    parser = FlagParser()  # the options' parser: every flag is declared with its lifetime
    data.get_option_setter("template")(parser, True)
    assert parser.flag_table.lifetime("template_factor") == "data"
    assert parser.parse_args(["--template_factor", "2"]).template_factor == 2
    sample = data.find_dataset_using_name("template")(make_opt(dataroot=str(tmp_path), template_factor=4))[0]
    assert sample["A"].shape == sample["B"].shape == (3, 32, 32)
    assert not torch.equal(sample["A"], sample["B"])  # A is the degraded copy


# ------------------------------------------------------------------ registry and loader
def test_registry_and_create_dataset(tmp_path, caplog):
    assert data.find_dataset_using_name("aligned") is AlignedDataset
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'.*aligned.*single.*unaligned"):
        data.find_dataset_using_name("nope")
    with caplog.at_level(logging.INFO):
        dataset = data.create_dataset(make_opt(dataroot=aligned_root(tmp_path, n=3)))
    assert isinstance(dataset, AlignedDataset) and "dataset [AlignedDataset] of 3 images" in caplog.text


def _pool_entry(index, epoch, scale):
    """A stand-in for ATME's pool reader: the value, the epoch and the process that made it."""
    return torch.tensor([float(index) * scale, float(epoch), float(os.getpid())])


@pytest.mark.slow  # loader worker processes
def test_extras_are_merged_in_worker_processes(tmp_path):
    dataset = AlignedDataset(make_opt(dataroot=aligned_root(tmp_path, n=6)))
    opt = make_opt(num_threads=2, batch_size=3)
    sampler = EpochSampler(len(dataset), seed=0)
    sampler.set_epoch(7)
    samples = data.EpochSamples(dataset, extras={"disc_pool": partial(_pool_entry, scale=10.0)})
    loader = data.create_dataloader(samples, opt, sampler=sampler)
    assert loader.num_workers == 2 and loader.persistent_workers and not loader.pin_memory
    seen = []
    for batch in loader:
        assert batch["disc_pool"].shape == (3, 3)
        assert torch.equal(batch["disc_pool"][:, 0], batch["index"].float() * 10.0)
        assert torch.all(batch["disc_pool"][:, 1] == 7)
        assert all(int(pid) != os.getpid() for pid in batch["disc_pool"][:, 2])
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(6))
    with pytest.raises(ValueError, match="overwrite"):
        data.EpochSamples(dataset, extras={"A": partial(_pool_entry, scale=1.0)})


def test_seeded_augmentation_depends_on_seed_epoch_and_index_only(tmp_path):
    """Crops and flips of a sample are the same whatever the order, the process split or a resume point."""
    dataset = AlignedDataset(make_opt(dataroot=aligned_root(tmp_path, n=6), preprocess="resize_and_crop",
                                      load_size=24, crop_size=16, no_flip=False))
    samples = data.EpochSamples(dataset, seed=3)
    random.seed(123)
    a = samples[(2, 4)]["A"]
    state = random.getstate()
    b = samples[(2, 4)]["A"]
    assert random.getstate() == state  # the caller's stream is left as it was
    assert torch.equal(a, b)
    assert not all(torch.equal(a, samples[(e, 4)]["A"]) for e in range(3, 9))  # another epoch, another crop


def _batches(dataset, opt):
    return [(b["index"].tolist(), b["A"]) for b in data.create_dataloader(dataset, opt)]


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # 2: loader worker processes
def test_same_seed_gives_same_batches(tmp_path, workers):
    from util.process.devices import seed_everything
    dataset = AlignedDataset(make_opt(dataroot=aligned_root(tmp_path, n=8)))

    def batches(seed):
        if not workers:
            seed_everything(seed)  # without workers the augmentation draws from this process, which train.py seeds
        return _batches(dataset, make_opt(num_threads=workers, seed=seed))

    first, again, other = batches(3), batches(3), batches(4)
    assert [i for i, _ in first] == [i for i, _ in again]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again))
    assert [i for i, _ in first] != [i for i, _ in other]
    serial = _batches(dataset, make_opt(serial_batches=True, seed=None))
    assert [i for i, _ in serial] == [[0, 1], [2, 3], [4, 5], [6, 7]]


# ------------------------------------------------------------------ the check of every file before training
def test_odd_width_anywhere_is_refused_when_the_dataset_is_built(tmp_path):
    root = aligned_root(tmp_path, n=4)
    write_pair(str(tmp_path / "train" / "zz_odd.png"), w=97, h=48)
    write_pair(str(tmp_path / "train" / "zz_wide.png"), w=160, h=48)
    with pytest.raises(ValueError, match=r"zz_odd\.png is 97x48.*odd.*1 more of the 6 images.*--skip_bad_images"):
        AlignedDataset(make_opt(dataroot=root))


def test_skip_bad_images_skips_and_lists_layout_and_crop_problems(tmp_path, caplog):
    root = aligned_root(tmp_path, n=4)
    write_pair(str(tmp_path / "train" / "zz_odd.png"), w=97, h=48)
    write_pair(str(tmp_path / "train" / "zz_small.png"), w=40, h=20)  # halves 20x20 < --crop_size 32
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    opt = make_opt(dataroot=root, preprocess="crop", skip_bad_images=True, run_dir=str(run_dir))
    with caplog.at_level(logging.WARNING):
        dataset = AlignedDataset(opt)
    assert len(dataset) == 4 and not any("zz_" in p for p in dataset.AB_paths)
    assert "skipped 2 of 6" in caplog.text and "zz_odd.png" in caplog.text and "zz_small.png" in caplog.text
    assert "its width is odd" in caplog.text and "--crop_size 32 is larger" in caplog.text
    assert [os.path.basename(path) for path, _ in dataset.skipped_images] == ["zz_odd.png", "zz_small.png"]
    assert not list(run_dir.iterdir())  # train.py writes the list once the run owns its folder
    assert str(run_dir / "skipped_images.txt") in caplog.text
    for sample in (dataset[i] for i in range(len(dataset))):  # what is left trains without stopping
        assert sample["A"].shape == (3, 32, 32)


def test_image_too_small_for_the_crop_is_caught_at_build(tmp_path, caplog):
    for i in range(3):
        write_image(str(tmp_path / "trainA" / f"a{i}.png"), seed=i)
        write_image(str(tmp_path / "trainB" / f"b{i}.png"), seed=10 + i)
    write_image(str(tmp_path / "trainB" / "b9_tiny.png"), w=20, h=20)
    with pytest.raises(ValueError, match=r"--crop_size 32 is larger.*b9_tiny\.png is 20x20.*--skip_bad_images"):
        UnalignedDataset(make_opt(dataroot=str(tmp_path), preprocess="crop"))
    with caplog.at_level(logging.WARNING):
        dataset = UnalignedDataset(make_opt(dataroot=str(tmp_path), preprocess="crop", skip_bad_images=True))
    assert dataset.B_size == 3 and "b9_tiny.png" in caplog.text and "skipped 1 of 4" in caplog.text
    write_image(str(tmp_path / "test" / "tiny.png"), w=20, h=20)
    write_image(str(tmp_path / "test" / "ok.png"), w=48, h=48)
    with pytest.raises(ValueError, match=r"tiny\.png is 20x20"):
        SingleDataset(make_opt(dataroot=str(tmp_path), phase="test", preprocess="crop"))


TINY_TRAIN = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--load_size", "36", "--crop_size",
              "32", "--batch_size", "2", "--num_threads", "0", "--display_id", "0", "--seed", "0", "--print_freq", "1",
              "--n_epochs", "1", "--n_epochs_decay", "0", "--serial_batches", "--no_html"]


def test_train_stops_before_step_one_or_skips_and_lists(demo_root, tmp_path):
    """An odd-width pair sorted last: training reached it mid-epoch; now the build refuses it, or skips it."""
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    write_pair(str(root / "train" / "zz_odd.png"), w=65, h=32)
    ck = tmp_path / "ck"
    refused = train_main("--dataroot", root, "--checkpoints_dir", ck, "--name", "r", *TINY_TRAIN, check=False)
    assert refused.returncode != 0
    assert "zz_odd.png is 65x32" in refused.stderr and "--skip_bad_images" in refused.stderr
    assert not (ck / "r" / "loss_log.csv").exists()  # no training step was taken
    skipped = train_main("--dataroot", root, "--checkpoints_dir", ck, "--name", "s", *TINY_TRAIN, "--skip_bad_images")
    assert "skipped 1 of 9" in skipped.stdout and "zz_odd.png" in skipped.stdout
    assert "zz_odd.png" in (ck / "s" / "skipped_images.txt").read_text()
    assert (ck / "s" / "latest_net_G.pth").exists()

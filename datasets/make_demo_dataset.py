"""Build a small synthetic facades dataset in the aligned layout: `<out>/{train,val,test}/NNNN.png`.

Each PNG is `A | B` (width 2 x size): B is a rendered building facade (wall colour and texture,
a grid of framed windows with sills, a door, cornices, sky, shading) and A its label map, one flat
colour per class (PALETTE). Labels -> photo and photo -> labels are both learnable, in the spirit of
CMP facades, and the default set builds in a few seconds on a CPU.

Usage: python -m datasets.make_demo_dataset --out datasets/demo [--size 64] [--n_train 200]
       [--n_val 20] [--n_test 20] [--seed 0] [--force]
The output is deterministic: the same arguments give the same bytes. Image i of a split depends only
on (seed, split, i), so a larger --n_train keeps the first images unchanged.
"""
import argparse
import json
import logging
import os
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

if not __package__:  # run as `python datasets/make_demo_dataset.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.run.atomic import atomic_write_text

log = logging.getLogger("make_demo_dataset")

# Class name -> colour in the label map A. The order is the painting order (later classes on top).
PALETTE = {
    "sky": (20, 20, 120),
    "wall": (40, 90, 240),
    "cornice": (250, 170, 30),
    "window": (30, 220, 250),
    "frame": (170, 250, 90),
    "sill": (250, 90, 40),
    "door": (200, 40, 40),
}
CLASSES = tuple(PALETTE)
SPLITS = ("train", "val", "test")
MANIFEST = "demo_dataset.json"
MIN_SIZE = 32

# Plausible facade colours (RGB) for the photo side.
WALL_COLOURS = np.array([(205, 190, 160), (160, 82, 62), (150, 150, 145), (200, 160, 90),
                         (225, 215, 190), (200, 150, 140), (170, 180, 190)], dtype=np.float32)
FRAME_COLOURS = np.array([(236, 236, 230), (62, 74, 52), (92, 62, 42), (40, 40, 44)], dtype=np.float32)
DOOR_COLOURS = np.array([(100, 60, 35), (40, 70, 50), (70, 40, 30), (50, 55, 80)], dtype=np.float32)


def _smooth_noise(rng, size, cells):
    """Low-frequency noise in about [-1, 1]: a coarse random grid, bilinearly upsampled to size x size."""
    grid = rng.normal(size=(cells + 1, cells + 1)).astype(np.float32)
    coords = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(coords.astype(int), cells - 1)
    t = coords - i0
    rows = grid[i0] * (1 - t)[:, None] + grid[i0 + 1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]


def _layout(rng, size):
    """The label map (size, size) of class indices for one random facade."""
    S = size
    labels = np.full((S, S), CLASSES.index("wall"), dtype=np.uint8)

    def paint(y0, y1, x0, x1, name):
        y0, y1, x0, x1 = (int(round(v)) for v in (y0, y1, x0, x1))
        labels[max(0, y0):max(0, min(S, y1)), max(0, x0):max(0, min(S, x1))] = CLASSES.index(name)

    unit = S / 64  # one pixel at the default size; geometry scales with --size
    top = rng.uniform(0.0, 0.16) * S
    paint(0, top, 0, S, "sky")
    roof_h = max(1.0, rng.uniform(2.0, 3.5) * unit)
    paint(top, top + roof_h, 0, S, "cornice")
    n_floors = int(rng.integers(3, 6))
    n_cols = int(rng.integers(2, 6))
    floor_h = (S - top - roof_h) / n_floors
    col_w = S / n_cols
    win_w = col_w * rng.uniform(0.38, 0.6)
    win_h = floor_h * rng.uniform(0.45, 0.65)
    win_y = floor_h * rng.uniform(0.25, 0.4)
    frame = max(1.0, round(unit))
    mullion, floor_bands = rng.random() < 0.5, rng.random() < 0.5
    door_col = int(rng.integers(0, n_cols))
    door_w = col_w * rng.uniform(0.45, 0.62)
    door_h = floor_h * rng.uniform(0.72, 0.88)
    for floor in range(n_floors):
        y_floor = top + roof_h + floor * floor_h
        if floor_bands and floor > 0:
            paint(y_floor, y_floor + max(1.0, unit), 0, S, "cornice")
        ground = floor == n_floors - 1
        for col in range(n_cols):
            cx = (col + 0.5) * col_w
            if ground and col == door_col:
                paint(S - door_h - frame, S, cx - door_w / 2 - frame, cx + door_w / 2 + frame, "frame")
                paint(S - door_h, S, cx - door_w / 2, cx + door_w / 2, "door")
                continue
            y0, x0 = y_floor + win_y, cx - win_w / 2
            paint(y0 - frame, y0 + win_h + frame, x0 - frame, x0 + win_w + frame, "frame")
            paint(y0, y0 + win_h, x0, x0 + win_w, "window")
            if mullion:
                paint(y0, y0 + win_h, cx - frame / 2, cx + frame / 2, "frame")
                paint(y0 + win_h / 3 - frame / 2, y0 + win_h / 3 + frame / 2, x0, x0 + win_w, "frame")
            paint(y0 + win_h + frame, y0 + win_h + 2 * frame, x0 - 2 * frame, x0 + win_w + 2 * frame, "sill")
    return labels


def _render(rng, labels):
    """The facade photo (size, size, 3) uint8 for a label map."""
    S = labels.shape[0]
    is_ = {name: labels == CLASSES.index(name) for name in CLASSES}
    wall = WALL_COLOURS[rng.integers(len(WALL_COLOURS))] + rng.uniform(-12, 12, 3)
    colours = np.zeros((len(CLASSES), 3), dtype=np.float32)
    colours[CLASSES.index("wall")] = wall
    colours[CLASSES.index("cornice")] = np.minimum(255, wall * 1.12 + 22)
    colours[CLASSES.index("window")] = np.array([42, 56, 72]) + rng.uniform(-10, 10, 3)
    colours[CLASSES.index("frame")] = FRAME_COLOURS[rng.integers(len(FRAME_COLOURS))]
    colours[CLASSES.index("sill")] = (212, 206, 196)
    colours[CLASSES.index("door")] = DOOR_COLOURS[rng.integers(len(DOOR_COLOURS))]
    photo = colours[labels]

    ys = np.linspace(0, 1, S, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, S, dtype=np.float32)[None, :]
    # Sky: blue at the top fading to haze.
    sky = np.array([112, 160, 225], np.float32) * (1 - ys[..., None]) + np.array([205, 222, 240], np.float32) * ys[..., None]
    photo = np.where(is_["sky"][..., None], np.broadcast_to(sky, (S, S, 3)), photo)
    # Wall texture: weathering blotches, grain and, for some walls, brick courses.
    texture = 9 * _smooth_noise(rng, S, 6) + rng.normal(0, 3.5, (S, S)).astype(np.float32)
    if rng.random() < 0.4:
        course = max(2, S // 24)
        texture = texture - 14 * (np.arange(S)[:, None] % course == 0)
    photo[is_["wall"]] += texture[is_["wall"]][:, None]
    # Glass reflects the sky: lighter at the top of each window, with a random lit window now and then.
    glass = 40 * (1 - ys) * _smooth_noise(rng, S, 3).clip(0, None) + 18 * (1 - ys)
    photo[is_["window"]] += glass[is_["window"]][:, None]
    # Shadows: below cornices and sills, and along the top of every recessed opening.
    below = np.zeros((S, S), bool)
    below[1:] = (is_["cornice"] | is_["sill"] | is_["frame"])[:-1]
    shadow = below & (is_["wall"] | is_["window"] | is_["door"])
    photo[shadow] *= 0.68
    # Sunlight from one side, slightly darker towards the street.
    light = 1 + rng.choice([-1, 1]) * 0.1 * xs - 0.08 * ys
    photo = np.where(is_["sky"][..., None], photo, photo * light[..., None])
    photo += rng.normal(0, 2.0, photo.shape)
    return np.clip(np.round(photo), 0, 255).astype(np.uint8)


def render_pair(size, seed, split, index):
    """(label_map_rgb, photo) uint8 arrays (size, size, 3) of image `index` of `split`."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    labels = _layout(rng, size)
    palette = np.array([PALETTE[name] for name in CLASSES], dtype=np.uint8)
    return palette[labels], _render(rng, labels)


def _expected(counts):
    width = max(4, len(str(max(counts.values(), default=0))))
    return {split: [f"{i:0{width}d}.png" for i in range(n)] for split, n in counts.items()}


def _manifest(size, counts, seed):
    return {"what": "synthetic facades, aligned A|B, A = label map, B = photo", "size": size, "seed": seed,
            "splits": counts, "palette": {name: list(rgb) for name, rgb in PALETTE.items()}}


def is_complete(out_dir, size, counts, seed):
    """True when `out_dir` already holds the dataset for these arguments."""
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            if json.load(f) != _manifest(size, counts, seed):
                return False
    except (OSError, ValueError):
        return False
    expected = _expected(counts)
    return all(sorted(n for n in os.listdir(os.path.join(out_dir, s)) if n.endswith(".png")) == expected[s]
               if os.path.isdir(os.path.join(out_dir, s)) else not expected[s] for s in SPLITS)


def make_demo_dataset(out_dir, size=64, n_train=200, n_val=20, n_test=20, seed=0, force=False):
    """Write the demo dataset to `out_dir` and return `out_dir`; does nothing when it is already complete."""
    if size < MIN_SIZE or size % 4:
        raise ValueError(f"--size must be a multiple of 4 and at least {MIN_SIZE}, got {size}")
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"--n_train, --n_val and --n_test must not be negative, got {counts}")
    if not force and is_complete(out_dir, size, counts, seed):
        log.info("%s already holds the demo dataset for these arguments; nothing to do (--force rebuilds it)", out_dir)
        return out_dir
    ours = os.path.isfile(os.path.join(out_dir, MANIFEST))
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not ours and not force:
        raise FileExistsError(f"--out {out_dir} exists and is not a demo dataset built by this script (no {MANIFEST}); "
                              f"choose another --out or pass --force to write into it")
    manifest_path = os.path.join(out_dir, MANIFEST)
    if ours:
        os.remove(manifest_path)  # the set is incomplete until the new manifest is written
    expected = _expected(counts)
    with tqdm(total=sum(counts.values()), desc="demo facades", unit="img", disable=None) as bar:
        for split in SPLITS:
            folder = os.path.join(out_dir, split)
            os.makedirs(folder, exist_ok=True)
            for stale in sorted(os.listdir(folder)):  # images of an earlier, different build
                if stale.endswith(".png") and stale not in expected[split]:
                    os.remove(os.path.join(folder, stale))
            for index, name in enumerate(expected[split]):
                labels, photo = render_pair(size, seed, split, index)
                Image.fromarray(np.concatenate([labels, photo], axis=1)).save(os.path.join(folder, name))
                bar.update(1)
    atomic_write_text(manifest_path, json.dumps(_manifest(size, counts, seed), indent=1, sort_keys=True) + "\n")
    log.info("wrote the demo dataset to %s: %s images of %dx%d (A = labels | B = photo)",
             out_dir, ", ".join(f"{n} {s}" for s, n in counts.items()), 2 * size, size)
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="datasets/demo", help="output folder")
    parser.add_argument("--size", type=int, default=64, help="height of each image; the width is twice this")
    parser.add_argument("--n_train", type=int, default=200, help="training pairs")
    parser.add_argument("--n_val", type=int, default=20, help="validation pairs")
    parser.add_argument("--n_test", type=int, default=20, help="test pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random scenes")
    parser.add_argument("--force", action="store_true", help="rebuild even if --out is complete or not ours")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_demo_dataset(args.out, size=args.size, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                      seed=args.seed, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())

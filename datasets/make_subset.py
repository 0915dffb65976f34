"""Derive a dataset from an aligned one: the first N training images, and/or unpaired A and B folders.

    # ATME paper: Night2day is trained on 5,000 images only (the first 5,000 in sorted order)
    python -m datasets.make_subset --dataroot datasets/night2day --out datasets/night2day_5k --n 5000
    # SEGAN's unsupervised setting: A and B halves in trainA/ trainB/ (valA/ valB/) for --dataset_mode unaligned
    python -m datasets.make_subset --dataroot datasets/edges2shoes --out datasets/edges2shoes_unpaired \\
        --unpaired --other_phases val

"First N" is the order the data loader uses (data/image_folder.make_dataset: sorted paths), so the subset equals
what `--max_dataset_size N` reads. Subsets are symlinks (or copies with --copy); the other splits are linked whole.
Unpaired folders hold PNG halves of each image.
"""
import argparse
import logging
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

if not __package__:  # run as `python datasets/make_subset.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.image_folder import make_dataset

log = logging.getLogger("make_subset")


def first_images(folder, n=None):
    """The first `n` images of `folder` in the data loader's order (all when n is None or 0)."""
    return make_dataset(folder, max_dataset_size=n if n else float("inf"))


def _prepare(target, force):
    if os.path.lexists(target) and not force:
        raise FileExistsError(f"{target} already exists; pass --force to overwrite it or pick another --out")
    if os.path.islink(target):
        os.unlink(target)
    os.makedirs(target, exist_ok=True)


def link_or_copy(files, source_root, target, copy=False, force=False):
    """Mirror `files` (under `source_root`) into `target`, keeping their relative paths."""
    _prepare(target, force)
    for path in files:
        dest = os.path.join(target, os.path.relpath(path, source_root))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.lexists(dest):
            os.unlink(dest)
        if copy:
            shutil.copy2(path, dest)
        else:
            os.symlink(os.path.abspath(path), dest)
    return len(files)


def split_halves(files, source_root, target_A, target_B, force=False, workers=4):
    """Write the left half of each A|B image to `target_A` and the right half to `target_B` (PNG)."""
    _prepare(target_A, force)
    _prepare(target_B, force)

    def one(path):
        stem = os.path.splitext(os.path.relpath(path, source_root))[0].replace(os.sep, "_")
        with Image.open(path) as img:
            width, height = img.size
            if width % 2:
                raise ValueError(f"{path} is {width}x{height}: an aligned A|B image needs an even width")
            img.crop((0, 0, width // 2, height)).save(os.path.join(target_A, stem + ".png"))
            img.crop((width // 2, 0, width, height)).save(os.path.join(target_B, stem + ".png"))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, files))
    return len(files)


def make_subset(dataroot, out, n=None, phase="train", other_phases=("val", "test"), copy=False, unpaired=False,
                force=False):
    """Build the derived dataset; returns {folder written: number of images}."""
    if not os.path.isdir(dataroot):
        raise FileNotFoundError(f"--dataroot {dataroot} is not a folder (download it with "
                                "datasets/download_pix2pix_dataset.sh <name>)")
    if os.path.abspath(out) == os.path.abspath(dataroot):
        raise ValueError("--out must differ from --dataroot")
    written = {}
    phases = [(phase, n)] + [(p, None) for p in other_phases if p != phase]
    for name, count in phases:
        source = os.path.join(dataroot, name)
        if not os.path.isdir(source):
            if name == phase:
                raise FileNotFoundError(f"{source} does not exist: check --dataroot and --phase")
            log.info("no %s split in %s; skipped", name, dataroot)
            continue
        files = first_images(source, count)
        if count and len(files) < count:
            log.warning("%s holds only %d images (asked for %d)", source, len(files), count)
        if unpaired:
            target_A, target_B = os.path.join(out, name + "A"), os.path.join(out, name + "B")
            written[target_A] = written[target_B] = split_halves(files, source, target_A, target_B, force)
        elif count:
            written[os.path.join(out, name)] = link_or_copy(files, source, os.path.join(out, name), copy, force)
        else:
            target = os.path.join(out, name)  # a whole split: one link (or a full copy)
            if os.path.lexists(target) and not force:
                raise FileExistsError(f"{target} already exists; pass --force to overwrite it or pick another --out")
            if copy:
                written[target] = link_or_copy(files, source, target, copy=True, force=force)
            else:
                if os.path.islink(target):
                    os.unlink(target)
                os.makedirs(out, exist_ok=True)
                os.symlink(os.path.abspath(source), target)
                written[target] = len(files)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True, help="an aligned dataset with train/ val/ test/")
    p.add_argument("--out", required=True, help="folder of the derived dataset")
    p.add_argument("--n", type=int, default=0, help="keep the first N images of --phase (0: all)")
    p.add_argument("--phase", default="train", help="the split to take a subset of")
    p.add_argument("--other_phases", nargs="*", default=["val", "test"],
                   help="splits taken whole (linked, copied, or halved with --unpaired)")
    p.add_argument("--copy", action="store_true", help="copy files instead of symlinking them")
    p.add_argument("--unpaired", action="store_true",
                   help="write <phase>A/ and <phase>B/ halves for --dataset_mode unaligned")
    p.add_argument("--force", action="store_true", help="overwrite existing output folders")
    p.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    args = p.parse_args(argv)
    if args.n < 0:
        raise ValueError(f"--n must be >= 0, got {args.n}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    written = make_subset(args.dataroot, args.out, args.n, args.phase, args.other_phases, args.copy,
                          args.unpaired, args.force)
    for folder, count in written.items():
        log.info("%s: %d images", folder, count)
    return written


if __name__ == "__main__":
    from util.command_line.cli import run_main
    run_main(lambda: main() and 0)  # one-line errors for users; main() returns its results for tests

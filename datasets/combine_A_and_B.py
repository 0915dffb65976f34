"""Pair two folders of images into the aligned layout `A|B` (side by side) that `--dataset_mode aligned` reads.

    python -m datasets.combine_A_and_B --fold_A path/A --fold_B path/B --fold_AB datasets/mydata

`fold_A` and `fold_B` hold the same splits (`train/ val/ test/`, or the images directly); an image
`fold_A/<split>/x.png` is paired with `fold_B/<split>/x.png` (with --use_AB: `x_A.png` with `x_B.png`, written as
`x.png`) and written to `fold_AB/<split>/x.png`. Every file that cannot be paired is reported (missing partner,
different sizes, unreadable) and the exit status is 1 if there was any.
"""
import argparse
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
import os

from PIL import Image

if not __package__:  # run as `python datasets/combine_A_and_B.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.run.atomic import atomic_write

log = logging.getLogger("combine_A_and_B")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder):
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(IMG_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))


def splits_of(fold_A):
    """Sub-folders of fold_A (train, val, ...), or [''] when the images sit in fold_A itself."""
    subdirs = sorted(d for d in os.listdir(fold_A) if os.path.isdir(os.path.join(fold_A, d)))
    return subdirs or [""]


def partner_name(name_A, use_AB):
    """(name in fold_B, output name) for an image of fold_A; None when --use_AB and the name has no '_A.'."""
    if not use_AB:
        return name_A, name_A
    stem, ext = os.path.splitext(name_A)
    if not stem.endswith("_A"):
        return None
    return stem[:-2] + "_B" + ext, stem[:-2] + ext


def plan(fold_A, fold_B, fold_AB, use_AB=False, num_imgs=None):
    """(jobs, problems): jobs are (path_A, path_B, path_AB); problems are messages about unpairable files."""
    jobs, problems = [], []
    for split in splits_of(fold_A):
        dir_A, dir_B = os.path.join(fold_A, split), os.path.join(fold_B, split)
        names_A = list_images(dir_A)
        names_B = set(list_images(dir_B)) if os.path.isdir(dir_B) else set()
        if not os.path.isdir(dir_B):
            problems.append(f"{dir_B} does not exist: none of the {len(names_A)} images in {dir_A} has a partner")
            continue
        used_B = set()
        count = 0
        for name_A in names_A:
            names = partner_name(name_A, use_AB)
            if names is None:
                if not os.path.splitext(name_A)[0].endswith("_B"):  # a B image in a shared folder is fine
                    problems.append(f"{os.path.join(dir_A, name_A)}: --use_AB expects names ending in _A "
                                    "(e.g. x_A.png with partner x_B.png)")
                continue
            name_B, name_AB = names
            if name_B not in names_B:
                problems.append(f"{os.path.join(dir_A, name_A)}: no partner {os.path.join(dir_B, name_B)}")
                continue
            used_B.add(name_B)
            if num_imgs is not None and count >= num_imgs:
                continue
            count += 1
            jobs.append((os.path.join(dir_A, name_A), os.path.join(dir_B, name_B),
                         os.path.join(fold_AB, split, name_AB)))
        for name_B in sorted(names_B - used_B):
            if use_AB and not os.path.splitext(name_B)[0].endswith("_B"):
                continue  # an '_A' file that landed in fold_B is not a B image
            problems.append(f"{os.path.join(dir_B, name_B)}: no partner in {dir_A}")
    return jobs, problems


def _load(path):
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy(), None
    except (OSError, Image.UnidentifiedImageError, Image.DecompressionBombError) as err:
        return None, f"{path}: unreadable ({type(err).__name__}: {err})"


def combine_pair(job):
    """Write one A|B image; return None, or a message saying why the pair was not written."""
    path_A, path_B, path_AB = job
    im_A, err_A = _load(path_A)
    im_B, err_B = _load(path_B)
    if err_A or err_B:
        return "; ".join(e for e in (err_A, err_B) if e)
    if im_A.size != im_B.size:
        return (f"{path_A} is {im_A.size[0]}x{im_A.size[1]} but {path_B} is {im_B.size[0]}x{im_B.size[1]}: "
                "the two halves of an aligned image must have one size")
    if im_A.mode != im_B.mode:  # e.g. grey edges next to a colour photo
        im_A, im_B = im_A.convert("RGB"), im_B.convert("RGB")
    width, height = im_A.size
    im_AB = Image.new(im_A.mode, (2 * width, height))
    im_AB.paste(im_A, (0, 0))
    im_AB.paste(im_B, (width, 0))
    ext = os.path.splitext(path_AB)[1]
    options = {"quality": 95} if ext.lower() in (".jpg", ".jpeg") else {}
    image_format = Image.registered_extensions().get(ext.lower(), "PNG")
    atomic_write(path_AB, lambda handle: im_AB.save(handle, format=image_format, **options))
    return None


def combine(fold_A, fold_B, fold_AB, use_AB=False, num_imgs=None, multiprocessing_ok=True):
    """Pair and write every image; returns (number written, list of problems)."""
    for flag, folder in (("--fold_A", fold_A), ("--fold_B", fold_B)):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{flag} {folder} is not a folder")
    jobs, problems = plan(fold_A, fold_B, fold_AB, use_AB, num_imgs)
    if multiprocessing_ok and len(jobs) > 1:
        # Threads, not forked processes: forking a process that has loaded torch's thread pools can
        # deadlock, and PIL releases the GIL while it decodes and encodes.
        with ThreadPoolExecutor(min(os.cpu_count() or 1, 8)) as pool:
            outcomes = list(pool.map(combine_pair, jobs, chunksize=16))
    else:
        outcomes = [combine_pair(job) for job in jobs]
    problems += [message for message in outcomes if message]
    return sum(message is None for message in outcomes), problems


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fold_A", required=True, help="folder of A images (with split sub-folders or not)")
    p.add_argument("--fold_B", required=True, help="folder of B images, same layout and names as --fold_A")
    p.add_argument("--fold_AB", required=True, help="output folder of the aligned A|B images")
    p.add_argument("--num_imgs", type=int, default=None, help="at most this many pairs per split")
    p.add_argument("--use_AB", action="store_true", help="pair x_A.<ext> with x_B.<ext> and write x.<ext>")
    p.add_argument("--no_multiprocessing", action="store_true", help="work in one process")
    p.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    written, problems = combine(args.fold_A, args.fold_B, args.fold_AB, args.use_AB, args.num_imgs,
                                not args.no_multiprocessing)
    log.info("wrote %d aligned images to %s", written, args.fold_AB)
    if problems:
        log.error("%d files could not be paired:\n  %s", len(problems), "\n  ".join(problems))
    return written, problems


if __name__ == "__main__":
    from util.command_line.cli import run_main
    run_main(lambda: 1 if main()[1] else 0)  # non-zero when any file could not be paired

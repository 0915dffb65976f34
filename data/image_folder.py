"""Finding and opening the image files of a dataset folder.

Truncated files are an error here on purpose: PIL's `LOAD_TRUNCATED_IMAGES` would silently fill the
missing rows with grey and the model would train on them.
"""
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")

# Where a user gets data from when a folder is missing.
_WHERE_TO_GET_DATA = ("get a pix2pix dataset with `bash datasets/download_pix2pix_dataset.sh facades` "
                      "or build the small demo set with `python -m datasets.make_demo_dataset --out datasets/demo`")

# Errors PIL raises for files it cannot decode: OSError (UnidentifiedImageError, "image file is
# truncated", broken data stream), SyntaxError (malformed headers), ValueError and EOFError (odd chunks).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def is_image_file(filename):
    """True when the file name ends with one of IMG_EXTENSIONS (any case)."""
    return filename.lower().endswith(IMG_EXTENSIONS)


def make_dataset(dir, max_dataset_size=float("inf")):
    """Sorted paths of the image files under `dir` (recursive), at most `max_dataset_size` of them."""
    if not os.path.isdir(dir):
        raise FileNotFoundError(
            f"dataset folder {dir} does not exist; check --dataroot and --phase (the images of phase P are "
            f"read from <dataroot>/P for aligned data, <dataroot>/PA and <dataroot>/PB for unaligned data); "
            f"{_WHERE_TO_GET_DATA}")
    paths = []
    for root, dirnames, filenames in os.walk(dir, followlinks=True):
        dirnames.sort()
        paths.extend(os.path.join(root, name) for name in filenames if is_image_file(name))
    if not paths:
        raise FileNotFoundError(
            f"dataset folder {dir} holds no images (looked for {', '.join(IMG_EXTENSIONS)} in any case, "
            f"in subfolders too); check --dataroot and --phase")
    paths.sort()
    return paths[:int(min(max_dataset_size, len(paths)))]


def _decode_error(path, err):
    return ValueError(f"cannot read image {path}: {type(err).__name__}: {err}. The file is corrupt or "
                      f"truncated; replace or delete it, or pass --skip_bad_images to skip unreadable files")


def _decoded(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path} does not exist (was it removed after the dataset was listed?)")
    try:
        with Image.open(path) as img:
            img.load()  # decodes every row now, so a truncated file fails here and not half-way
        return img
    except _DECODE_ERRORS as err:
        raise _decode_error(path, err) from None


def load_image(path, mode="RGB"):
    """Open `path` and decode it fully into a PIL image of `mode`; a corrupt file raises ValueError."""
    img = _decoded(path)
    return img if img.mode == mode else img.convert(mode)


def image_size(path):
    """(width, height) from the file header without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except _DECODE_ERRORS as err:
        raise _decode_error(path, err) from None


def _problem(path):
    try:
        _decoded(path)
    except (ValueError, FileNotFoundError) as err:
        return str(err)
    return None


def find_bad_images(paths, workers=None):
    """[(path, reason)] for the files in `paths` that do not decode. Decoding runs in a thread pool."""
    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(_problem, paths))
    return [(path, reason) for path, reason in zip(paths, problems) if reason is not None]


def drop_bad_images(paths, folder, show=5):
    """`paths` without the files that do not decode; logs how many were dropped and the first `show`."""
    bad = find_bad_images(paths)
    if not bad:
        return list(paths)
    if len(bad) == len(paths):
        raise ValueError(f"none of the {len(paths)} images in {folder} can be read, e.g. {bad[0][1]}")
    bad_set = {path for path, _ in bad}
    names = ", ".join(os.path.relpath(path, folder) for path, _ in bad[:show])
    more = f" and {len(bad) - show} more" if len(bad) > show else ""
    log.warning("--skip_bad_images: skipped %d of %d images in %s that cannot be read: %s%s",
                len(bad), len(paths), folder, names, more)
    return [path for path in paths if path not in bad_set]

"""Finding and opening the image files of a dataset folder.

Truncated files are an error here on purpose: PIL's `LOAD_TRUNCATED_IMAGES` would silently fill the
missing rows with grey and the model would train on them.
"""
import logging
import os
from typing import NamedTuple

from PIL import Image

from data import image_modes

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


def scan_images(dir):
    """(image paths, skipped links) under `dir`. Real folders are walked first, then the folders that symbolic
    links lead to, level by level; each folder is walked once by its resolved path, so a link back to a folder
    above it (a loop) or to one already walked is not followed and is returned as (link, target, is_loop)."""
    seen = {os.path.realpath(dir)}
    paths, skipped, level = [], [], [dir]
    while level:
        links = []
        for top in level:
            for root, dirnames, filenames in os.walk(top):  # links to folders are listed, not entered
                paths.extend(os.path.join(root, name) for name in filenames if is_image_file(name))
                entered = []
                for name in sorted(dirnames):
                    path = os.path.join(root, name)
                    if os.path.islink(path):
                        links.append(path)
                    elif os.path.realpath(path) not in seen:
                        seen.add(os.path.realpath(path))
                        entered.append(name)
                dirnames[:] = entered
        level = []
        for link in sorted(links):
            target = os.path.realpath(link)
            is_loop = os.path.commonpath([target, os.path.realpath(os.path.dirname(link))]) == target
            if is_loop or target in seen:
                skipped.append((link, target, is_loop))
            else:
                seen.add(target)
                level.append(link)
    return paths, skipped


def _report_skipped_links(dir, skipped, limit=5):
    for link, target, is_loop in skipped[:limit]:
        why = "a loop: it leads back to a folder that holds it" if is_loop else "a folder already listed"
        log.warning("%s: the symbolic link %s -> %s is %s; not followed, each image is listed once", dir, link,
                    target, why)
    if len(skipped) > limit:
        log.warning("%s: %d more symbolic links to folders already listed were not followed", dir,
                    len(skipped) - limit)


def make_dataset(dir, max_dataset_size=float("inf")):
    """Sorted paths of the image files under `dir` (recursive; symbolic links to folders are followed once
    each, see `scan_images`), at most `max_dataset_size` of them."""
    if not os.path.isdir(dir):
        raise FileNotFoundError(
            f"dataset folder {dir} does not exist; check --dataroot and --phase (the images of phase P are "
            f"read from <dataroot>/P for aligned data, <dataroot>/PA and <dataroot>/PB for unaligned data); "
            f"{_WHERE_TO_GET_DATA}")
    paths, skipped = scan_images(dir)
    _report_skipped_links(dir, skipped)
    if not paths:
        raise FileNotFoundError(
            f"dataset folder {dir} holds no images (looked for {', '.join(IMG_EXTENSIONS)} in any case, "
            f"in subfolders too); check --dataroot and --phase")
    paths.sort()
    return paths[:int(min(max_dataset_size, len(paths)))]


def _decode_error(path, err):
    return ValueError(f"cannot read image {path}: {type(err).__name__}: {err}. The file is corrupt or "
                      f"truncated; replace or delete it, or pass --skip_bad_images to skip unreadable files")


# EXIF orientation -> the transpose that shows the image as a viewer does (EXIF 2.3, tag 274).
_ORIENTATION_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                          6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                          8: Image.Transpose.ROTATE_90}
_ORIENTATION_TAG = 274


def _orientation(img):
    """The EXIF orientation (1..8) from what `Image.open` has read, without decoding the pixels.

    JPEG and WebP keep the EXIF block in `info` once the header is read; TIFF has it as a tag. An EXIF
    block stored after the pixels (possible in PNG) is not looked for, so the header check and the
    decoded image always agree. Unparseable EXIF counts as no orientation, as image viewers treat it.
    """
    if img.format == "TIFF":
        value = img.tag_v2.get(_ORIENTATION_TAG, 1)
    else:
        raw = img.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        try:
            exif.load(raw)
        except Exception:  # a broken EXIF block does not make the pixels unreadable
            return 1
        value = exif.get(_ORIENTATION_TAG, 1)
    return value if value in _ORIENTATION_TRANSPOSE else 1


class ImageHeader(NamedTuple):
    """What the file header says: the size as shown (after the EXIF orientation), the pixel mode, the raw
    mode the decoder reads, the EXIF orientation, and the conversions the loader will apply."""
    size: tuple
    mode: str
    source: str
    orientation: int
    alpha: bool
    deep_colour: bool
    cmyk: bool

    @property
    def rotated(self):
        return self.orientation != 1


def _header_of(img, path):
    source = image_modes.source_of(img)
    image_modes.check_mode(img, source, path)
    orientation = _orientation(img)
    w, h = img.size
    size = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    return ImageHeader(size, img.mode, source, orientation, image_modes.has_alpha(img),
                       image_modes.is_deep_colour(source), img.mode == "CMYK")


def _open(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path} does not exist (was it removed after the dataset was listed?)")
    try:
        return Image.open(path)
    except _DECODE_ERRORS as err:
        raise _decode_error(path, err) from None


def read_header(path):
    """The `ImageHeader` of `path` from its header alone (no pixel decoding); ValueError names a bad file."""
    with _open(path) as img:
        return _header_of(img, path)


def load_image(path):
    """Decode `path` fully into the form the transforms take: a PIL image of mode 'RGB', 'L' or 'F'.

    The EXIF orientation is applied and every encoding is converted as `data.image_modes` documents
    (16-bit and 32-bit integers and floats to 'F' in [0, 1], transparency composited onto white, palette and
    CMYK to 'RGB'). A corrupt file, or one the loader refuses, raises ValueError naming it. Safe to call
    in DataLoader worker processes (no shared state).
    """
    with _open(path) as img:
        header = _header_of(img, path)  # before load(), which drops the raw mode it reads
        try:
            img.load()  # decodes every row now, so a truncated file fails here and not half-way
        except _DECODE_ERRORS as err:
            raise _decode_error(path, err) from None
        out = image_modes.to_model_form(img, header.source, path)
    return out.transpose(_ORIENTATION_TRANSPOSE[header.orientation]) if header.rotated else out

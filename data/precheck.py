"""The check a dataset runs on all its files when it is built, so a bad file stops the run (or is skipped)
before the first training step and not when the sampler reaches it mid-epoch.

Without `--skip_bad_images` only the headers are read (no pixel decoding, in a thread pool): the file
opens, its pixel mode has a conversion, and its size (after the EXIF orientation) suits the dataset's
layout and the preprocessing (`check_size`). The first problem stops the run with the file's name and
the count of others. Truncated pixel data and float values outside [0, 1] show only when decoding, so
they still stop the run when the file is first read.

With `--skip_bad_images` every file is also decoded and converted as training will do it; the files that
fail any check are dropped and listed: a count and the first few with their reasons in the log, and,
when `list_file` is given, all of them there (one `path<TAB>reason` a line).

What the loader does to some encodings (composite transparency onto white, read 16-bit colour at 8 bits,
scale high-depth values by their type's range, convert CMYK, apply the EXIF orientation) is said once
per folder and process, not per image.
"""
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from data.image_folder import load_image, read_header
from util.run.atomic import atomic_write_text

log = logging.getLogger(__name__)

SHOW = 5  # problems named in the log; the rest go to the list file
_announced = set()

# (header field, what the loader does) for the conversions that are announced.
_NOTES = (
    ("alpha", "have an alpha channel: transparent pixels are composited onto white (flatten them yourself "
              "for another background)"),
    ("high_depth", "are 16-bit, 32-bit or float single-channel images: values are scaled by the range of their "
                   "type (v / 65535 for 16 bits; floats must lie in [0, 1]), not by each image's own range"),
    ("deep_colour", "store 16 bits per colour channel: they are read at 8 bits per channel"),
    ("cmyk", "are CMYK: converted to RGB without a colour profile"),
    ("rotated", "carry an EXIF orientation: they are rotated and flipped as an image viewer shows them"),
)


def default_workers():
    return min(8, (os.cpu_count() or 1) + 1)


def _inspect(path, check_size, decode):
    """(header or None, problem text or None) for one file."""
    header = None
    try:
        header = read_header(path)
        size = load_image(path).size if decode else header.size
        if check_size is not None:
            check_size(path, size)
    except (ValueError, FileNotFoundError) as err:
        return header, str(err)
    return header, None


def _high_depth(header):
    return header.mode in ("I", "F") or header.mode.startswith("I;16")


def announce_conversions(folder, headers):
    """Log, once per folder and kind, how many of `headers` [(path, ImageHeader)] the loader converts."""
    for kind, what in _NOTES:
        hits = [(path, h) for path, h in headers
                if (_high_depth(h) if kind == "high_depth" else getattr(h, kind))]
        if not hits or (kind, folder) in _announced:
            continue
        _announced.add((kind, folder))
        path, header = hits[0]
        log.info("%d of the %d images in %s (e.g. %s, mode %s) %s", len(hits), len(headers), folder,
                 os.path.relpath(path, folder), header.mode, what)


def _report_skipped(bad, total, folder, list_file):
    lines = [f"  {os.path.relpath(path, folder)}: {reason}" for path, reason in bad[:SHOW]]
    more = len(bad) - SHOW
    where = f"the full list goes to {list_file}" if list_file else "--verbose lists them all"
    for path, reason in bad:
        log.debug("--skip_bad_images: skipped %s: %s", path, reason)
    log.warning("--skip_bad_images: skipped %d of %d images in %s that cannot be used%s; %s:\n%s",
                len(bad), total, folder, f" ({more} more not shown)" if more > 0 else "", where, "\n".join(lines))


def write_skip_list(path, skipped):
    """The files `--skip_bad_images` dropped, one `path<TAB>reason` a line (written once the run owns its folder)."""
    atomic_write_text(path, "".join(f"{p}\t{reason}\n" for p, reason in skipped))


def check_images(paths, folder, check_size=None, *, skip=False, list_file=None, skipped=None, workers=None):
    """`paths` that pass the check (all of them, or ValueError, when `skip` is False).

    check_size: callable(path, (width, height)) raising ValueError when the image cannot be used at that
    size (the dataset's layout, the crop). skip: decode every file too, and drop the bad ones (see the
    module docstring). list_file: where the full list of skipped files will be (for the log); skipped: a list the
    (path, reason) of every dropped file is appended to.
    """
    inspect = partial(_inspect, check_size=check_size, decode=skip)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        results = list(pool.map(inspect, paths))
    bad = [(path, problem) for path, (_, problem) in zip(paths, results) if problem is not None]
    good = [(path, header) for path, (header, problem) in zip(paths, results) if problem is None]
    if bad and not skip:
        others = (f"; {len(bad) - 1} more of the {len(paths)} images in {folder} cannot be used either"
                  if len(bad) > 1 else "")
        raise ValueError(f"{bad[0][1]}{others} (every file is checked before the first image is used; pass "
                         f"--skip_bad_images to skip every file with a problem and list them)")
    if bad and not good:
        raise ValueError(f"none of the {len(paths)} images in {folder} can be used, e.g. {bad[0][1]}")
    announce_conversions(folder, good)
    if bad:
        _report_skipped(bad, len(paths), folder, list_file)
        if skipped is not None:
            skipped.extend(bad)
    return [path for path, _ in good]

"""The files of a test.py result folder: `<results_dir>/images/<stem>_<visual>.png`, found by their labels.

Shared by the metric scripts (KID, LPIPS diversity, Cityscapes FCN scores); nothing here imports a metric
library.
"""
import logging
import os
import re

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


def list_images(directory):
    """Image files directly inside `directory`, sorted."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"image folder {directory} does not exist")
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(directory, f)))


def images_dir(results_dir):
    """The folder holding a result's images: `<results_dir>/images` as test.py writes it, else the folder."""
    inner = os.path.join(results_dir, "images")
    return inner if os.path.isdir(inner) else results_dir


def _label_pattern(label, numbered):
    number = r"_(?P<k>\d+)" if numbered else ""
    return re.compile(r"^(?P<stem>.+)_" + re.escape(label) + number + r"\.(?:" +
                      "|".join(e.lstrip(".") for e in IMAGE_EXTENSIONS) + r")$", re.IGNORECASE)


def find_labelled_images(directory, label):
    """{stem: path} of the files `<stem>_<label>.<ext>` directly inside `directory`."""
    pattern, found = _label_pattern(label, numbered=False), {}
    for path in list_images(directory):
        match = pattern.match(os.path.basename(path))
        if match:
            found[match.group("stem")] = path
    return found


def find_numbered_images(directory, label="fake_B"):
    """{stem: [paths ordered by k]} of the files `<stem>_<label>_<k>.<ext>` (several outputs per input)."""
    pattern, groups = _label_pattern(label, numbered=True), {}
    for path in list_images(directory):
        match = pattern.match(os.path.basename(path))
        if match:
            groups.setdefault(match.group("stem"), []).append((int(match.group("k")), path))
    return {stem: [p for _, p in sorted(items)] for stem, items in sorted(groups.items())}


def result_image_sets(results_dir, real_label="real_B", fake_label="fake_B"):
    """(real files, fake files) of a test.py result folder, matched by suffix; files stay where they are."""
    directory = images_dir(results_dir)
    real = find_labelled_images(directory, real_label)
    fake = find_labelled_images(directory, fake_label)
    for label, found in ((real_label, real), (fake_label, fake)):
        if not found:
            raise FileNotFoundError(f"no '*_{label}.png' images in {directory}: check --results_dir and the labels "
                                    f"(--real_label/--fake_label; test.py names files <stem>_<visual>.png)")
    unpaired = sorted(set(real) ^ set(fake))
    if unpaired:
        log.warning("%d inputs have only a real or only a fake image in %s (e.g. %s); KID uses all %d real and "
                    "%d fake images", len(unpaired), directory, unpaired[0], len(real), len(fake))
    return [real[k] for k in sorted(real)], [fake[k] for k in sorted(fake)]

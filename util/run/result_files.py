"""The files of a test.py result folder: `<results_dir>/images/<name>_<visual>.png`, named and found by their
labels.

`<name>` is the input's path relative to the data folder without its extension (`sub1/x` for
`<data>/sub1/x.jpg`; subfolders are mirrored); when two inputs of one folder share a stem (`0.jpg`, `0.png`)
both keep their extension after an underscore (`0_jpg`, `0_png`), so no result replaces another's.
Shared by the metric scripts (KID, LPIPS diversity, Cityscapes FCN scores); nothing here imports a metric
library.
"""
import logging
import os
import re

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


class ResultNames:
    """{input path: result name} for the inputs of a data set (see the module's docstring); `root` is the data
    folder (default: the folder all inputs share). Deterministic: a name depends on the set of inputs, not on
    their order or on how many of them are tested. Names differ also without regard to case (`A.png` and
    `a.png` would be one file on macOS and Windows): what still collides gets a number (`a_png_2`)."""

    def __init__(self, paths, root=None):
        paths = sorted({os.path.normpath(str(p)) for p in paths})
        if paths and (root is None or not all(_inside(p, root) for p in paths)):
            root = os.path.commonpath([os.path.abspath(os.path.dirname(p)) for p in paths])
        self.root = root
        self.names = {}
        by_stem = {}
        for path in paths:
            by_stem.setdefault(os.path.splitext(self.relative(path))[0].casefold(), []).append(path)
        for group in by_stem.values():
            for path in group:
                stem, ext = self._split(path)
                self.names[path] = stem if len(group) == 1 else f"{stem}_{ext}"
        self._used = {name.casefold() for name in self.names.values()}
        if len(self._used) < len(self.names):  # e.g. 0.jpg, 0.png and 0_jpg.png: number what still collides
            self._used = set()
            for path in paths:
                self.names[path] = self._unused(self.names[path])

    @classmethod
    def of_dataset(cls, dataset):
        """Names for the inputs of one of this project's data sets: its A paths (the AB files of aligned data)
        under its folder; a data set that does not list them gets names as its inputs come."""
        for paths_attr, root_attr in (("AB_paths", "dir_AB"), ("A_paths", "dir_A"), ("paths", "dir")):
            paths = getattr(dataset, paths_attr, None)
            if paths is not None:
                return cls(paths, getattr(dataset, root_attr, None))
        return cls([])

    def relative(self, path):
        """`path` relative to the data folder, with '/' (the file name alone when there is no data folder)."""
        path = str(path)
        if self.root is None or not _inside(path, self.root):
            return os.path.basename(path)
        return os.path.relpath(os.path.abspath(path), os.path.abspath(self.root)).replace(os.sep, "/")

    def _split(self, path):
        stem, ext = os.path.splitext(self.relative(path))
        return stem, ext.lstrip(".")

    def _unused(self, name):
        candidate, k = name, 2
        while candidate.casefold() in self._used:
            candidate, k = f"{name}_{k}", k + 1
        self._used.add(candidate.casefold())
        return candidate

    def __call__(self, path):
        """The result name of `path`; an input outside the list is named on first sight, after the others."""
        path = os.path.normpath(str(path))
        if path not in self.names:
            stem, ext = self._split(path)
            self.names[path] = self._unused(stem if stem.casefold() not in self._used else f"{stem}_{ext}")
        return self.names[path]


def _inside(path, root):
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) == os.path.abspath(root)


def list_images(directory):
    """Image files inside `directory` and its subfolders (test.py mirrors the data's subfolders), sorted."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"image folder {directory} does not exist")
    found = []
    for root, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        found.extend(os.path.join(root, f) for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


def images_dir(results_dir):
    """The folder holding a result's images: `<results_dir>/images` as test.py writes it, else the folder. A
    folder above several results (`results/<name>`) is refused: its subfolders would mix them."""
    inner = os.path.join(results_dir, "images")
    if os.path.isdir(inner):
        return inner
    nested = sorted(entry.path for entry in os.scandir(results_dir) if entry.is_dir()
                    and os.path.isdir(os.path.join(entry.path, "images"))) if os.path.isdir(results_dir) else []
    if nested:
        raise FileNotFoundError(f"{results_dir} holds test results ({', '.join(nested[:3])}"
                                f"{', ...' if len(nested) > 3 else ''}), not images: pass one of them as "
                                f"--results_dir, e.g. --results_dir {nested[0]}")
    return results_dir


def _label_pattern(label, numbered):
    number = r"_(?P<k>\d+)" if numbered else ""
    return re.compile(r"^(?P<stem>.+)_" + re.escape(label) + number + r"\.(?:" +
                      "|".join(e.lstrip(".") for e in IMAGE_EXTENSIONS) + r")$", re.IGNORECASE)


def _relative(path, directory):
    return os.path.relpath(path, directory).replace(os.sep, "/")


def find_labelled_images(directory, label):
    """{name: path} of the files `<name>_<label>.<ext>` in `directory` (names keep their subfolder: `sub/x`)."""
    pattern, found = _label_pattern(label, numbered=False), {}
    for path in list_images(directory):
        match = pattern.match(_relative(path, directory))
        if match:
            found[match.group("stem")] = path
    return found


def find_numbered_images(directory, label="fake_B"):
    """{name: [paths ordered by k]} of the files `<name>_<label>_<k>.<ext>` (several outputs per input)."""
    pattern, groups = _label_pattern(label, numbered=True), {}
    for path in list_images(directory):
        match = pattern.match(_relative(path, directory))
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

"""Static HTML pages of images (dominate): the run's `web/index.html` and test.py's results page, whose image
folder a rerun replaces as a whole."""
import contextlib
import logging
import os
import re
from collections import OrderedDict
from urllib.parse import quote

import dominate
from dominate.tags import a, br, code, h2, h3, img, meta, p, pre, style, table, td, tr

from util.run.atomic import atomic_write_text
from util.run.folder_swap import atomic_directory, remove_stale_temporaries
from util.run.results_folder import ResultsFolder
from util.views.image_utils import save_image, tensor2im

log = logging.getLogger(__name__)

_CSS = """
body { font-family: sans-serif; margin: 12px; }
table.row { border-collapse: collapse; margin-bottom: 6px; }
td.cell { padding: 4px; text-align: center; vertical-align: top; }
td.cell p { margin: 2px 0 0 0; font-size: 13px; word-break: break-all; }
h2 { margin: 4px 0 8px 0; }
img.natural { max-width: 100%; height: auto; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; }
"""


class HTML:
    """A page in `web_dir/index.html` whose images live in `web_dir/images/`.

    `title` is the browser tab's title and the page's visible heading. `refresh` > 0 makes the browser reload the
    page every `refresh` seconds (for pages of a running job).
    `image_dir` is where `get_image_dir` points image writers (default `web_dir/images`; test.py writes into a
    staging folder that then becomes `images/`); the page always links `images/<name>`.
    """

    def __init__(self, web_dir, title, refresh=0, image_dir=None):
        self.web_dir = str(web_dir)
        self.title = title
        self.img_dir = str(image_dir) if image_dir is not None else os.path.join(self.web_dir, "images")
        self.written = set()  # image files save_images wrote for this page
        os.makedirs(self.img_dir, exist_ok=True)
        self.doc = dominate.document(title=title)
        with self.doc.head:
            meta(charset="utf-8")
            style(_CSS)
            if refresh > 0:
                meta(http_equiv="refresh", content=str(int(refresh)))
        with self.doc:
            h2(title)

    def get_image_dir(self):
        """The folder that image names given to `add_images` are relative to."""
        return self.img_dir

    def add_header(self, text):
        with self.doc:
            h3(text)

    def add_text(self, text):
        with self.doc:
            p(text)

    def add_command(self, text):
        """A shell command on a line of its own, to copy as it is."""
        with self.doc:
            with pre():
                code(text)

    def add_images(self, ims, txts, links=None, width=256):
        """One table row: each image (a name inside the image folder) with its caption, linked to `links`.
        `width=None` shows the images at their own size (at most the page's width), e.g. plots."""
        links = ims if links is None else links
        if not len(ims) == len(txts) == len(links):
            raise ValueError(f"add_images needs as many captions and links as images: "
                             f"{len(ims)} images, {len(txts)} captions, {len(links)} links")
        row_table = table(cls="row")
        self.doc.add(row_table)
        with row_table:
            with tr():
                for im, txt, link in zip(ims, txts, links):
                    with td(cls="cell"):
                        with a(href=_src(link)):
                            if width is None:
                                img(cls="natural", src=_src(im))
                            else:
                                img(style=f"width:{int(width)}px", src=_src(im))
                        br()
                        p(txt)

    def render(self):
        return self.doc.render()

    def save(self):
        """Write `index.html` atomically (a reader never sees half a page); returns its path."""
        path = os.path.join(self.web_dir, "index.html")
        atomic_write_text(path, self.render())
        return path


_CACHE_BUSTER = re.compile(r"^(?P<name>.+)(?P<query>\?v=\d+)$")


def _src(name):
    """URL of an image-folder file, every character of its name quoted (`?`, `#` and `%` included); a trailing
    `?v=<digits>` (a cache buster) is kept as a query string."""
    found = _CACHE_BUSTER.match(str(name))
    name, query = (found.group("name"), found.group("query")) if found else (str(name), "")
    return "images/" + quote(name.replace(os.sep, "/")) + query


def order_visuals(visuals):
    """Input, output(s), target, as pix2pix users read a row: the first `real_*` visual (the input) first, the
    other `real_*` ones (targets) last, everything else in the model's order between them."""
    names = list(visuals)
    reals = [n for n in names if n.startswith("real")]
    first, targets = reals[:1], reals[1:]
    middle = [n for n in names if n not in reals]
    return OrderedDict((n, visuals[n]) for n in first + middle + targets)


@contextlib.contextmanager
def replacing_images(web_dir, owner=None):
    """Yield a staging folder for a page's images; when the block succeeds it becomes `web_dir/images`,
    replacing the images of an earlier page as a whole, so the folder never mixes two runs' files.

    The folder is written by one process at a time: `owner` is the `ResultsFolder` lock the caller holds on
    `web_dir`; without one it is taken here (ResultsFolderError, naming the process that holds it). Only then are
    staging folders that a killed process left behind removed, so a live process's staging folder never is.
    When the block raises, the staging folder is removed and the earlier images stay as they were.
    The number of files replaced is logged.
    """
    target = os.path.join(str(web_dir), "images")
    held = owner if owner is not None else ResultsFolder(str(web_dir))
    if owner is None:
        held.lock()
    try:
        remove_stale_temporaries(str(web_dir), recursive=False)  # staging folders a killed process left behind
        with atomic_directory(target) as (staging, replaced):
            yield staging
    finally:
        if owner is None:
            held.release()
    if replaced and replaced[0]:
        log.info("replaced the %d files of the earlier result in %s", replaced[0], target)


def save_images(webpage, visuals, image_path, aspect_ratio=1.0, width=256, names=None):
    """Save the visuals of one test batch and add one page row per input image.

    Files are `images/<name>_<label>.png`. `names` (a `util.run.result_files.ResultNames` of the data set) gives
    `<name>`: the input's path relative to the data folder without extension, subfolders mirrored, colliding
    stems told apart by their extension; without it `<name>` is the input file's name without extension.
    `image_path` is the batch's list of input paths (or one path for a batch of one). Each row holds
    the input, then all outputs, then the target, so any number of outputs works (e.g. fake_B_0..fake_B_7).
    A file this page already wrote is never overwritten (ValueError). Returns the saved file paths.
    """
    paths = [image_path] if isinstance(image_path, (str, os.PathLike)) else list(image_path)
    if not visuals:
        raise ValueError("save_images got no visuals; the model's visual_names produced no tensors")
    visuals = order_visuals(visuals)
    batch = {name: (t.shape[0] if getattr(t, "ndim", 0) == 4 else 1) for name, t in visuals.items()}
    count = max(batch.values())
    odd = {name: n for name, n in batch.items() if n not in (1, count)}
    if odd:
        raise ValueError(f"save_images: visuals disagree on the batch size ({batch}); each needs {count} or 1")
    if len(paths) < count:
        raise ValueError(f"save_images got {count} images per visual but only {len(paths)} image paths")
    saved = []
    for i in range(count):
        stem = names(paths[i]) if names is not None else os.path.splitext(os.path.basename(str(paths[i])))[0]
        ims, txts = [], []
        for label, tensor in visuals.items():
            # A visual with one image (e.g. a shared noise map) is repeated on every row.
            image = tensor2im(tensor, index=i if batch[label] > 1 else 0)
            name = f"{stem}_{label}.png"
            save_path = os.path.join(webpage.get_image_dir(), *name.split("/"))
            if save_path in webpage.written:
                raise ValueError(f"{save_path} was already written for another input of this page "
                                 f"({paths[i]}): name results with util.run.result_files.ResultNames")
            os.makedirs(os.path.dirname(save_path), exist_ok=True)
            save_image(image, save_path, aspect_ratio=aspect_ratio)
            webpage.written.add(save_path)
            saved.append(save_path)
            ims.append(name)
            txts.append(label)
        webpage.add_header(names.relative(paths[i]) if names is not None else stem)
        webpage.add_images(ims, txts, ims, width=width)
    return saved

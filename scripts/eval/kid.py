"""KID (and FID) through torch-fidelity, computed on lists of image files.

Nothing is moved or copied: a result folder that mixes `*_real_B.png` and `*_fake_B.png` is read through two
file lists (util.run.result_files) wrapped in a Dataset that torch-fidelity accepts as an input. The Inception-v3
weights are the ones torch-fidelity uses ("inception-v3-compat"); offline machines pass a local copy.

torch-fidelity 0.4.0 reads Inception weights by path with `torch.load(weights_only=False)` and CLIP's with
`torch.jit.load` (code runs). So the file is read here once and torch-fidelity gets a private copy of what was
checked (scripts.eval.weights): the Inception state_dict as plain tensors, a CLIP file only when it is the
published one (SHA-256) or `--feature_extractor_torchscript` allows running it.
"""
import contextlib
import logging
import os

import torch
import torch_fidelity
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from scripts.eval.weights import hub_cache_path, local_weights, torchscript_copy, verified_state_copy
from util.process.devices import resolve_device
from util.run.checkpoint import load_file
from util.run.result_files import list_images

log = logging.getLogger(__name__)

INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_URL = URL_INCEPTION_V3
INCEPTION_FILENAME = os.path.basename(URL_INCEPTION_V3)
DEFAULT_SUBSET_SIZE = 50  # the setting behind the ATME paper's Table 2
DEFAULT_SUBSETS = 100  # torch-fidelity's default
DEFAULT_SEED = 2020  # torch-fidelity's default subset-sampling seed


class ImageListDataset(Dataset):
    """Images from a list of files as uint8 (3, H, W) tensors, the input torch-fidelity expects.

    All images must share one size (the data loader stacks them); a different one is an error naming the
    file, checked when the item is read.
    """

    def __init__(self, files):
        self.files = [os.fspath(f) for f in files]
        if not self.files:
            raise ValueError("ImageListDataset needs at least one image file")
        self.size = self._open(self.files[0]).size

    @staticmethod
    def _open(path):
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, Image.UnidentifiedImageError) as err:
            raise ValueError(f"cannot read image {path}: {err}") from None

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path = self.files[index]
        img = self._open(path)
        if img.size != self.size:
            raise ValueError(f"{path} is {img.size[0]}x{img.size[1]} but {self.files[0]} is "
                             f"{self.size[0]}x{self.size[1]}: KID needs images of one size within a set")
        return pil_to_tensor(img)


def resolve_inception_weights(weights_path=None, download=True):
    """A local path to the Inception-v3 weights: the given file, torch.hub's cached copy, or a fresh download.
    It is read here with weights_only=True, so a file holding anything but tensors and plain values is refused
    naming it (`feature_extractor_weights` then hands torch-fidelity a private copy, never this path)."""
    path = local_weights(INCEPTION_URL, path=weights_path, flag="--inception_weights",
                         what="Inception-v3 weights for KID/FID", download=download)
    load_file(path, "--inception_weights")
    return path


def clip_file_name(feature_extractor):
    """torch-fidelity's name for a CLIP download in torch.hub's cache, and the published file's SHA-256."""
    from torch_fidelity.feature_extractor_clip import MODEL_METADATA, MODEL_URLS
    published = MODEL_METADATA[feature_extractor]["hash"]
    return MODEL_URLS[feature_extractor], f"{feature_extractor}-{published}.pt", published


@contextlib.contextmanager
def feature_extractor_weights(feature_extractor, weights_path=None, download=True, allow_torchscript=False):
    """Yield the weights path to hand torch-fidelity for `feature_extractor` (None: its own checked download):
    always a private copy of bytes checked here, never a path someone can swap after the check."""
    if feature_extractor == INCEPTION_EXTRACTOR:
        with verified_state_copy(resolve_inception_weights(weights_path, download), "--inception_weights") as copy:
            yield copy
    elif feature_extractor.startswith("clip"):
        url, cached_name, published = clip_file_name(feature_extractor)
        cached = os.path.join(os.path.dirname(hub_cache_path(url)), cached_name)
        path = weights_path if weights_path is not None else cached if os.path.isfile(cached) else None
        if path is None:
            if not download:
                raise RuntimeError(f"the {feature_extractor} weights are not available: fetch {url} on a machine with "
                                   f"internet and put it at {cached}, or pass --inception_weights /path/to/it")
            yield None  # torch-fidelity downloads it and checks the published SHA-256
            return
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--inception_weights {path} does not exist; it should be a copy of {url}")
        with torchscript_copy(path, published_sha256=published, allow=allow_torchscript,
                              flag="--inception_weights", allow_flag="--feature_extractor_torchscript",
                              what=f"{feature_extractor} weights") as copy:
            yield copy
    elif weights_path is not None:
        with verified_state_copy(weights_path, "--inception_weights") as copy:
            yield copy
    else:
        yield None


def check_subset_size(subset_size, n_real, n_fake):
    smallest = min(n_real, n_fake)
    if subset_size < 2:
        raise ValueError(f"--kid_subset_size must be at least 2, got {subset_size}")
    if subset_size > smallest:
        raise ValueError(f"--kid_subset_size {subset_size} is larger than the number of images ({n_real} real, "
                         f"{n_fake} fake): pass --kid_subset_size {smallest} or less (the paper uses 50; test on "
                         f"more images, e.g. --num_test, to keep it)")


def _as_files(images):
    if isinstance(images, (str, os.PathLike)):
        files = list_images(images)
        if not files:
            raise FileNotFoundError(f"no images in {images}")
        return files
    return [os.fspath(f) for f in images]


def compute_kid(real, fake, *, subset_size=DEFAULT_SUBSET_SIZE, subsets=DEFAULT_SUBSETS, fid=False,
                feature_extractor=INCEPTION_EXTRACTOR, weights_path=None, batch_size=64, device=None,
                seed=DEFAULT_SEED, num_workers=None, download=True, verbose=False, allow_torchscript=False):
    """KID (and optionally FID) between two image sets, each a folder or a list of files.

    KID is the unbiased polynomial-kernel MMD of Inception features, averaged over `subsets` random subsets of
    `subset_size` images per set; the result holds it raw and x100 (as papers report it).
    `num_workers=0` reads images in the main process (torch-fidelity otherwise uses up to 4 workers).
    `allow_torchscript` lets a CLIP weights file that is not the published one run (--feature_extractor_torchscript).
    """
    real_files, fake_files = _as_files(real), _as_files(fake)
    check_subset_size(subset_size, len(real_files), len(fake_files))
    device = resolve_device(device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # torch-fidelity moves everything to the current CUDA device
    kwargs = dict(input1=ImageListDataset(real_files), input2=ImageListDataset(fake_files), kid=True, fid=fid,
                  kid_subset_size=subset_size, kid_subsets=subsets, feature_extractor=feature_extractor,
                  batch_size=batch_size, cuda=device.type == "cuda", rng_seed=seed, cache=False,
                  save_cpu_ram=num_workers == 0, verbose=verbose)
    with feature_extractor_weights(feature_extractor, weights_path, download, allow_torchscript) as checked:
        if checked is not None:
            kwargs["feature_extractor_weights_path"] = checked
        metrics = torch_fidelity.calculate_metrics(**kwargs)
    mean = metrics["kernel_inception_distance_mean"]
    std = metrics["kernel_inception_distance_std"]
    result = dict(kid_x100_mean=100.0 * mean, kid_x100_std=100.0 * std,
                  kid_x100=f"{100.0 * mean:.1f} ± {100.0 * std:.1f}", kid_mean=mean, kid_std=std,
                  n_real=len(real_files), n_fake=len(fake_files), subset_size=subset_size, subsets=subsets,
                  seed=seed, feature_extractor=feature_extractor)
    if fid:
        result["fid"] = metrics["frechet_inception_distance"]
    return result

"""KID (and FID) through torch-fidelity, computed on lists of image files.

Nothing is moved or copied: a result folder that mixes `*_real_B.png` and `*_fake_B.png` is read through two
file lists (util.run.result_files) wrapped in a Dataset that torch-fidelity accepts as an input. The Inception-v3
weights are the ones torch-fidelity uses ("inception-v3-compat"); offline machines pass a local copy.
"""
import logging
import os

import torch
import torch_fidelity
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from scripts.eval.weights import local_weights
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
    torch-fidelity reads it with a full unpickler, so it is first read here with weights_only=True: a file
    holding anything but tensors and plain values is refused before torch-fidelity opens it."""
    path = local_weights(INCEPTION_URL, path=weights_path, flag="--inception_weights",
                         what="Inception-v3 weights for KID/FID", download=download)
    load_file(path, "--inception_weights")
    return path


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
                seed=DEFAULT_SEED, num_workers=None, download=True, verbose=False):
    """KID (and optionally FID) between two image sets, each a folder or a list of files.

    KID is the unbiased polynomial-kernel MMD of Inception features, averaged over `subsets` random subsets of
    `subset_size` images per set; the result holds it raw and x100 (as papers report it).
    `num_workers=0` reads images in the main process (torch-fidelity otherwise uses up to 4 workers).
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
    if feature_extractor == INCEPTION_EXTRACTOR:
        kwargs["feature_extractor_weights_path"] = resolve_inception_weights(weights_path, download=download)
    elif weights_path is not None:
        if not feature_extractor.startswith("clip"):  # CLIP's is TorchScript; the others torch-fidelity unpickles
            load_file(weights_path, "--inception_weights")
        kwargs["feature_extractor_weights_path"] = weights_path
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

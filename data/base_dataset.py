"""BaseDataset: what every `--dataset_mode` implements, and the pix2pix transform helpers it uses."""
import abc
import os

import torch.utils.data

from data import precheck
from data.transforms import BICUBIC, PREPROCESS_MODES, check_crop_fits, check_preprocess, get_params, get_transform
SKIP_LIST = "skipped_images.txt"

__all__ = ["BaseDataset", "get_params", "get_transform", "check_crop_fits", "check_preprocess",
           "PREPROCESS_MODES", "BICUBIC"]


class BaseDataset(torch.utils.data.Dataset, abc.ABC):
    """A dataset reads its files under `opt.dataroot` and returns sample dicts.

    Every sample holds `A` (C, H, W float tensor in [-1, 1]), `A_paths` (str) and `index` (int, the
    sample's position in the dataset); paired and unpaired datasets add `B` and `B_paths`. With
    `--direction BtoA` the dataset swaps the two sides, so `A` is always the network input.
    """

    def __init__(self, opt):
        self.opt = opt
        self.root = opt.dataroot
        if self.root is None:
            raise ValueError("--dataroot is not set; pass the dataset folder, e.g. --dataroot ./datasets/facades")
        check_preprocess(opt.preprocess)
        self.skipped_images = []  # (path, reason) of the files --skip_bad_images dropped

    @staticmethod
    def modify_commandline_options(parser, is_train):
        """Add flags of this dataset (in an argument group of its own) and change defaults."""
        return parser

    def checked_paths(self, paths, folder, check_size=None):
        """`paths` after the check of every file before training (`data.precheck`): a bad file stops here
        with its name, or with `--skip_bad_images` is dropped and listed.

        check_size: callable(path, (width, height)) raising ValueError when this dataset cannot use an
        image of that size (its layout, the crop); e.g. `self.check_crop`.
        """
        return precheck.check_images(paths, folder, check_size, skip=getattr(self.opt, "skip_bad_images", False),
                                     list_file=self._skip_list_file(), skipped=self.skipped_images)

    def check_crop(self, path, size):
        """Raise ValueError when the preprocessing cannot crop an image of `size` at `path`."""
        check_crop_fits(self.opt, size, path)

    def _skip_list_file(self):
        """Where a training run lists the files `--skip_bad_images` dropped: its run folder's skipped_images.txt,
        written by train.py once the run owns the folder (nothing is written while a command may still be
        refused)."""
        run_dir = getattr(self.opt, "run_dir", None)
        if not (getattr(self.opt, "isTrain", False) and run_dir):
            return None
        return os.path.join(run_dir, SKIP_LIST)

    @property
    def swapped(self):
        """True when `--direction BtoA`: the B side of the data becomes the network input A."""
        return self.opt.direction == "BtoA"

    @abc.abstractmethod
    def __len__(self):
        """Number of samples."""

    @abc.abstractmethod
    def __getitem__(self, index):
        """The sample dict at `index`."""

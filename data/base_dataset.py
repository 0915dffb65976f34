"""BaseDataset: what every `--dataset_mode` implements, and the pix2pix transform helpers it uses."""
import abc

import torch.utils.data

from data.transforms import BICUBIC, PREPROCESS_MODES, check_crop_fits, check_preprocess, get_params, get_transform

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

    @staticmethod
    def modify_commandline_options(parser, is_train):
        """Add flags of this dataset (in an argument group of its own) and change defaults."""
        return parser

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

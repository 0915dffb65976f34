"""Datasets by name and the data loader.

`--dataset_mode Y` imports `data/Y_dataset.py` and takes its `BaseDataset` subclass `YDataset` (matched
case-insensitively, underscores removed). `create_dataloader` builds the torch DataLoader that
train.py and test.py iterate.
"""
import logging
import random

import numpy as np
import torch
import torch.utils.data

from data.base_dataset import BaseDataset
from util import distributed
from util.registry import find_class

log = logging.getLogger(__name__)

# Keys of the sample contract; an extra under one of these names would overwrite real data.
SAMPLE_KEYS = ("A", "B", "A_paths", "B_paths", "index")


def find_dataset_using_name(name):
    """The BaseDataset subclass of `data/<name>_dataset.py`; an unknown name lists the available ones."""
    return find_class("data", name, "_dataset", BaseDataset)


def get_option_setter(name):
    """The `modify_commandline_options` of dataset mode `name`."""
    return find_dataset_using_name(name).modify_commandline_options


def create_dataset(opt):
    """The dataset of `opt.dataset_mode`, built from `opt`."""
    dataset = find_dataset_using_name(opt.dataset_mode)(opt)
    log.info("dataset [%s] of %d images", type(dataset).__name__, len(dataset))
    return dataset


class WithExtras(torch.utils.data.Dataset):
    """Wraps a dataset so each sample also carries `sample[name] = extras[name](sample['index'])`.

    The extras run where `__getitem__` runs, i.e. in the loader's worker processes, so reading them
    (e.g. ATME's discriminator pool from disk) overlaps with the training step.
    """

    def __init__(self, dataset, extras):
        for name, fn in extras.items():
            if name in SAMPLE_KEYS:
                raise ValueError(f"extra {name!r} would overwrite the sample's own {name!r}; give it another name")
            if not callable(fn):
                raise ValueError(f"extra {name!r} must be a callable(index) -> tensor, got {type(fn).__name__}")
        self.dataset = dataset
        self.extras = dict(extras)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        sample = self.dataset[index]
        for name, fn in self.extras.items():
            sample[name] = fn(sample["index"])
        return sample


def seed_worker(worker_id):
    """Seed Python's and NumPy's RNGs in a loader worker from the seed torch gave it."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def create_dataloader(dataset, opt, *, shuffle=None, sampler=None, drop_last=False, extras=None):
    """A DataLoader over `dataset` with `opt.batch_size` and `opt.num_threads` workers.

    shuffle: default `not opt.serial_batches`; ignored when a `sampler` (e.g. DistributedSampler) is
    given. With `opt.seed` set, the order and the augmentation repeat from run to run (with 0 workers the
    augmentation draws from the main process's `random`, which train.py seeds). `extras`: dict
    name -> picklable callable(index: int) -> tensor, merged into every sample (see `WithExtras`).
    """
    workers = int(opt.num_threads)
    if workers < 0:
        raise ValueError(f"--num_threads must be 0 (load in the main process) or more, got {workers}")
    if shuffle is None:
        shuffle = not opt.serial_batches
    if extras:
        dataset = WithExtras(dataset, extras)
    seeded = getattr(opt, "seed", None) is not None
    # Each distributed rank gets its own augmentation stream (as seed_everything does for the process).
    generator = torch.Generator().manual_seed(int(opt.seed) + distributed.rank()) if seeded else None
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=opt.batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker if seeded else None,
    )

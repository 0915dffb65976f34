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
from PIL import Image

from data.base_dataset import BaseDataset
from util.process import cpu_allocator, distributed
from util.command_line.registry import find_class

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


class EpochSamples(torch.utils.data.Dataset):
    """The training view of a dataset: items are `(epoch, index)` keys (from `samplers.EpochSampler`).

    With a `seed`, each sample's augmentation (crop, flip, an unaligned partner) draws from Python's and NumPy's
    generators seeded by (seed, epoch, index), so it depends neither on the data order, nor on how batches are
    split over loader workers or processes, nor on where a resumed run restarted; the caller's generator states
    are restored afterwards. Each sample also carries `sample[name] = extras[name](index, epoch)`, computed where
    `__getitem__` runs, i.e. in the loader's workers (e.g. ATME's D_{t-1} read from disk, overlapping the step).
    """

    def __init__(self, dataset, extras=None, seed=None):
        extras = dict(extras or {})
        for name, fn in extras.items():
            if name in SAMPLE_KEYS:
                raise ValueError(f"extra {name!r} would overwrite the sample's own {name!r}; give it another name")
            if not callable(fn):
                raise ValueError(f"extra {name!r} must be a callable(index, epoch) -> tensor, got {type(fn).__name__}")
        self.dataset = dataset
        self.extras = extras
        self.seed = None if seed is None else int(seed)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        if self.seed is None:
            sample = self.dataset[index]
        else:
            saved = random.getstate(), np.random.get_state()
            stream = np.random.SeedSequence([self.seed % 2 ** 63, int(epoch), int(index)]).generate_state(2)
            random.seed(int(stream[0]))
            np.random.seed(int(stream[1]))
            try:
                sample = self.dataset[index]
            finally:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
        for name, fn in self.extras.items():
            sample[name] = fn(sample["index"], epoch)
        return sample


def start_worker(worker_id):
    """A loader worker's start: the system's allocator (util.process.cpu_allocator.reset_in_worker)."""
    cpu_allocator.reset_in_worker(worker_id)


def seed_worker(worker_id):
    """Seed Python's and NumPy's RNGs in a loader worker from the seed torch gave it (after `start_worker`)."""
    start_worker(worker_id)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def check_batchable(dataset, opt):
    """With --preprocess none every input keeps its size, and a batch stacks images of one size only: refuse a
    --batch_size above 1 over images of several sizes before anything runs, naming two of them (the loader would
    fail at the first mixed batch with torch's "stack expects each tensor to be equal size")."""
    if int(opt.batch_size) <= 1 or getattr(opt, "preprocess", None) != "none":
        return
    paths = next((getattr(dataset, name) for name in ("AB_paths", "A_paths", "paths") if hasattr(dataset, name)), [])
    first = {}
    for path in paths:
        with Image.open(path) as image:
            size = image.size
        first.setdefault(size, path)
        if len(first) > 1:
            (size_a, path_a), (size_b, path_b) = first.items()
            raise ValueError(f"--batch_size {opt.batch_size} with --preprocess none: the inputs have several sizes "
                             f"({path_a} is {size_a[0]}x{size_a[1]}, {path_b} is {size_b[0]}x{size_b[1]}) and a "
                             f"batch holds one size.\nUse --batch_size 1, or a --preprocess that gives every input "
                             f"one size (e.g. resize_and_crop)")


def create_dataloader(dataset, opt, *, shuffle=None, sampler=None, drop_last=False):
    """A DataLoader over `dataset` with `opt.batch_size` and `opt.num_threads` workers.

    shuffle: default `not opt.serial_batches`; ignored when a `sampler` (e.g. DistributedSampler) is
    given. With `opt.seed` set, the order and the augmentation repeat from run to run (with 0 workers the
    augmentation draws from the main process's `random`, which train.py seeds). The training loader passes an
    `EpochSamples` view with an `EpochSampler`.
    """
    check_batchable(dataset, opt)
    workers = int(opt.num_threads)
    if workers < 0:
        raise ValueError(f"--num_threads must be 0 (load in the main process) or more, got {workers}")
    if shuffle is None:
        shuffle = not opt.serial_batches
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
        worker_init_fn=seed_worker if seeded else start_worker,
    )

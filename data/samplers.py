"""The order in which the trainer visits images.

`EpochSampler` draws a fresh permutation per epoch from (seed, epoch), so an epoch's order can be
recreated after a restart and a resumed run skips exactly the images it already saw. Under DDP each rank
takes every world_size-th index of the same permutation (padded so all ranks take as many steps).
"""
import math

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    def __init__(self, num_samples, *, shuffle=True, seed=0, rank=0, world_size=1):
        if num_samples <= 0:
            raise ValueError("the dataset is empty")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = 0 if seed is None else int(seed)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0
        self.per_rank = math.ceil(num_samples / world_size)

    def set_epoch(self, epoch, start=0):
        """Use epoch `epoch`'s order and skip its first `start` samples of this rank."""
        self.epoch = epoch
        self.start = start

    def order(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + self.epoch)
            indices = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            indices = list(range(self.num_samples))
        padding = self.per_rank * self.world_size - self.num_samples
        indices += indices[:padding]
        return indices[self.rank::self.world_size]

    def __iter__(self):
        """`(epoch, index)` keys, for `data.EpochSamples`."""
        return iter([(self.epoch, index) for index in self.order()[self.start:]])

    def __len__(self):
        return self.per_rank - self.start

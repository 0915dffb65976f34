"""History of generated images shown to the discriminator (Shrivastava et al., as in pix2pix/CycleGAN)."""
import random

import torch


class ImagePool:
    """Buffer of up to `pool_size` past generated images.

    `query(images)` stores each image of the batch while the pool fills; once full, each image
    is returned as is with probability 1/2, otherwise it replaces a random stored image and that
    older image is returned instead. Draws use Python's `random` (or the given `rng`), so
    `random.seed` makes them reproducible. `pool_size` 0 returns the input unchanged.
    """

    def __init__(self, pool_size, rng=None):
        if pool_size < 0:
            raise ValueError(f"pool_size (--pool_size) must be >= 0, got {pool_size}")
        self.pool_size = pool_size
        self.rng = random if rng is None else rng
        self.images = []

    def __len__(self):
        return len(self.images)

    def query(self, images):
        """Return a batch of the same shape as `images`, mixing in stored images (all detached)."""
        if self.pool_size == 0:
            return images
        returned = []
        # The loop runs over the batch, not pixels: a handful of Python steps per iteration.
        for image in images.detach():
            # A copy, so a stored image does not keep its whole batch's memory alive.
            image = image.unsqueeze(0).clone()
            if len(self.images) < self.pool_size:
                self.images.append(image)
                returned.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                slot = self.rng.randint(0, self.pool_size - 1)
                returned.append(self.images[slot])
                self.images[slot] = image
            else:
                returned.append(image)
        return torch.cat(returned, dim=0)

"""Validation metrics: L1 and PSNR per image, and their means over a data loader.

Images are tensors in [-1, 1] shaped (B, C, H, W). Running sums stay on the device of the images, so a
validation loop does not synchronise with the host once per batch; `compute()` syncs once at the end.
"""
import logging

import torch
import torch.distributed as dist
from einops import reduce

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- L1 and PSNR
def _check_pair(fake, real):
    if fake.shape != real.shape:
        raise ValueError(f"fake and real images differ in shape: {tuple(fake.shape)} vs {tuple(real.shape)}")
    if fake.dim() != 4:
        raise ValueError(f"expected image batches shaped (B, C, H, W), got {tuple(fake.shape)}")


def batch_l1(fake, real):
    """Mean absolute error per image, (B,)."""
    _check_pair(fake, real)
    return reduce((fake.float() - real.float()).abs(), "b c h w -> b", "mean")


def batch_psnr(fake, real, data_range=2.0, eps=1e-10):
    """PSNR in dB per image, (B,); `data_range` 2 for images in [-1, 1]. `eps` bounds identical images
    (about 106 dB) so that a mean over a data set stays finite."""
    _check_pair(fake, real)
    mse = reduce((fake.float() - real.float()) ** 2, "b c h w -> b", "mean")
    return 10.0 * torch.log10(data_range ** 2 / mse.clamp_min(eps))


class RunningMean:
    """Sum and count kept as tensors on the values' device; one host sync in `compute()`."""

    def __init__(self):
        self.total = None
        self.count = None

    def update(self, values):
        values = values.detach().double().flatten()
        if self.total is None:
            self.total = values.sum()
            self.count = torch.tensor(values.numel(), dtype=torch.float64, device=values.device)
        else:
            self.total = self.total + values.sum()
            self.count = self.count + values.numel()

    def reduced(self):
        """(total, count) summed over all ranks when torch.distributed is running."""
        if self.total is None:
            return 0.0, 0
        pair = torch.stack([self.total, self.count])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(pair)
        total, count = pair.tolist()
        return total, int(count)

    def compute(self):
        total, count = self.reduced()
        return total / count if count else float("nan")


@torch.no_grad()
def evaluate_model(model, dataloader, max_batches=None):
    """Mean L1 and PSNR of `model.fake_B` against `model.real_B` over `dataloader`.

    Runs `model.set_input(batch); model.test()` per batch. The caller chooses train/eval mode (pix2pix keeps
    dropout on at test time unless `--eval`). Returns dict(l1=..., psnr=..., n_images=...); under
    torch.distributed the sums are reduced over all ranks.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be None or >= 1, got {max_batches}")
    l1, psnr = RunningMean(), RunningMean()
    for i, batch in enumerate(dataloader):
        if max_batches is not None and i >= max_batches:
            break
        model.set_input(batch)
        model.test()
        for name in ("fake_B", "real_B"):
            if getattr(model, name, None) is None:
                raise RuntimeError(f"{type(model).__name__} has no {name} after test(): evaluate_model needs a model "
                                   "that sets fake_B and real_B (paired data, e.g. --dataset_mode aligned)")
        fake, real = model.fake_B, model.real_B.to(model.fake_B.device)
        l1.update(batch_l1(fake, real))
        psnr.update(batch_psnr(fake, real))
    _, n_images = l1.reduced()
    if n_images == 0:
        raise ValueError("evaluate_model got an empty data loader: check the validation split (--phase val)")
    return dict(l1=l1.compute(), psnr=psnr.compute(), n_images=n_images)

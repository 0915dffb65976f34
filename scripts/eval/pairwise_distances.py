"""Diversity of several outputs of one input: mean pairwise distances (LPIPS or the L1 fallback).

Distances here take images on the [0, 1] scale (a saved PNG divided by 255), so an L1 figure is the mean
absolute pixel difference as a fraction of the full range; LPIPS is given its own [-1, 1] input by the caller.
"""
import torch

from util.metrics import batch_l1

# How an L1 diversity figure is labelled wherever it is reported.
L1_SCALE = "[0, 1] image scale"
L1_LABEL = f"l1 on the {L1_SCALE} (dependency-free fallback: mean absolute pixel difference, not LPIPS)"


def pairwise_indices(k, device=None):
    """All index pairs (i, j) with i < j among k samples, as two (k*(k-1)/2,) tensors."""
    if k < 2:
        raise ValueError(f"pairwise distances need at least 2 samples per input, got {k}")
    pairs = torch.combinations(torch.arange(k, device=device), r=2)
    return pairs[:, 0], pairs[:, 1]


def mean_pairwise_distance(samples, distance_fn, batch_size=64):
    """Average of `distance_fn(x, y) -> (P,)` over all pairs of samples (K, C, H, W) of one input."""
    first, second = pairwise_indices(samples.shape[0], device=samples.device)
    total = samples.new_zeros((), dtype=torch.float64)
    for start in range(0, first.numel(), batch_size):
        i, j = first[start:start + batch_size], second[start:start + batch_size]
        total = total + distance_fn(samples[i], samples[j]).double().sum()
    return float(total / first.numel())


def mean_pairwise_l1(samples, batch_size=64):
    """Mean L1 distance over all pairs of samples (K, C, H, W) of one input, on the samples' own scale
    (give [0, 1] images to report on the `L1_SCALE`).

    Dependency-free fallback for the LPIPS diversity score: it measures pixel differences, not perceptual
    ones, and is not comparable with the LPIPS numbers in papers.
    """
    if samples.dim() != 4:
        raise ValueError(f"expected samples shaped (K, C, H, W), got {tuple(samples.shape)}")
    return mean_pairwise_distance(samples, lambda x, y: batch_l1(x, y), batch_size=batch_size)


def as_saved_pixels(images):
    """Generator outputs in [-1, 1] -> the [0, 1] values their saved 8-bit PNGs hold (rounded as test.py
    rounds them), so figures computed in memory equal those computed from the result files."""
    return ((images.detach().float() + 1.0) * 127.5).clamp(0.0, 255.0).round() / 255.0


def lpips_distance(metric):
    """A distance on [0, 1] images from an `lpips.LPIPS` metric, which expects [-1, 1] inputs."""
    return lambda x, y: metric(x * 2.0 - 1.0, y * 2.0 - 1.0).flatten()


def l1_distance(x, y):
    """Mean absolute difference per image pair, on the scale of the inputs ([0, 1] here: `L1_SCALE`)."""
    return batch_l1(x, y)

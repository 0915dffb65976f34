"""Diversity of several outputs of one input: mean pairwise distances (LPIPS or the L1 fallback)."""
import torch

from util.metrics import batch_l1


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
    """Mean L1 distance over all pairs of samples (K, C, H, W) of one input.

    Dependency-free fallback for the LPIPS diversity score: it measures pixel differences, not perceptual
    ones, and is not comparable with the LPIPS numbers in papers.
    """
    if samples.dim() != 4:
        raise ValueError(f"expected samples shaped (K, C, H, W), got {tuple(samples.shape)}")
    return mean_pairwise_distance(samples, lambda x, y: batch_l1(x, y), batch_size=batch_size)

"""Neural estimators of the mutual information I(Z; B) between latent codes and images (SEGAN, MINE).

A statistics network T(z, b) scores pairs. Pairs drawn from the joint p(z, b) (a code and the image
generated from it) are the positives; pairs from the product of marginals p(z)p(b) are the negatives.
Equation numbers refer to the SEGAN paper. These functions take explicit arguments, never options.
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import repeat


def jsd_mi(t_joint, t_marginal):
    """Jensen-Shannon MI estimator, Eq. (7): E_joint[-sp(-T)] - E_marginal[sp(T)], sp = softplus.

    A lower bound (up to constants) of the JSD between joint and product of marginals; it is the
    negative binary cross-entropy of classifying positives against negatives, so it is bounded above
    by 0 and equals -2 log 2 when T cannot tell them apart (T = 0). The paper's default: stabler than DV.
    """
    return (-F.softplus(-t_joint)).mean() - F.softplus(t_marginal).mean()


def dv_mi(t_joint, t_marginal):
    """Donsker-Varadhan MI lower bound, Eq. (5): E_joint[T] - log E_marginal[exp(T)].

    The log-mean-exp is computed as logsumexp - log(n) so large scores do not overflow. MINE's moving
    average correction of the biased mini-batch gradient is not applied.
    """
    count = t_marginal.numel()
    log_mean_exp = torch.logsumexp(t_marginal.reshape(-1), dim=0) - math.log(count)
    return t_joint.mean() - log_mean_exp


ESTIMATORS = {"jsd": jsd_mi, "dv": dv_mi}


class Pairs(NamedTuple):
    """Inputs of T: positives (z_joint[i], b_joint[i]) and negatives (z_marginal[j], b_marginal[j])."""
    z_joint: torch.Tensor
    b_joint: torch.Tensor
    z_marginal: torch.Tensor
    b_marginal: torch.Tensor


def _derangement(count, *, generator, device):
    """A random permutation without fixed points: a random cyclic order, each element mapped to its successor."""
    order = torch.randperm(count, generator=generator, device=device)
    index = torch.empty_like(order)
    index[order] = order.roll(-1)
    return index


def make_pairs(z, images, n_neg=1, generator=None, negatives="fresh", fresh_codes=None):
    """Joint pairs (z_i, b_i) and `n_neg` times as many marginal pairs (z', b_i), with z' independent of b_i.

    z: (B, nz) codes that generated images: (B, ...). Each image appears once in the positives and
    n_neg times in the negatives, there with a code independent of it:

    - 'fresh' (default): z' ~ N(0, I) drawn anew. This is Eq. (7) as written: z'' comes from its own
      copy of the prior, independent of everything else. The prior is known, so these are exact samples
      of p(z)p(b), and no code of the batch is reused, so no negative shares a code with a positive.
    - 'shuffle': z' are the batch's own codes permuted without fixed points (MINE's recipe, for when only
      samples of p(z) are available, e.g. encoded codes). The negatives then follow the batch's empirical
      code distribution, and each code appears in both a positive and a negative pair. Needs B >= 2.

    `generator` (a torch.Generator on z's device) makes the draws reproducible. `fresh_codes` (n_neg * B, nz),
    with 'fresh': the N(0, I) draws made by the caller instead (e.g. per sample, so that they do not depend on
    how a batch is split over processes); row n * B + i is paired with image i.
    """
    if z.dim() != 2 or z.shape[0] != images.shape[0]:
        raise ValueError(f"need codes (B, nz) and images (B, ...) with the same B, got {tuple(z.shape)} "
                         f"and {tuple(images.shape)}")
    if n_neg < 1:
        raise ValueError(f"--n_neg (negatives per positive) must be at least 1, got {n_neg}")
    batch = z.shape[0]
    b_marginal = repeat(images, "b ... -> (n b) ...", n=n_neg)
    if negatives == "fresh" and fresh_codes is not None:
        if fresh_codes.shape != (n_neg * batch, z.shape[1]):
            raise ValueError(f"fresh_codes must be (n_neg * B, nz) = {(n_neg * batch, z.shape[1])}, "
                             f"got {tuple(fresh_codes.shape)}")
        z_marginal = fresh_codes.to(device=z.device, dtype=z.dtype)
    elif negatives == "fresh":
        z_marginal = torch.randn((n_neg * batch, z.shape[1]), generator=generator, device=z.device, dtype=z.dtype)
    elif negatives == "shuffle":
        if batch < 2:
            raise ValueError("shuffled negatives need at least 2 codes per batch; use negatives='fresh'")
        z_marginal = torch.cat([z[_derangement(batch, generator=generator, device=z.device)]
                                for _ in range(n_neg)])
    else:
        raise ValueError(f"negatives must be 'fresh' or 'shuffle', got {negatives!r}")
    return Pairs(z, images, z_marginal, b_marginal)


def mi_estimate(stat_net, z, images, estimator="jsd", n_neg=1, generator=None, negatives="fresh", fresh_codes=None):
    """Estimate I(Z; B) with critic `stat_net(z, b) -> (N,)` scores: Eq. (7) for 'jsd', Eq. (5) for 'dv'.

    Differentiable in both the critic's weights (T maximises it, Eq. 6) and `images` (so does G).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown MI estimator {estimator!r} (--mi_estimator); choose one of {sorted(ESTIMATORS)}")
    pairs = make_pairs(z, images, n_neg, generator=generator, negatives=negatives, fresh_codes=fresh_codes)
    # One pass over positives and negatives together: T has no batch statistics, so scores do not depend
    # on what else is in the batch, and one large call is cheaper than two.
    scores = stat_net(torch.cat([pairs.z_joint, pairs.z_marginal]), torch.cat([pairs.b_joint, pairs.b_marginal]))
    scores = scores.float()  # the softplus / logsumexp in float32 even under bf16/fp16 autocast
    batch = z.shape[0]
    return ESTIMATORS[estimator](scores[:batch], scores[batch:])

"""Adversarial losses: `GANLoss` (vanilla | lsgan | wgangp) and the WGAN-GP gradient penalty."""
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

GAN_MODES = ("vanilla", "lsgan", "wgangp")
PENALTY_KINDS = ("real", "fake", "mixed")


class GANLoss(nn.Module):
    """Adversarial loss on discriminator logits: `loss(prediction, target_is_real)`.

    `vanilla` is binary cross-entropy on logits, `lsgan` the mean squared error to the label,
    `wgangp` the signed mean (-mean for real, +mean for fake). `prediction` may be a tensor or
    a list/tuple of tensors (one per scale of a multi-scale D): the result is their mean loss.
    Losses are computed in float32 so bf16/fp16 autocast outputs do not lose precision.
    """

    def __init__(self, gan_mode, target_real_label=1.0, target_fake_label=0.0):
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"unknown gan_mode {gan_mode!r} (--gan_mode); choose one of: {', '.join(GAN_MODES)}")
        self.gan_mode = gan_mode
        # Plain floats, not buffers: targets are made on the prediction's device and dtype.
        self.real_label = float(target_real_label)
        self.fake_label = float(target_fake_label)

    def extra_repr(self):
        return f"gan_mode={self.gan_mode!r}, real_label={self.real_label}, fake_label={self.fake_label}"

    def get_target_tensor(self, prediction, target_is_real):
        """A tensor of the real or fake label with the shape, dtype and device of `prediction`."""
        return torch.full_like(prediction, self.real_label if target_is_real else self.fake_label)

    def _single(self, prediction, target_is_real):
        prediction = prediction.float()
        if self.gan_mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        target = self.get_target_tensor(prediction, target_is_real)
        if self.gan_mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)

    def forward(self, prediction, target_is_real):
        if not isinstance(target_is_real, bool):
            raise TypeError(f"target_is_real must be a bool, got {type(target_is_real).__name__}")
        if isinstance(prediction, (list, tuple)):
            if not prediction or not all(torch.is_tensor(p) for p in prediction):
                raise TypeError("GANLoss expects a tensor or a non-empty list/tuple of tensors (one per scale)")
            return torch.stack([self._single(p, target_is_real) for p in prediction]).mean()
        if not torch.is_tensor(prediction):
            raise TypeError(f"GANLoss expects a tensor or a list of tensors, got {type(prediction).__name__}")
        return self._single(prediction, target_is_real)


def gradient_penalty(netD, real, fake, kind="mixed", constant=1.0, lambda_gp=10.0):
    """WGAN-GP penalty `lambda_gp * mean((||grad_x D(x)||_2 - constant) ** 2)` -> (penalty, gradients).

    `x` is `real`, `fake`, or (`mixed`) a random per-sample interpolation of the two. Both are
    detached, so the penalty trains D only; the graph is kept so the penalty can be backpropagated.
    `gradients` is (batch, features). With `lambda_gp <= 0` returns (0, None).
    """
    if kind not in PENALTY_KINDS:
        raise ValueError(f"unknown gradient penalty kind {kind!r}; choose one of: {', '.join(PENALTY_KINDS)}")
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if lambda_gp <= 0.0:
        return real.new_zeros(()), None
    real, fake = real.detach(), fake.detach()
    if kind == "real":
        points = real.clone()
    elif kind == "fake":
        points = fake.clone()
    else:
        # One mixing weight per sample, broadcast over all its other axes.
        alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
        points = torch.lerp(fake, real, alpha)
    points.requires_grad_(True)
    scores = netD(points)
    if isinstance(scores, (list, tuple)):
        scores = torch.cat([rearrange(s, "b ... -> b (...)") for s in scores], dim=1)
    (gradients,) = torch.autograd.grad(outputs=scores, inputs=points, grad_outputs=torch.ones_like(scores),
                                       create_graph=True, retain_graph=True)
    gradients = rearrange(gradients, "b ... -> b (...)")
    # The tiny offset keeps the norm's gradient finite where the gradient is exactly zero.
    norms = (gradients.float() + 1e-16).norm(2, dim=1)
    penalty = ((norms - constant) ** 2).mean() * lambda_gp
    return penalty, gradients


# ----------------------------------------------------------------------------------------------------
# The conditional GAN (pix2pix, ATME): D judges (input, output) pairs; G adds an L1 term to the target.

def discriminator_losses(netD, criterion, real, fake, *, fake_pool=None, lambda_gp=10.0, penalty_real=None):
    """D's step on its inputs `real` and `fake` (detached, so it does not reach into G): (loss_D, loss_D_real,
    loss_D_fake, loss_D_gp). `fake_pool` (models.image_pool) swaps fakes for earlier ones; with --gan_mode wgangp
    the gradient penalty on random interpolates of `real` (or `penalty_real`, when the reals are fewer than the
    fakes) and `fake` is added (loss_D_gp, else None). loss_D is half the sum, as in pix2pix, so the penalty
    keeps its weight relative to the critic's loss."""
    fake = fake.detach()
    if fake_pool is not None:
        fake = fake_pool.query(fake)
    loss_fake = criterion(netD(fake), False)
    loss_real = criterion(netD(real), True)
    total, loss_gp = loss_fake + loss_real, None
    if criterion.gan_mode == "wgangp":
        loss_gp, _ = gradient_penalty(netD, real if penalty_real is None else penalty_real, fake, kind="mixed",
                                      lambda_gp=lambda_gp)
        total = total + loss_gp
    return total * 0.5, loss_real, loss_fake, loss_gp


def conditional_d_losses(netD, criterion, real_A, real_B, fake_B, **kwargs):
    """`discriminator_losses` for a D that sees (input, output) pairs: the penalty's interpolates are pairs too."""
    return discriminator_losses(netD, criterion, torch.cat((real_A, real_B), 1), torch.cat((real_A, fake_B), 1),
                                **kwargs)


def conditional_g_losses(netD, criterion, real_A, real_B, fake_B, lambda_L1):
    """G's step: (loss_G, loss_G_GAN, loss_G_L1, fake_map), with `fake_map` D's map of (input, output)
    (ATME keeps it as next epoch's D_{t-1})."""
    fake_map = netD(torch.cat((real_A, fake_B), 1))
    loss_gan = criterion(fake_map, True)
    loss_l1 = F.l1_loss(fake_B, real_B) * lambda_L1
    return loss_gan + loss_l1, loss_gan, loss_l1, fake_map

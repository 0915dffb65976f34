"""Hand-written gradients for the ATME blocks' normalisations: the same functions as the straightforward
compositions of torch ops, in fewer passes over memory, keeping fewer tensors for the backward pass.

Autograd through `(x - mean) * rsqrt(var + eps) * g` keeps three full-size tensors and runs about a dozen
element-wise passes forward and backward; the closed-form gradient of a normalisation needs the normalised
tensor and the per-position inverse deviation only. tests/test_fused_blocks.py checks forward and gradients
against the straightforward compositions, and a whole training step against them.

Statistics are taken in float32 (float64 stays float64) whatever the input dtype (see blocks.STATS_EPS); outputs come back in the
input's dtype, gradients in the dtype of what they are for.
"""
import torch
import torch.nn.functional as F


def at_least_float32(t):
    return t.to(torch.promote_types(t.dtype, torch.float32))


class StandardizedWeight(torch.autograd.Function):
    """(w - mean) / sqrt(var + eps) per output channel (dim 0), statistics over all other dims."""

    @staticmethod
    def forward(ctx, weight, eps):
        w = at_least_float32(weight)
        dims = tuple(range(1, w.dim()))
        var, mean = torch.var_mean(w, dim=dims, keepdim=True, correction=0)
        rstd = (var + eps).rsqrt()
        w_hat = (w - mean).mul_(rstd)
        ctx.save_for_backward(w_hat, rstd)
        return w_hat.to(weight.dtype)

    @staticmethod
    def backward(ctx, grad):
        w_hat, rstd = ctx.saved_tensors
        g = at_least_float32(grad)
        dims = tuple(range(1, g.dim()))
        # d/dw of the standardisation: rstd * (g - mean(g) - w_hat * mean(g * w_hat)), means per output channel.
        g_mean = g.mean(dim=dims, keepdim=True)
        gw_mean = (g * w_hat).mean(dim=dims, keepdim=True)
        grad_w = torch.addcmul(g_mean, w_hat, gw_mean).neg_().add_(g).mul_(rstd)
        return grad_w.to(grad.dtype), None


class ChannelLayerNorm(torch.autograd.Function):
    """LayerNorm over dim 1 of (B, C, H, W) with a gain `g` (1, C, 1, 1) and no bias."""

    @staticmethod
    def forward(ctx, x, g, eps):
        x32 = at_least_float32(x)
        # Two passes (the mean, then the mean square of the centred values) rather than var_mean: a reduction over
        # the channels of an NCHW tensor is several times faster this way on the CPU, with the same statistics.
        centred = x32 - x32.mean(dim=1, keepdim=True)
        rstd = (centred * centred).mean(dim=1, keepdim=True).add_(eps).rsqrt_()
        x_hat = centred.mul_(rstd)
        ctx.save_for_backward(x_hat, rstd, g)
        ctx.x_dtype = x.dtype
        return (x_hat * g).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x_hat, rstd, g = ctx.saved_tensors
        grad = at_least_float32(grad)
        grad_g = None
        if ctx.needs_input_grad[1]:
            grad_g = (grad * x_hat).sum(dim=(0, 2, 3), keepdim=True).to(g.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            gy = grad * g
            # rstd * (gy - mean_c(gy) - x_hat * mean_c(gy * x_hat))
            gy_mean = gy.mean(dim=1, keepdim=True)
            gyx_mean = (gy * x_hat).mean(dim=1, keepdim=True)
            grad_x = gy.sub_(torch.addcmul(gy_mean, x_hat, gyx_mean)).mul_(rstd).to(ctx.x_dtype)
        return grad_x, grad_g, None


def group_norm_scale_shift_silu(x, groups, weight, bias, eps, scale_shift=None):
    """SiLU(GroupNorm(x) * (scale + 1) + shift), the GroupNorm's affine and the time embedding's scale and shift
    folded into one per-channel multiply-add: one pass over x instead of three."""
    if scale_shift is None:
        return F.silu(F.group_norm(x, groups, weight, bias, eps))
    scale, shift = scale_shift
    factor = scale + 1
    gain = weight.view(1, -1, 1, 1) * factor
    offset = torch.addcmul(shift, bias.view(1, -1, 1, 1), factor)
    return F.silu(torch.addcmul(offset, F.group_norm(x, groups, None, None, eps), gain))

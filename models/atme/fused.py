"""Hand-written gradients for the ATME blocks' normalisations: the same functions as the straightforward
compositions of torch ops, in fewer passes over memory, keeping fewer tensors for the backward pass.

Autograd through `(x - mean) * rsqrt(var + eps) * g` keeps three full-size tensors and runs about a dozen
element-wise passes forward and backward; the closed-form gradient of a normalisation needs the normalised
tensor and the per-position inverse deviation only. tests/test_fused_blocks.py checks forward and gradients
against the straightforward compositions, and a whole training step against them.

Statistics are taken in float32 (float64 stays float64) whatever the input dtype (see blocks.STATS_EPS); outputs
come back in the input's dtype, gradients in the dtype of what they are for.
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
        # Two passes (the mean, then the mean square of the centred kernel, which the result needs anyway) rather
        # than var_mean, whose one-pass reduction took four times as long on the CPU for a 512x512x3x3 kernel.
        centred = w - w.mean(dim=dims, keepdim=True)
        rstd = (centred * centred).mean(dim=dims, keepdim=True).add_(eps).rsqrt_()
        w_hat = centred.mul_(rstd)
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


class GroupNormSiLU(torch.autograd.Function):
    """SiLU(GroupNorm(x, groups) * gain + offset) with `gain` and `offset` of shape (B or 1, C, 1, 1).

    Autograd through group_norm, addcmul and silu keeps three full-size tensors (the GroupNorm's input, its output
    and the SiLU's input); this keeps the normalised tensor only and recomputes the SiLU's input from it in the
    backward pass (one multiply-add), so a basic block holds two fewer activations until its backward runs.
    """

    @staticmethod
    def forward(ctx, x, gain, offset, groups, eps):
        n, c = x.shape[:2]
        x32 = at_least_float32(x)
        x_hat, _, rstd = torch.ops.aten.native_group_norm(x32, None, None, n, c, x32[0, 0].numel(), groups, eps)
        out = F.silu(torch.addcmul(offset, x_hat, gain), inplace=True)
        ctx.save_for_backward(x_hat, rstd, gain, offset)
        ctx.groups, ctx.x_dtype = groups, x.dtype
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x_hat, rstd, gain, offset = ctx.saved_tensors
        n, c = x_hat.shape[:2]
        grad_z = torch.ops.aten.silu_backward(at_least_float32(grad), torch.addcmul(offset, x_hat, gain))
        grad_offset = grad_z.sum(dim=(2, 3), keepdim=True)
        grad_gain = (grad_z * x_hat).sum(dim=(2, 3), keepdim=True)
        if gain.shape[0] == 1 and n > 1:
            grad_gain = grad_gain.sum(dim=0, keepdim=True)
        if offset.shape[0] == 1 and n > 1:
            grad_offset = grad_offset.sum(dim=0, keepdim=True)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # GroupNorm's backward from x_hat: the native kernel given x_hat as its input with mean 0 and rstd 1
            # computes (g - mean(g) - x_hat * mean(g * x_hat)) per group; the true rstd scales that.
            ones = torch.ones_like(rstd)
            grad_x, _, _ = torch.ops.aten.native_group_norm_backward(
                grad_z.mul_(gain), x_hat, torch.zeros_like(rstd), ones, None, n, c, x_hat[0, 0].numel(), ctx.groups,
                [True, False, False])
            grad_x = grad_x.mul_(rstd.repeat_interleave(c // ctx.groups, dim=1).view(n, c, 1, 1)).to(ctx.x_dtype)
        return grad_x, grad_gain.to(gain.dtype), grad_offset.to(offset.dtype), None, None


def group_norm_scale_shift_silu(x, groups, weight, bias, eps, scale_shift=None):
    """SiLU(GroupNorm(x) * (scale + 1) + shift): the GroupNorm's affine and the time embedding's scale and shift
    folded into one per-channel multiply-add (one pass over x instead of three), in GroupNormSiLU."""
    gain, offset = weight.view(1, -1, 1, 1), bias.view(1, -1, 1, 1)
    if scale_shift is not None:
        scale, shift = scale_shift
        factor = scale + 1
        gain, offset = gain * factor, torch.addcmul(shift, offset, factor)
    return GroupNormSiLU.apply(x, gain, offset, groups, eps)

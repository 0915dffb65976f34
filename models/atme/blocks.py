"""Building blocks of the ATME generator (Fig. 2 c-g of the ATME paper) and the W block.

Module and parameter names follow the authors' release so that its checkpoints load unchanged
(see `models/atme/release_layout.json`): e.g. `block1.proj`, `norm.g`, `fn.fn.to_qkv`.
"""
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn

from models.atme.fused import ChannelLayerNorm, StandardizedWeight, group_norm_scale_shift_silu

# The statistics of the weight standardisation and the channel LayerNorm are taken in float32 with this epsilon,
# whatever the dtype of the activations: under bf16/fp16 autocast the network then computes the function it
# learned in float32. (The release picks 1e-3 for anything but float32 inputs, which changes that function: with
# weights of variance ~1e-3, as the normal(0, 0.02) initialisation gives, it halves the standardised kernels.)
STATS_EPS = 1e-5


def check_groups(channels, groups, what):
    """Raise a ValueError naming `what` when GroupNorm(groups) cannot split `channels`."""
    if groups < 1 or channels % groups:
        raise ValueError(f"{what} has {channels} channels, which GroupNorm with --groups {groups} cannot "
                         f"split evenly; choose --groups that divides it (e.g. 8 or 4) or change --dim/--dim_mults")


class WeightStandardizedConv2d(nn.Conv2d):
    """Conv2d whose kernel is standardised per output channel at every call (works well with GroupNorm)."""

    def forward(self, x):
        weight = StandardizedWeight.apply(self.weight, STATS_EPS)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class LayerNorm(nn.Module):
    """Channel-wise layer norm for (B, C, H, W) with a gain `g` and no bias."""

    def __init__(self, dim):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x):
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # The channels are the innermost dimension: torch's fused LayerNorm over the last dimension of the
            # (B, H, W, C) view, without a copy, with float32 statistics for a bf16 or fp16 x (its output keeps
            # x's dtype).
            return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.g.view(-1), None,
                                STATS_EPS).permute(0, 3, 1, 2)
        return ChannelLayerNorm.apply(x, self.g, STATS_EPS)


class Residual(nn.Module):
    """x + fn(x)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, *args, **kwargs):
        return self.fn(x, *args, **kwargs) + x


class PreNorm(nn.Module):
    """fn(LayerNorm(x))."""

    def __init__(self, dim, fn):
        super().__init__()
        self.fn = fn
        self.norm = LayerNorm(dim)

    def forward(self, x):
        return self.fn(self.norm(x))


class SinusoidalPosEmb(nn.Module):
    """Fixed sinusoidal embedding of a (B,) time vector -> (B, dim)."""

    def __init__(self, dim):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"the sinusoidal time embedding needs an even --dim of at least 4, got {dim}")
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
        angles = rearrange(t.float(), "b -> b 1") * rearrange(freqs, "f -> 1 f")
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class RandomOrLearnedSinusoidalPosEmb(nn.Module):
    """Fourier features with learned (or fixed random) frequencies; output (B, dim + 1) including t itself."""

    def __init__(self, dim, is_random=False):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"--learned_sinusoidal_dim must be even and at least 2, got {dim}")
        self.weights = nn.Parameter(torch.randn(dim // 2), requires_grad=not is_random)

    def forward(self, t):
        t = rearrange(t.float(), "b -> b 1")
        angles = t * rearrange(self.weights, "f -> 1 f") * 2 * math.pi
        return torch.cat((t, angles.sin(), angles.cos()), dim=-1)


class Block(nn.Module):
    """The basic block: weight-standardised 3x3 conv, GroupNorm, optional (scale, shift), SiLU."""

    def __init__(self, dim, dim_out, groups=8):
        super().__init__()
        check_groups(dim_out, groups, f"a basic block ({dim}->{dim_out} channels)")
        self.proj = WeightStandardizedConv2d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = nn.SiLU()

    def forward(self, x, scale_shift=None):
        norm = self.norm
        return group_norm_scale_shift_silu(self.proj(x), norm.num_groups, norm.weight, norm.bias, norm.eps,
                                           scale_shift)


class ResnetBlock(nn.Module):
    """Two basic blocks; the time embedding (if any) gives the first one a scale and shift."""

    def __init__(self, dim, dim_out, *, time_emb_dim=None, groups=8):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out * 2)) if time_emb_dim else None
        self.block1 = Block(dim, dim_out, groups=groups)
        self.block2 = Block(dim_out, dim_out, groups=groups)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, time_emb=None):
        scale_shift = None
        if self.mlp is not None and time_emb is not None:
            emb = rearrange(self.mlp(time_emb), "b c -> b c 1 1")
            scale_shift = emb.chunk(2, dim=1)
        h = self.block2(self.block1(x, scale_shift=scale_shift))
        return h + self.res_conv(x)


def project_qkv(to_qkv, x):
    """(q, k, v) from the bias-free 1x1 conv `to_qkv`. In an exported graph (torch.export, for ONNX) as three
    convolutions by the thirds of its weight, the same numbers: a Split of the full-resolution output is what
    OpenVINO's CPU plugin runs with a reference kernel (17% of ATME's fp32 inference at 256x256 and 40% in bf16
    on a 2-core AVX512-BF16/AMX Xeon; `python -m scripts.bench.backends --model atme --profile DIR`)."""
    if torch.compiler.is_exporting():
        return tuple(F.conv2d(x, weight) for weight in to_qkv.weight.chunk(3, dim=0))
    return to_qkv(x).chunk(3, dim=1)


class LinearAttention(nn.Module):
    """Attention linear in the number of pixels (softmax over features for q, over pixels for k)."""

    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), LayerNorm(dim))

    def forward(self, x):
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return self.to_out(self.attend_channels_last(x))
        batch, _, height, width = x.shape
        pixels = height * width
        # q, k and v each from its own third of the 1x1 kernel: each comes out contiguous as (b heads, c, pixels),
        # so the batched products read them in place. (One conv and a chunk leave v strided, which the products
        # copy at full resolution, and the backward pass then concatenates the three gradients.)
        q, k, v = (F.conv2d(x, part).reshape(batch * self.heads, -1, pixels)
                   for part in self.to_qkv.weight.chunk(3, dim=0))
        q = q.softmax(dim=-2)
        k = k.softmax(dim=-1)
        # The release scales q by dim_head ** -0.5 and divides v by the pixel count; both factors are applied to
        # the small (d x e) context instead of two full-resolution tensors: the same outputs, two passes fewer.
        context = torch.bmm(k, v.transpose(1, 2)) * (self.scale / pixels)  # (b heads, d, e)
        out = torch.bmm(context.transpose(1, 2), q)  # (b heads, e, pixels)
        return self.to_out(out.reshape(batch, -1, height, width))

    def attend_channels_last(self, x):
        """The same attention for a channels-last x, without leaving that layout: q, k and v are read in place as
        (b, pixels, heads * d), where splitting off the heads as a batch dimension would copy each of them (and
        their gradients) at full resolution. The context is the product of all channels with all channels, masked
        to the heads' diagonal blocks: heads times the products' arithmetic, small next to the convolutions', for
        none of the copies."""
        batch, _, height, width = x.shape
        pixels = height * width
        q, k, v = (F.conv2d(x, part).permute(0, 2, 3, 1).reshape(batch, pixels, -1)
                   for part in self.to_qkv.weight.chunk(3, dim=0))
        q = q.unflatten(2, (self.heads, -1)).softmax(dim=-1).flatten(2)
        k = k.softmax(dim=1)
        dim_head = q.shape[-1] // self.heads
        mask = torch.block_diag(*torch.full((self.heads, dim_head, dim_head), self.scale / pixels, dtype=x.dtype,
                                            device=x.device))
        context = torch.bmm(k.transpose(1, 2), v) * mask  # (b, d, e), zero between heads
        out = torch.bmm(q, context)  # (b, pixels, e): channels-last
        return out.view(batch, height, width, -1).permute(0, 3, 1, 2)


class Attention(nn.Module):
    """Full softmax attention over all pixels (used at the lowest resolution only)."""

    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        _, _, height, width = x.shape
        qkv = project_qkv(self.to_qkv, x)
        q, k, v = (rearrange(t, "b (heads c) x y -> b heads c (x y)", heads=self.heads) for t in qkv)
        sim = torch.einsum("b h d i, b h d j -> b h i j", q * self.scale, k)
        attn = sim.softmax(dim=-1)
        out = torch.einsum("b h i j, b h d j -> b h i d", attn, v)
        out = rearrange(out, "b heads (x y) d -> b (heads d) x y", x=height, y=width)
        return self.to_out(out)


class Downsample(nn.Sequential):
    """Halve the resolution without losing pixels: space-to-depth, then a 1x1 conv (the release's two modules).

    Run as what they compute together, one 2x2 convolution of stride 2 whose kernel is the 1x1 kernel's columns
    in space-to-depth order: no full-resolution rearranged copy forward or backward."""

    def __init__(self, dim, dim_out):
        super().__init__(Rearrange("b c (h p1) (w p2) -> b (c p1 p2) h w", p1=2, p2=2), nn.Conv2d(dim * 4, dim_out, 1))

    def forward(self, x):
        conv = self[1]
        kernel = conv.weight.view(conv.out_channels, -1, 2, 2)  # channel c * 4 + p1 * 2 + p2 -> (c, p1, p2)
        return F.conv2d(x, kernel, conv.bias, stride=2)


# Rows (and columns) of a 3x3 kernel that each output phase of a nearest x2 upsampling sees through its two
# low-resolution neighbours: even outputs see row 0 on the row above and rows 1 + 2 on their own row; odd
# outputs rows 0 + 1 on their own row and row 2 on the row below. Indexed (phase, tap, kernel row).
PHASE_TAPS = ((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1))


class Upsample(nn.Sequential):
    """Double the resolution: nearest neighbour, then a 3x3 conv (the release's two modules).

    Run as what they compute together: a 3x3 kernel over a nearest-upsampled image reads each low-resolution
    pixel through a 2x2 window whose taps are sums of the kernel's, one window per output phase (row and column
    parity). One 2x2 convolution at the low resolution with the four phases' kernels as output channels gives
    the same numbers in 16 multiply-adds per low-resolution pixel and channel pair instead of 36, and the
    upsampled input is never built. The phases are then interleaved into the output (a stack and a reshape)."""

    def __init__(self, dim, dim_out):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim, dim_out, 3, padding=1))

    def forward(self, x):
        conv = self[1]
        if torch.compiler.is_exporting() or (x.is_contiguous(memory_format=torch.channels_last)
                                             and not x.is_contiguous()):
            return super().forward(x)  # exported graphs keep the plain form; channels-last has no faster copy
        batch, _, height, width = x.shape
        out_channels = conv.out_channels
        taps = torch.tensor(PHASE_TAPS, dtype=conv.weight.dtype, device=conv.weight.device)
        kernel = torch.einsum("air,bjs,ocrs->abocij", taps, taps, conv.weight).reshape(4 * out_channels, -1, 2, 2)
        bias = None if conv.bias is None else conv.bias.repeat(4)
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernel, bias).view(batch, 2, 2, out_channels, height + 1, width + 1)
        # Phase (a, b) is output pixel (2i + a, 2j + b); its window starts a rows and b columns into the padding.
        phases = torch.stack([y[:, a, b, :, a:a + height, b:b + width] for a in (0, 1) for b in (0, 1)], dim=2)
        out = phases.view(batch, out_channels, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)
        return out.reshape(batch, out_channels, 2 * height, 2 * width)


class ResizeToFraction(nn.Module):
    """Bilinear resize to (H // divisor, W // divisor) of the requested output size."""

    def __init__(self, divisor):
        super().__init__()
        self.divisor = divisor

    def forward(self, x, out_size):
        size = (out_size[0] // self.divisor, out_size[1] // self.divisor)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def extra_repr(self):
        return f"divisor={self.divisor}"


class WBlock(nn.Module):
    """W of ATME (Fig. 2 g): discriminator map (B,1,h,w) -> (B,1,H,W) in [-1, 1].

    The release resizes to 64, 128, 256; here the three stages go to H/4, H/2 and H of `out_size`.
    """

    def __init__(self, *, groups=8, in_channels=1, out_channels=1):
        super().__init__()
        self.model = nn.Sequential(
            ResizeToFraction(4), Block(in_channels, 32, groups=groups),
            ResizeToFraction(2), Block(32, 64, groups=groups),
            ResizeToFraction(1), Block(64, 32, groups=groups),
            nn.Conv2d(32, out_channels, 1), nn.Tanh())

    def forward(self, d_map, out_size):
        if d_map.dim() != 4:
            raise ValueError(f"W expects a discriminator map of shape (B, C, h, w), got {tuple(d_map.shape)}")
        out_size = (out_size[0], out_size[1])  # no int(): under torch.export the sizes stay symbolic (ONNX)
        if min(out_size) < 4:
            raise ValueError(f"W needs an output of at least 4x4 pixels, got {out_size}; raise --crop_size")
        x = d_map
        for layer in self.model:
            x = layer(x, out_size) if isinstance(layer, ResizeToFraction) else layer(x)
        return x

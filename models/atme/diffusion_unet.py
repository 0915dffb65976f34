"""The ATME generator (Fig. 2 b of the ATME paper): a diffusion-style U-Net conditioned on a time t.

At the default configuration its state_dict has exactly the keys and shapes of the authors' release,
so released `*_net_G.pth` files load without renaming.
"""
from functools import partial

import torch
from torch import nn

from models.atme.blocks import (Attention, Downsample, LinearAttention, PreNorm, RandomOrLearnedSinusoidalPosEmb,
                                ResnetBlock, Residual, SinusoidalPosEmb, Upsample, check_groups)


def check_unet_config(*, dim, init_dim, dim_mults, resnet_block_groups):
    """Raise a ValueError that names the flag to change when a configuration cannot be built."""
    if not dim_mults:
        raise ValueError("--dim_mults must list at least one multiplier, e.g. 1,2,4,8")
    if dim < 1 or init_dim < 1 or any(m < 1 for m in dim_mults):
        raise ValueError(f"--dim ({dim}), --init_dim ({init_dim}) and every --dim_mults entry ({dim_mults}) "
                         f"must be positive")
    groups = resnet_block_groups
    if groups < 1:
        raise ValueError(f"--groups must be at least 1, got {groups}")
    for index, mult in enumerate(dim_mults):
        if (dim * mult) % groups:
            raise ValueError(f"--dim_mults entry {index} ({mult}) gives {mult} x --dim {dim} = {dim * mult} channels, "
                             f"not divisible by --groups {groups}; change --dim, --dim_mults or --groups")
    if init_dim % groups:
        raise ValueError(f"--init_dim {init_dim} is not divisible by --groups {groups}; "
                         f"choose --init_dim or --groups so that GroupNorm splits the channels evenly")
    if dim % groups:
        raise ValueError(f"--dim {dim} is not divisible by --groups {groups}; "
                         f"choose --dim or --groups so that GroupNorm splits the channels evenly")


class DiffusionUNet(nn.Module):
    """U-Net with ResNet blocks, linear attention at every level and full attention in the middle.

    forward(x (B, channels, H, W), t (B,)) -> (B, out_dim, H, W) in [-1, 1]; H and W must be multiples of
    2 ** (len(dim_mults) - 1).
    """

    def __init__(self, *, dim=64, init_dim=None, out_dim=None, dim_mults=(1, 2, 4, 8), channels=3,
                 resnet_block_groups=8, learned_sinusoidal_cond=False, random_fourier_features=False,
                 learned_sinusoidal_dim=16, time_dim_mult=4):
        super().__init__()
        dim_mults = tuple(int(m) for m in dim_mults)
        init_dim = init_dim or dim
        out_dim = out_dim or channels
        check_unet_config(dim=dim, init_dim=init_dim, dim_mults=dim_mults, resnet_block_groups=resnet_block_groups)
        self.channels = channels
        self.out_dim = out_dim
        self.dim_mults = dim_mults
        self.downsample_factor = 2 ** (len(dim_mults) - 1)

        self.init_conv = nn.Conv2d(channels, init_dim, 7, padding=3)
        dims = [init_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        block = partial(ResnetBlock, groups=resnet_block_groups)

        # Time t (B,) -> Fourier features -> MLP; every ResNet block reads the result as a scale and shift.
        time_dim = dim * time_dim_mult
        if learned_sinusoidal_cond or random_fourier_features:
            pos_emb = RandomOrLearnedSinusoidalPosEmb(learned_sinusoidal_dim, is_random=random_fourier_features)
            fourier_dim = learned_sinusoidal_dim + 1
        else:
            pos_emb = SinusoidalPosEmb(dim)
            fourier_dim = dim
        self.time_mlp = nn.Sequential(pos_emb, nn.Linear(fourier_dim, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))

        # Both lists are registered before the middle so the state_dict order matches the release's.
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for index, (dim_in, dim_out) in enumerate(in_out):
            last = index == len(in_out) - 1
            self.downs.append(nn.ModuleList([
                block(dim_in, dim_in, time_emb_dim=time_dim),
                block(dim_in, dim_in, time_emb_dim=time_dim),
                Residual(PreNorm(dim_in, LinearAttention(dim_in))),
                # The lowest level changes channels only, so the middle runs at 1/2**(levels-1) resolution.
                nn.Conv2d(dim_in, dim_out, 3, padding=1) if last else Downsample(dim_in, dim_out),
            ]))

        mid_dim = dims[-1]
        self.mid_block1 = block(mid_dim, mid_dim, time_emb_dim=time_dim)
        self.mid_attn = Residual(PreNorm(mid_dim, Attention(mid_dim)))
        self.mid_block2 = block(mid_dim, mid_dim, time_emb_dim=time_dim)

        for index, (dim_in, dim_out) in enumerate(reversed(in_out)):
            last = index == len(in_out) - 1
            # Input: dim_out channels from below plus a dim_in skip from the matching down level.
            self.ups.append(nn.ModuleList([
                block(dim_out + dim_in, dim_out, time_emb_dim=time_dim),
                block(dim_out + dim_in, dim_out, time_emb_dim=time_dim),
                Residual(PreNorm(dim_out, LinearAttention(dim_out))),
                nn.Conv2d(dim_out, dim_in, 3, padding=1) if last else Upsample(dim_out, dim_in),
            ]))

        self.final_res_block = block(init_dim * 2, dim, time_emb_dim=time_dim)
        check_groups(dim, resnet_block_groups, "the head")
        # Head (f): a time-free ResNet block, then 1x1 conv and tanh to reach the image range.
        self.final_conv = nn.Sequential(block(dim, dim), nn.Conv2d(dim, out_dim, 1), nn.Tanh())

    def check_input(self, x, t):
        """Raise a ValueError naming the flag to change when (x, t) cannot go through this network."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"the generator expects images of shape (B, {self.channels}, H, W), got "
                             f"{tuple(x.shape)}; check --input_nc")
        height, width = x.shape[-2:]
        factor = self.downsample_factor
        if height % factor or width % factor:
            raise ValueError(f"the generator with --dim_mults {','.join(map(str, self.dim_mults))} needs image sides "
                             f"that are multiples of {factor}, got {height}x{width}; use a --crop_size such as "
                             f"{max(factor, 256)} (a power of two >= {factor}) or fewer --dim_mults entries")
        if t.shape != (x.shape[0],):
            raise ValueError(f"the generator expects one time value per image, shape ({x.shape[0]},), "
                             f"got {tuple(t.shape)}")

    def forward(self, x, t):
        self.check_input(x, t)
        x = self.init_conv(x)
        init_features = x  # nothing below writes into x in place, so the skip needs no copy
        time_emb = self.time_mlp(t)

        skips = []
        for block1, block2, attn, downsample in self.downs:
            x = block1(x, time_emb)
            skips.append(x)
            x = attn(block2(x, time_emb))
            skips.append(x)
            x = downsample(x)

        x = self.mid_block2(self.mid_attn(self.mid_block1(x, time_emb)), time_emb)

        for block1, block2, attn, upsample in self.ups:
            x = block1(torch.cat((x, skips.pop()), dim=1), time_emb)
            x = block2(torch.cat((x, skips.pop()), dim=1), time_emb)
            x = upsample(attn(x))

        x = self.final_res_block(torch.cat((x, init_features), dim=1), time_emb)
        return self.final_conv(x)

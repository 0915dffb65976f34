"""SEGAN networks: the noise U-Net generator, the statistics network T and the multi-scale discriminator.

Paper: "Multimodal Image-to-Image Translation via Mutual Information Estimation and Maximization" (SEGAN).
Equation and table numbers below refer to it. These classes take explicit arguments; only
`models/segan_model.py` reads the options.
"""
import functools
import math

import torch
from einops import rearrange, repeat
from torch import nn

from models.networks.discriminators import NLayerDiscriminator
from models.networks.layers import uses_bias


def unet_depth(image_size):
    """Number of stride-2 levels that take a square `image_size` image down to 1x1 (log2 of the size)."""
    if image_size < 2 or image_size & (image_size - 1):
        raise ValueError(f"the SEGAN U-Net needs --crop_size to be a power of two (e.g. 128 or 256), "
                         f"got {image_size}")
    return int(math.log2(image_size))


def _upsample_layer(in_channels, out_channels, *, mode, bias):
    """x2 upsampling: 'deconv' (transposed 4x4 conv) or 'resize_conv' (bilinear resize, then 3x3 conv)."""
    if mode == "deconv":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=bias)
    if mode == "resize_conv":
        # Resize-then-convolve avoids the checkerboard artefacts of transposed convolutions.
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias))
    raise ValueError(f"upsampling must be 'deconv' or 'resize_conv' (flag --upsample), got {mode!r}")


class NoiseUnetGenerator(nn.Module):
    """pix2pix U-Net with a latent code z injected into every encoder layer (G(a, z), Eq. 2-3).

    The code (B, nz) is tiled over the spatial grid and concatenated to the input of each down
    convolution, as in BicycleGAN's "add_to_all" generator (SEGAN, Training details). The skip
    connections carry the encoder features without z. Channel widths, norms, dropout and activations
    follow the pix2pix U-Net: `ngf * min(2**i, 8)` channels at encoder level i, no norm on the outermost
    and innermost down convolutions, dropout in the innermost decoder blocks of width `8 * ngf`.

    `upsample` is 'deconv' (the paper's choice at 256x256) or 'resize_conv' (its choice at 128x128).
    """

    def __init__(self, input_nc, output_nc, *, nz=8, num_downs, ngf=64,
                 norm_layer=functools.partial(nn.InstanceNorm2d, affine=False), use_dropout=False,
                 upsample="deconv"):
        super().__init__()
        if nz < 1:
            raise ValueError(f"the noise U-Net needs a latent code: --nz must be at least 1, got {nz}")
        if num_downs < 2:
            raise ValueError(f"the U-Net needs at least 2 levels, got num_downs={num_downs}; raise --crop_size")
        self.input_nc, self.output_nc, self.nz, self.num_downs = input_nc, output_nc, nz, num_downs
        bias = uses_bias(norm_layer)  # no conv bias in front of batch norm
        widths = [ngf * min(2 ** level, 8) for level in range(num_downs)]
        innermost = num_downs - 1

        self.down = nn.ModuleList()
        for level, width in enumerate(widths):
            in_channels = (input_nc if level == 0 else widths[level - 1]) + nz
            layers = [] if level == 0 else [nn.LeakyReLU(0.2, inplace=True)]
            layers.append(nn.Conv2d(in_channels, width, kernel_size=4, stride=2, padding=1, bias=bias))
            if 0 < level < innermost:
                layers.append(norm_layer(width))
            self.down.append(nn.Sequential(*layers))

        # up[level] turns the decoder state at `level` into the resolution and width of level - 1.
        self.up = nn.ModuleList()
        for level, width in enumerate(widths):
            in_channels = width if level == innermost else 2 * width  # decoder state + skip
            if level == 0:
                self.up.append(nn.Sequential(nn.ReLU(inplace=True),
                                             _upsample_layer(in_channels, output_nc, mode=upsample, bias=True),
                                             nn.Tanh()))
                continue
            layers = [nn.ReLU(inplace=True),
                      _upsample_layer(in_channels, widths[level - 1], mode=upsample, bias=bias),
                      norm_layer(widths[level - 1])]
            if use_dropout and 4 <= level < innermost:  # pix2pix: the (8*ngf -> 8*ngf) middle blocks
                layers.append(nn.Dropout(0.5))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x, z):
        """x: (B, input_nc, H, W) in [-1, 1]; z: (B, nz). Returns (B, output_nc, H, W) in [-1, 1]."""
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(f"the generator expects images (B, {self.input_nc}, H, W) (--input_nc), "
                             f"got {tuple(x.shape)}")
        stride = 2 ** self.num_downs
        height, width = x.shape[-2:]
        if height % stride or width % stride:
            raise ValueError(f"a {height}x{width} image does not fit this {self.num_downs}-level U-Net: the side "
                             f"must be a multiple of {stride}. Train and test with the same --crop_size "
                             f"(and a --preprocess that crops to it).")
        if z.shape != (x.shape[0], self.nz):
            raise ValueError(f"latent codes must be (batch={x.shape[0]}, nz={self.nz}) (--nz), got {tuple(z.shape)}")
        z = z.to(dtype=x.dtype)

        skips = []
        features = x
        for down in self.down:
            skips.append(features)
            tiled_z = repeat(z, "b nz -> b nz h w", h=features.shape[-2], w=features.shape[-1])
            features = down(torch.cat([features, tiled_z], dim=1))
        # skips[level] is the input of encoder level `level`; the decoder concatenates it (no z) after up[level].
        for level in reversed(range(1, self.num_downs)):
            features = torch.cat([self.up[level](features), skips[level]], dim=1)
        return self.up[0](features)


class StatisticsNetwork(nn.Module):
    """The critic T(z, b) of the mutual-information estimator (Eq. 5 and 7; Tables 3 and 4).

    Image branch: 4x4 stride-2 convolutions with ELU, 32 channels doubling per layer (capped at
    `max_channels`, 1024 in Table 3), log2(image_size) - 2 layers so the last map is 4x4 (6 layers at
    256, 5 at 128), then a fully connected layer to `hidden` (1024). Code branch: FC 512, ELU, FC 1024.
    The two 1024-vectors are added and a final FC gives one score per pair.

    Where the ELU of the last hidden layer sits is not determined by the tables; it is applied to the
    SUM of the two branches. Applying it to each branch before adding would make the score additively
    separable, T(z, b) = f(b) + g(z), and such a critic gives the same expected score on joint and on
    independent pairs, so it cannot estimate any mutual information.
    """

    def __init__(self, image_nc, nz, image_size, *, base_channels=32, max_channels=1024, hidden=1024,
                 z_hidden=512):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"the statistics network needs --crop_size to be a power of two >= 8, got {image_size}")
        self.image_nc, self.nz, self.image_size = image_nc, nz, image_size
        num_convs = int(math.log2(image_size)) - 2
        layers, in_channels = [], image_nc
        for index in range(num_convs):
            out_channels = min(base_channels * 2 ** index, max_channels)
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1), nn.ELU()]
            in_channels = out_channels
        self.image_convs = nn.Sequential(*layers)
        self.image_fc = nn.Linear(in_channels * 4 * 4, hidden)
        self.code_mlp = nn.Sequential(nn.Linear(nz, z_hidden), nn.ELU(), nn.Linear(z_hidden, hidden))
        self.head = nn.Sequential(nn.ELU(), nn.Linear(hidden, 1))

    def forward(self, z, b):
        """z: (B, nz); b: (B, image_nc, S, S) with S = image_size. Returns the scores T(z, b), shape (B,)."""
        expected = (self.image_nc, self.image_size, self.image_size)
        if b.dim() != 4 or tuple(b.shape[1:]) != expected:
            raise ValueError(f"the statistics network was built for images {expected} (--output_nc, --crop_size), "
                             f"got {tuple(b.shape)}")
        if z.shape != (b.shape[0], self.nz):
            raise ValueError(f"latent codes must be (batch={b.shape[0]}, nz={self.nz}) (--nz), got {tuple(z.shape)}")
        image_features = self.image_fc(rearrange(self.image_convs(b), "b c h w -> b (c h w)"))
        code_features = self.code_mlp(z.to(dtype=image_features.dtype))
        return rearrange(self.head(image_features + code_features), "b 1 -> b")


class MultiscaleDiscriminator(nn.Module):
    """`num_D` PatchGANs on an image pyramid (pix2pixHD); the paper's "multi-scale patch discriminator".

    Scale 0 sees the input; each further scale sees the previous one average-pooled by 2. SEGAN's D
    judges the output alone, D(b) in Eq. 2 (input_nc = output channels); a conditional D gets the input
    and output concatenated (input_nc = in + out).
    """

    def __init__(self, input_nc, *, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d, num_D=2):
        super().__init__()
        if num_D < 1:
            raise ValueError(f"--num_D must be at least 1, got {num_D}")
        self.input_nc, self.n_layers, self.num_D = input_nc, n_layers, num_D
        self.scales = nn.ModuleList(
            NLayerDiscriminator(input_nc, ndf=ndf, n_layers=n_layers, norm_layer=norm_layer) for _ in range(num_D))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def min_input_size(self):
        """Smallest side the coarsest PatchGAN still maps to at least one patch."""
        # A PatchGAN halves n_layers times, then two 4x4 stride-1 convs (padding 1) remove 2 pixels.
        return 3 * 2 ** self.n_layers * 2 ** (self.num_D - 1)

    def forward(self, x):
        """x: (B, input_nc, H, W). Returns a list of num_D patch maps, finest scale first."""
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(f"the discriminator expects (B, {self.input_nc}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_input_size():
            raise ValueError(f"a {x.shape[-2]}x{x.shape[-1]} image is too small for {self.num_D} scales of a "
                             f"{self.n_layers}-layer PatchGAN (needs {self.min_input_size()}): raise --crop_size or "
                             f"lower --num_D / --n_layers_D")
        maps = []
        for index, patch_gan in enumerate(self.scales):
            if index:
                x = self.downsample(x)
            maps.append(patch_gan(x))
        return maps

"""pix2pix discriminators: the PatchGAN (`basic`, `n_layers`) and the 1x1 PixelGAN (`pixel`).

Module trees follow the pix2pix release, so `state_dict` keys match released checkpoints
(`model.0.weight`, `model.2.weight`, ..., `model.11.weight` for the 3-layer PatchGAN).
"""
from torch import nn

from models.networks.layers import get_norm_layer, init_weights, uses_bias

DISCRIMINATOR_NAMES = ("basic", "n_layers", "pixel")
PATCH_KERNEL, PATCH_PADDING = 4, 1


def _conv_out(size, stride):
    return (size + 2 * PATCH_PADDING - PATCH_KERNEL) // stride + 1


def patchgan_output_size(n_layers, height, width):
    """(h, w) of the PatchGAN map: `n_layers` stride-2 convs, then two stride-1 convs. No checks."""
    for _ in range(n_layers):
        height, width = _conv_out(height, 2), _conv_out(width, 2)
    for _ in range(2):
        height, width = _conv_out(height, 1), _conv_out(width, 1)
    return height, width


def patch_output_size(netD, n_layers_D, height, width):
    """(h, w) of discriminator `netD`'s output map for an HxW input, computed without a forward.

    `netD` is the `--netD` name; `n_layers_D` is used by `n_layers` only (`basic` is 3).
    Raises ValueError, naming the flags to change, if the input is too small for the D.
    """
    if netD == "pixel":
        return height, width
    if netD == "basic":
        n_layers = 3
    elif netD == "n_layers":
        n_layers = n_layers_D
    else:
        raise ValueError(f"unknown discriminator {netD!r} (--netD); choose one of: {', '.join(DISCRIMINATOR_NAMES)}")
    out_h, out_w = patchgan_output_size(n_layers, height, width)
    if out_h <= 0 or out_w <= 0:
        smallest = 2 ** n_layers * 3  # the last stride-2 output must be >= 3 for two 4x4/stride-1 convs
        raise ValueError(f"a {height}x{width} input is too small for the {n_layers}-layer PatchGAN (--netD {netD}): "
                         f"its output map would be {out_h}x{out_w}. Use --crop_size >= {smallest} "
                         f"or a smaller --n_layers_D with --netD n_layers")
    return out_h, out_w


class NLayerDiscriminator(nn.Module):
    """PatchGAN: `n_layers` 4x4 stride-2 convs, one 4x4 stride-1 conv, then a 1-channel 4x4 conv.

    n_layers=3 is the 70x70 PatchGAN; the output is a map of raw logits (B, 1, h, w).
    """

    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers (--n_layers_D) must be >= 1, got {n_layers}")
        self.input_nc, self.n_layers = input_nc, n_layers
        use_bias = uses_bias(norm_layer)

        def conv(in_nc, out_nc, stride, bias=use_bias):
            return nn.Conv2d(in_nc, out_nc, kernel_size=PATCH_KERNEL, stride=stride, padding=PATCH_PADDING, bias=bias)

        # The first conv has no norm after it, so it always keeps its bias (as released).
        layers = [conv(input_nc, ndf, stride=2, bias=True), nn.LeakyReLU(0.2, inplace=True)]
        channels = ndf
        for n in range(1, n_layers + 1):
            next_channels = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [conv(channels, next_channels, stride=stride), norm_layer(next_channels),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels = next_channels
        layers.append(conv(channels, 1, stride=1, bias=True))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(f"NLayerDiscriminator expects (batch, {self.input_nc}, height, width) input, "
                             f"got shape {tuple(x.shape)}")
        out_h, out_w = patchgan_output_size(self.n_layers, x.shape[-2], x.shape[-1])
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"a {x.shape[-2]}x{x.shape[-1]} input is too small for the {self.n_layers}-layer "
                             f"PatchGAN; raise --crop_size or lower --n_layers_D")
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PixelGAN: classifies every pixel on its own; output (B, 1, H, W) logits."""

    def __init__(self, input_nc, ndf=64, norm_layer=nn.BatchNorm2d):
        super().__init__()
        use_bias = uses_bias(norm_layer)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=use_bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=use_bias),
        )

    def forward(self, x):
        return self.net(x)


def define_D(input_nc, ndf, netD, n_layers_D=3, norm="batch", init_type="normal", init_gain=0.02):
    """Build and initialise a discriminator by name (see DISCRIMINATOR_NAMES); no device placement."""
    norm_layer = get_norm_layer(norm)
    if netD == "basic":
        net = NLayerDiscriminator(input_nc, ndf=ndf, n_layers=3, norm_layer=norm_layer)
    elif netD == "n_layers":
        net = NLayerDiscriminator(input_nc, ndf=ndf, n_layers=n_layers_D, norm_layer=norm_layer)
    elif netD == "pixel":
        net = PixelDiscriminator(input_nc, ndf=ndf, norm_layer=norm_layer)
    else:
        raise ValueError(f"unknown discriminator {netD!r} (--netD); choose one of: {', '.join(DISCRIMINATOR_NAMES)}")
    return init_weights(net, init_type=init_type, init_gain=init_gain)

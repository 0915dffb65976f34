"""pix2pix generators: the nested-skip U-Net and the ResNet encoder/decoder.

Module trees (and so `state_dict` keys) follow the pix2pix release exactly, so released
weights load: `model.model.0.weight`, `model.model.1.model.1.weight`, ... for the U-Net,
`model.1.weight`, `model.10.conv_block.1.weight`, ... for the ResNet generator.
"""
import functools

import torch
from torch import nn

from models.networks.layers import get_norm_layer, init_weights, uses_bias
from util.process.distributed import unwrap

GENERATOR_NAMES = ("unet_128", "unet_256", "unet", "resnet_6blocks", "resnet_9blocks")
PADDING_TYPES = ("reflect", "replicate", "zero")
MIN_UNET_DOWNS = 5  # outermost + three channel-changing blocks + innermost
SIZE_ADVICE = ("or use --netG unet (depth follows --crop_size; any power of two >= 32) or "
               "--netG resnet_6blocks / resnet_9blocks (multiples of 4, at least 8)")


def generator_size_error(description, multiple, min_size, height, width):
    """The message for an HxW input that a generator needing multiples of `multiple` cannot take."""
    suggestion = max(min_size, round(min(height, width) / multiple) * multiple)
    return (f"{description} needs image sides that are multiples of {multiple} (at least {min_size}), "
            f"got {height}x{width}. Set --crop_size to such a size (e.g. {suggestion}; with --preprocess none "
            f"the images themselves must have it), {SIZE_ADVICE}.")


def generator_size_rule(netG, crop_size=None):
    """(multiple, min_size, description) for a generator module or `--netG` name, or None if it has none.

    For the name `unet` the depth comes from `crop_size`, as in `define_G`.
    """
    if isinstance(netG, str):
        if netG == "unet":
            if crop_size is None:
                raise ValueError("the size rule of --netG unet depends on --crop_size; pass crop_size")
            side = 2 ** unet_depth(crop_size)
            return side, side, f"--netG unet (depth {side.bit_length() - 1} from --crop_size {crop_size})"
        if netG in ("unet_128", "unet_256"):
            side = int(netG[len("unet_"):])
            return side, side, f"--netG {netG}"
        if netG in GENERATOR_NAMES:
            return ResnetGenerator.size_multiple, ResnetGenerator.min_size, f"--netG {netG}"
        return None
    net = unwrap(netG)
    if getattr(net, "size_multiple", None) is None:
        return None
    return net.size_multiple, net.min_size, net.size_description


def check_generator_size(netG, height, width):
    """Raise ValueError, saying which sizes work and which flag to change, if netG cannot take HxW.

    `netG` is a generator module (any DDP/compile wrapping) or a `--netG` name; for the name
    `unet`, `height` is taken as the --crop_size that set its depth. Generators without a
    size rule (modules without `size_multiple`, names define_G does not know) are accepted.
    """
    rule = generator_size_rule(netG, crop_size=height)
    if rule is None:
        return
    multiple, min_size, description = rule
    if height % multiple or width % multiple or min(height, width) < min_size:
        raise ValueError(generator_size_error(description, multiple, min_size, height, width))


def _check_input(net, x):
    """Cheap shape checks at the top of forward: Python ints only, no host sync."""
    if x.dim() != 4 or x.shape[1] != net.input_nc:
        raise ValueError(f"{type(net).__name__} expects (batch, {net.input_nc}, height, width) input "
                         f"(--input_nc / --output_nc), got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height % net.size_multiple or width % net.size_multiple or min(height, width) < net.min_size:
        raise ValueError(generator_size_error(net.size_description, net.size_multiple, net.min_size,
                                              height, width))


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down conv, the inner levels, up conv, and the skip concatenation.

    Non-outermost blocks start with an in-place LeakyReLU, so the skip path carries the
    activated features, exactly as in the pix2pix release whose weights were trained so.
    """

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        if outermost and innermost:
            raise ValueError("a U-Net block cannot be both outermost and innermost")
        if (submodule is None) != innermost:
            raise ValueError("every U-Net block but the innermost needs a submodule")
        self.outermost = outermost
        use_bias = uses_bias(norm_layer)
        input_nc = outer_nc if input_nc is None else input_nc
        conv_down = functools.partial(nn.Conv2d, kernel_size=4, stride=2, padding=1)
        conv_up = functools.partial(nn.ConvTranspose2d, kernel_size=4, stride=2, padding=1)

        downconv = conv_down(input_nc, inner_nc, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, inplace=True)
        uprelu = nn.ReLU(inplace=True)
        if outermost:
            layers = [downconv, submodule, uprelu, conv_up(inner_nc * 2, outer_nc), nn.Tanh()]
        elif innermost:
            # No norm at the 1x1 bottleneck: instance norm of a single value would be zero.
            layers = [downrelu, downconv, uprelu, conv_up(inner_nc, outer_nc, bias=use_bias), norm_layer(outer_nc)]
        else:
            layers = [downrelu, downconv, norm_layer(inner_nc), submodule,
                      uprelu, conv_up(inner_nc * 2, outer_nc, bias=use_bias), norm_layer(outer_nc)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        # model[0] activates x in place, so the skip below is LeakyReLU(x) (see class docstring).
        inner = self.model(x)
        return torch.cat([x, inner], dim=1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net with `num_downs` stride-2 levels; sides must be multiples of 2**num_downs."""

    def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        if num_downs < MIN_UNET_DOWNS:
            raise ValueError(f"a U-Net needs num_downs >= {MIN_UNET_DOWNS} (images of at least "
                             f"{2 ** MIN_UNET_DOWNS}px, --crop_size), got {num_downs}")
        self.input_nc, self.output_nc, self.num_downs = input_nc, output_nc, num_downs
        self.size_multiple = self.min_size = 2 ** num_downs
        self.size_description = f"the U-Net generator with {num_downs} downsamplings"
        block = functools.partial(UnetSkipConnectionBlock, norm_layer=norm_layer)

        unet = block(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - MIN_UNET_DOWNS):
            unet = block(ngf * 8, ngf * 8, submodule=unet, use_dropout=use_dropout)
        unet = block(ngf * 4, ngf * 8, submodule=unet)
        unet = block(ngf * 2, ngf * 4, submodule=unet)
        unet = block(ngf, ngf * 2, submodule=unet)
        self.model = block(output_nc, ngf, input_nc=input_nc, submodule=unet, outermost=True)

    def forward(self, x):
        _check_input(self, x)
        return self.model(x)


class ResnetBlock(nn.Module):
    """Two 3x3 convs with a residual connection; `padding_type` reflect | replicate | zero."""

    def __init__(self, dim, padding_type, norm_layer, use_dropout, use_bias):
        super().__init__()
        if padding_type not in PADDING_TYPES:
            raise ValueError(f"unknown padding_type {padding_type!r}; choose one of: {', '.join(PADDING_TYPES)}")
        pad = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d}.get(padding_type)
        conv_padding = 1 if pad is None else 0

        def conv():
            padding_layers = [] if pad is None else [pad(1)]
            return padding_layers + [nn.Conv2d(dim, dim, kernel_size=3, padding=conv_padding, bias=use_bias),
                                     norm_layer(dim)]

        layers = conv() + [nn.ReLU(inplace=True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += conv()
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """pix2pix/CycleGAN ResNet generator: 2 stride-2 downs, `n_blocks` residual blocks, 2 ups."""

    n_downsampling = 2
    size_multiple = 2 ** n_downsampling
    min_size = 2 * size_multiple  # the reflection pads need more than one pixel at the bottom

    def __init__(self, input_nc, output_nc, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False, n_blocks=6,
                 padding_type="reflect"):
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        self.input_nc, self.output_nc = input_nc, output_nc
        self.size_description = f"the ResNet generator ({n_blocks} blocks)"
        use_bias = uses_bias(norm_layer)

        layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                  norm_layer(ngf), nn.ReLU(inplace=True)]
        for i in range(self.n_downsampling):
            channels = ngf * 2 ** i
            layers += [nn.Conv2d(channels, channels * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                       norm_layer(channels * 2), nn.ReLU(inplace=True)]
        channels = ngf * 2 ** self.n_downsampling
        layers += [ResnetBlock(channels, padding_type=padding_type, norm_layer=norm_layer, use_dropout=use_dropout,
                               use_bias=use_bias) for _ in range(n_blocks)]
        for i in range(self.n_downsampling):
            channels = ngf * 2 ** (self.n_downsampling - i)
            layers += [nn.ConvTranspose2d(channels, channels // 2, kernel_size=3, stride=2, padding=1,
                                          output_padding=1, bias=use_bias),
                       norm_layer(channels // 2), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        # Sides that are not multiples of 4 would come back at another size, not fail.
        _check_input(self, x)
        return self.model(x)


def unet_depth(crop_size):
    """Number of U-Net levels that bring `crop_size` down to 1x1 (for `--netG unet`)."""
    if crop_size < 2 ** MIN_UNET_DOWNS or crop_size & (crop_size - 1):
        raise ValueError(f"--netG unet sets its depth to log2(--crop_size), so --crop_size must be a power of "
                         f"two >= {2 ** MIN_UNET_DOWNS}, got {crop_size}; change --crop_size or use "
                         f"--netG resnet_9blocks (multiples of 4)")
    return crop_size.bit_length() - 1


def define_G(input_nc, output_nc, ngf, netG, norm="batch", use_dropout=False, init_type="normal",
             init_gain=0.02, crop_size=256):
    """Build and initialise a generator by name (see GENERATOR_NAMES); no device placement."""
    norm_layer = get_norm_layer(norm)
    common = dict(input_nc=input_nc, output_nc=output_nc, ngf=ngf, norm_layer=norm_layer, use_dropout=use_dropout)
    if netG == "resnet_9blocks":
        net = ResnetGenerator(**common, n_blocks=9)
    elif netG == "resnet_6blocks":
        net = ResnetGenerator(**common, n_blocks=6)
    elif netG == "unet_128":
        net = UnetGenerator(**common, num_downs=7)
    elif netG == "unet_256":
        net = UnetGenerator(**common, num_downs=8)
    elif netG == "unet":
        net = UnetGenerator(**common, num_downs=unet_depth(crop_size))
    else:
        raise ValueError(f"unknown generator {netG!r} (--netG); choose one of: {', '.join(GENERATOR_NAMES)}")
    if netG.startswith("unet"):
        net.size_description = f"--netG {netG} ({net.num_downs} downsamplings)"
    else:
        net.size_description = f"--netG {netG}"
    return init_weights(net, init_type=init_type, init_gain=init_gain)

"""SEGAN networks: shapes, noise injection into every encoder layer, critic structure, size errors."""
import functools

import pytest
import torch
from torch import nn

from models.segan.networks import MultiscaleDiscriminator, NoiseUnetGenerator, StatisticsNetwork, unet_depth

INSTANCE = functools.partial(nn.InstanceNorm2d, affine=False)


def small_generator(size, *, nz=4, upsample="deconv", norm_layer=INSTANCE):
    return NoiseUnetGenerator(3, 2, nz=nz, num_downs=unet_depth(size), ngf=4, norm_layer=norm_layer,
                              upsample=upsample)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("upsample", ["deconv", "resize_conv"])
def test_generator_output_shape_and_range(size, upsample):
    torch.manual_seed(0)
    net = small_generator(size, upsample=upsample)
    out = net(torch.randn(2, 3, size, size), torch.randn(2, 4))
    assert out.shape == (2, 2, size, size)
    assert out.abs().max() <= 1.0


def test_generator_depth_follows_image_size():
    assert unet_depth(256) == 8 and unet_depth(128) == 7 and unet_depth(32) == 5
    assert len(small_generator(64).down) == 6
    with pytest.raises(ValueError, match="--crop_size"):
        unet_depth(96)


def test_different_codes_give_different_outputs():
    torch.manual_seed(0)
    net = small_generator(32).eval()
    image = torch.randn(1, 3, 32, 32).expand(2, -1, -1, -1)
    codes = torch.randn(2, 4)
    with torch.no_grad():
        out = net(image, codes)
        again = net(image, codes)
    assert torch.equal(out, again)  # deterministic given (a, z)
    assert (out[0] - out[1]).abs().mean() > 1e-3


def test_code_enters_every_encoder_layer_and_skips_carry_no_code():
    nz, ngf = 5, 4
    net = NoiseUnetGenerator(3, 2, nz=nz, num_downs=5, ngf=ngf, norm_layer=INSTANCE)
    down_convs = [next(m for m in block if isinstance(m, nn.Conv2d)) for block in net.down]
    widths = [ngf * min(2 ** level, 8) for level in range(5)]
    assert [conv.in_channels for conv in down_convs] == [3 + nz] + [w + nz for w in widths[:-1]]
    # Decoder input = decoder state + skip; the skip is the encoder feature without z.
    up_convs = [next(m for m in block.modules() if isinstance(m, nn.ConvTranspose2d)) for block in net.up]
    assert [conv.in_channels for conv in up_convs] == [2 * w for w in widths[:-1]] + [widths[-1]]


def test_every_encoder_layer_receives_the_tiled_code():
    torch.manual_seed(0)
    net = small_generator(32)
    z = torch.randn(2, 4)
    inputs = []
    # clone: the block's LeakyReLU works in place on its (freshly concatenated) input
    hooks = [block.register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone())) for block in net.down]
    net(torch.randn(2, 3, 32, 32), z)
    for hook in hooks:
        hook.remove()
    assert len(inputs) == 5
    for layer_input in inputs:
        code_planes = layer_input[:, -4:]
        assert torch.equal(code_planes, z[:, :, None, None].expand_as(code_planes))


def test_generator_rejects_wrong_size_with_crop_size_hint():
    net = small_generator(32)
    with pytest.raises(ValueError, match="--crop_size"):
        net(torch.randn(1, 3, 48, 48), torch.randn(1, 4))
    with pytest.raises(ValueError, match="--nz"):
        net(torch.randn(1, 3, 32, 32), torch.randn(1, 3))


def test_generator_with_batch_norm_and_dropout_runs():
    net = NoiseUnetGenerator(3, 3, nz=2, num_downs=6, ngf=2, norm_layer=nn.BatchNorm2d, use_dropout=True)
    assert any(isinstance(m, nn.Dropout) for m in net.up.modules())
    assert not any(m.bias is not None for m in net.down[1:].modules() if isinstance(m, nn.Conv2d))
    assert net(torch.randn(2, 3, 64, 64), torch.randn(2, 2)).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("size,num_convs", [(16, 2), (32, 3)])
def test_statistics_network_shapes(size, num_convs):
    net = StatisticsNetwork(3, 8, size)
    convs = [m for m in net.image_convs if isinstance(m, nn.Conv2d)]
    assert len(convs) == num_convs
    assert [c.out_channels for c in convs] == [32 * 2 ** i for i in range(num_convs)]
    assert net(torch.randn(5, 8), torch.randn(5, 3, size, size)).shape == (5,)


def test_statistics_network_follows_tables_3_and_4():
    # Table 3 (256): convs 32..1024; Table 4 (128): 32..512; both end at 4x4 and FC 1024, z: FC 512, FC 1024.
    for size, channels in [(256, [32, 64, 128, 256, 512, 1024]), (128, [32, 64, 128, 256, 512])]:
        net = StatisticsNetwork(3, 8, size)
        assert [c.out_channels for c in net.image_convs if isinstance(c, nn.Conv2d)] == channels
        assert net.image_fc.in_features == channels[-1] * 16 and net.image_fc.out_features == 1024
        assert [m.out_features for m in net.code_mlp if isinstance(m, nn.Linear)] == [512, 1024]


def test_statistics_network_is_not_additively_separable():
    # A critic of the form f(b) + g(z) cannot tell joint from independent pairs; ours mixes z and b.
    torch.manual_seed(0)
    net = StatisticsNetwork(1, 2, 16)
    z = torch.randn(2, 2) * 3
    b = torch.randn(2, 1, 16, 16) * 3
    with torch.no_grad():
        matched = net(z, b).sum()
        crossed = net(z, b.flip(0)).sum()
    assert (matched - crossed).abs() > 1e-6


def test_statistics_network_rejects_wrong_image_size():
    net = StatisticsNetwork(3, 8, 16)
    with pytest.raises(ValueError, match="--crop_size"):
        net(torch.randn(2, 8), torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="--crop_size"):
        StatisticsNetwork(3, 8, 24)


@pytest.mark.parametrize("size", [32, 64])
def test_multiscale_discriminator_shapes(size):
    net = MultiscaleDiscriminator(3, ndf=4, n_layers=2, norm_layer=nn.BatchNorm2d, num_D=2)
    maps = net(torch.randn(2, 3, size, size))
    assert len(maps) == 2
    # n_layers stride-2 convs then two 4x4 stride-1 convs: side/4 - 2, and the coarse scale sees side/2.
    assert maps[0].shape == (2, 1, size // 4 - 2, size // 4 - 2)
    assert maps[1].shape == (2, 1, size // 8 - 2, size // 8 - 2)


def test_multiscale_discriminator_scales_are_independent_and_pooled():
    torch.manual_seed(0)
    net = MultiscaleDiscriminator(3, ndf=4, n_layers=2, norm_layer=nn.BatchNorm2d, num_D=3).eval()
    assert len(net.scales) == 3 and net.scales[0] is not net.scales[1]
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        coarse = net.scales[1](nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)(x))
        assert torch.allclose(net(x)[1], coarse)


def test_multiscale_discriminator_too_small_input():
    net = MultiscaleDiscriminator(3, ndf=4, n_layers=3, num_D=2)
    with pytest.raises(ValueError, match="--crop_size"):
        net(torch.randn(1, 3, 32, 32))

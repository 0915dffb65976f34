"""pix2pix generators and discriminators: shapes, release layouts, size checks, norms and inits."""

import pytest
import torch
from einops import rearrange
from torch import nn

from models.atme.release import release_layouts
from models.networks.discriminators import define_D, patch_output_size
from models.networks.generators import UnetGenerator, UnetSkipConnectionBlock, check_generator_size, define_G
from models.networks.layers import count_parameters, get_norm_layer, init_weights, uses_bias
from util.run.checkpoint import layout_of



@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("netG, sizes", [
    ("unet", ((32, 32), (64, 64))),
    ("unet_128", ((128, 128), (128, 256))),
    ("unet_256", ((256, 256), (512, 256))),
    ("resnet_6blocks", ((32, 32), (48, 40))),
    ("resnet_9blocks", ((32, 32), (64, 64))),
])
def test_generator_output_shape_at_two_sizes(netG, sizes):
    for height, width in sizes:
        # `unet` takes its depth from crop_size; the fixed-depth nets accept any multiple.
        net = define_G(3, 2, ngf=2, netG=netG, norm="instance", crop_size=height if netG == "unet" else 256)
        check_generator_size(net, height, width)
        with torch.no_grad():
            y = net(torch.randn(1, 3, height, width))
        assert y.shape == (1, 2, height, width)
        assert y.abs().max() <= 1.0  # tanh head


def test_unet_depth_follows_crop_size():
    assert define_G(3, 3, 4, "unet", crop_size=32).num_downs == 5
    assert define_G(3, 3, 4, "unet", crop_size=64).num_downs == 6
    for bad in (16, 48, 100):
        with pytest.raises(ValueError, match="--crop_size"):
            define_G(3, 3, 4, "unet", crop_size=bad)


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="unet_256.*resnet_9blocks"):
        define_G(3, 3, 4, "unet_512")
    with pytest.raises(ValueError, match="basic, n_layers, pixel"):
        define_D(6, 4, "multiscale")
    with pytest.raises(ValueError, match="batch, instance, none"):
        get_norm_layer("group")
    with pytest.raises(ValueError, match="orthogonal"):
        init_weights(nn.Conv2d(1, 1, 1), init_type="uniform")


def test_generator_state_dict_keys_follow_pix2pix_release():
    unet = define_G(3, 3, 64, "unet_256", norm="batch")
    keys = unet.state_dict().keys()
    assert {"model.model.0.weight", "model.model.1.model.1.weight", "model.model.1.model.2.running_mean",
            "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.1.weight",
            "model.model.3.weight", "model.model.3.bias"} <= set(keys)
    assert "model.model.0.bias" not in keys  # batch norm: no conv bias
    resnet = define_G(3, 3, 64, "resnet_9blocks", norm="instance")
    keys = resnet.state_dict().keys()
    assert {"model.1.weight", "model.1.bias", "model.10.conv_block.1.weight", "model.10.conv_block.5.weight",
            "model.18.conv_block.5.bias", "model.26.weight"} <= set(keys)
    # Parameter counts of the pix2pix release's printed network summaries.
    assert count_parameters(unet) == 54_413_955
    assert count_parameters(resnet) == 11_378_179


def test_wrong_generator_size_says_what_to_change():
    net = define_G(3, 3, 4, "unet_256")
    with pytest.raises(ValueError, match=r"multiples of 256.*300x300.*--crop_size.*--netG unet"):
        check_generator_size(net, 300, 300)
    with pytest.raises(ValueError, match="multiples of 256"):
        net(torch.randn(1, 3, 128, 128))  # the forward check fires before any conv
    resnet = define_G(3, 3, 4, "resnet_6blocks")
    check_generator_size(resnet, 36, 40)
    with pytest.raises(ValueError, match=r"multiples of 4.*--crop_size"):
        check_generator_size(resnet, 34, 40)
    with pytest.raises(ValueError, match="--input_nc"):
        resnet(torch.randn(1, 1, 32, 32))
    check_generator_size(nn.Identity(), 7, 9)  # nets without a size rule are not judged


def test_size_check_by_netG_name_matches_the_built_nets():
    check_generator_size("unet_256", 512, 256)
    check_generator_size("unet", 64, 64)
    check_generator_size("resnet_9blocks", 36, 36)
    with pytest.raises(ValueError, match=r"--netG unet_128 needs .* multiples of 128.*100x100.*e\.g\. 128"):
        check_generator_size("unet_128", 100, 100)
    with pytest.raises(ValueError, match="power of two"):
        check_generator_size("unet", 96, 96)
    with pytest.raises(ValueError, match="multiples of 4"):
        check_generator_size("resnet_6blocks", 30, 32)
    check_generator_size("atme_unet", 30, 30)  # other families' generators carry their own rules


def test_unet_skip_carries_activated_features_like_the_release():
    block = UnetSkipConnectionBlock(4, 8, innermost=True, norm_layer=get_norm_layer("batch")).eval()
    x = torch.randn(2, 4, 4, 4)
    expected_skip = nn.functional.leaky_relu(x, 0.2)
    with torch.no_grad():
        out = block(x.clone())
    assert out.shape == (2, 8, 4, 4)
    torch.testing.assert_close(out[:, :4], expected_skip)


def test_unet_dropout_only_on_the_deep_blocks_and_training_step_runs():
    net = UnetGenerator(3, 3, num_downs=6, ngf=2, norm_layer=get_norm_layer("batch"), use_dropout=True)
    dropouts = [name for name, m in net.named_modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 1  # num_downs - 5 blocks at ngf*8
    before = net.model.model[0].weight.detach().clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = net(torch.randn(2, 3, 64, 64)).square().mean()
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, net.model.model[0].weight)


@pytest.mark.parametrize("netD, n_layers", [("basic", 3), ("n_layers", 2), ("n_layers", 4), ("pixel", 3)])
def test_discriminator_output_matches_patch_output_size(netD, n_layers):
    net = define_D(6, ndf=4, netD=netD, n_layers_D=n_layers, norm="batch")
    for height, width in ((64, 64), (96, 128)):
        with torch.no_grad():
            out = net(torch.randn(2, 6, height, width))
        assert out.shape == (2, 1) + patch_output_size(netD, n_layers, height, width)


def test_basic_patchgan_map_sizes():
    assert patch_output_size("basic", 99, 256, 256) == (30, 30)  # the 70x70 PatchGAN on 256px
    assert patch_output_size("n_layers", 1, 256, 128) == (126, 62)
    assert patch_output_size("pixel", 3, 17, 23) == (17, 23)


def test_too_small_for_discriminator_names_the_flags():
    with pytest.raises(ValueError, match="--crop_size.*--n_layers_D"):
        patch_output_size("basic", 3, 16, 16)
    with pytest.raises(ValueError, match="--crop_size"):
        define_D(6, 4, "basic")(torch.randn(1, 6, 16, 16))
    with pytest.raises(ValueError, match="unknown discriminator"):
        patch_output_size("multiscale", 3, 64, 64)


def test_discriminator_layout_matches_reference_atme_D():
    reference = release_layouts()["D"]
    net = define_D(6, 64, "basic", norm="instance")
    assert layout_of(net) == reference
    batch_keys = define_D(6, 64, "basic", norm="batch").state_dict().keys()
    assert "model.3.running_var" in batch_keys and "model.2.bias" not in batch_keys


def test_norm_layers():
    batch = get_norm_layer("batch")(8)
    assert batch.affine and batch.track_running_stats
    instance = get_norm_layer("instance")(8)
    assert count_parameters(instance) == 0 and len(list(instance.buffers())) == 0
    x = torch.randn(2, 8, 5, 5)
    assert get_norm_layer("none")(8)(x) is x
    assert uses_bias(get_norm_layer("instance")) and uses_bias(get_norm_layer("none"))
    assert not uses_bias(get_norm_layer("batch"))
    assert not uses_bias(nn.BatchNorm2d) and uses_bias(nn.InstanceNorm2d)


def test_orthogonal_init_gives_orthogonal_flattened_weights():
    conv = nn.Conv2d(8, 16, kernel_size=3)  # 16 rows of 72 values: rows orthonormal up to gain
    gain = 0.5
    init_weights(conv, init_type="orthogonal", init_gain=gain)
    rows = rearrange(conv.weight.detach(), "o i kh kw -> o (i kh kw)")
    torch.testing.assert_close(rows @ rows.T, gain ** 2 * torch.eye(16), atol=1e-5, rtol=0)
    assert torch.count_nonzero(conv.bias) == 0


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_inits_touch_conv_and_batchnorm(init_type):
    net = nn.Sequential(nn.Conv2d(16, 64, 3), nn.BatchNorm2d(64), nn.Linear(64, 32))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(3.0)
    init_weights(net, init_type=init_type, init_gain=0.02)
    assert torch.all(net[0].bias == 0) and torch.all(net[2].bias == 0) and torch.all(net[1].bias == 0)
    assert net[0].weight.std() > 0 and net[2].weight.std() > 0
    # Batch norm scales ~ N(1, 0.02) whatever the conv init.
    assert (net[1].weight - 1).abs().max() < 0.2
    if init_type == "normal":
        assert abs(net[0].weight.std().item() - 0.02) < 0.004
    if init_type == "kaiming":  # fan_in = 16 * 9, std = sqrt(2 / fan_in)
        assert abs(net[0].weight.std().item() - (2 / 144) ** 0.5) < 0.02

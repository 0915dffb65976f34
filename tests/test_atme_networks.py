"""ATME generator, W block and release-checkpoint handling: layouts, shapes, ranges, errors."""
import os

import pytest
import torch

from models.atme.blocks import WBlock
from models.atme.release import convert_release, release_layouts
from util.run.checkpoint import describe_mismatch, layout_mismatch, layout_of
from models.atme.diffusion_unet import DiffusionUNet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_unet(**kwargs):
    config = dict(dim=8, dim_mults=(1, 2), resnet_block_groups=4)
    config.update(kwargs)
    return DiffusionUNet(**config)


@pytest.fixture(scope="module")
def layout():
    return release_layouts()


@pytest.fixture(scope="module")
def default_g():
    torch.manual_seed(0)
    return DiffusionUNet()


def test_default_generator_matches_reference_layout(layout, default_g):
    ours = layout_of(default_g)
    assert len(ours) == 284
    assert list(ours) == list(layout["G"])
    assert not layout_mismatch(layout["G"], default_g.state_dict())


def test_w_block_matches_reference_layout(layout):
    assert layout_of(WBlock()) == layout["W"]


def test_parameter_counts_at_default(default_g):
    g_params = sum(p.numel() for p in default_g.parameters())
    w_params = sum(p.numel() for p in WBlock().parameters())
    # The release's figures (G 35.8 M, W 0.038 M) are given to three digits.
    assert round(g_params / 1e6, 1) == 35.8, g_params
    assert round(w_params / 1e6, 3) == 0.038, w_params


def test_parameter_counts_equal_reference_layout(layout, default_g):
    def count(shapes):
        return sum(torch.Size(s).numel() for s in shapes.values())
    assert sum(p.numel() for p in default_g.parameters()) == count(layout["G"])
    assert sum(p.numel() for p in WBlock().parameters()) == count(layout["W"])


@pytest.mark.parametrize("size", [32, 64, 128])
def test_w_block_follows_requested_size(size):
    w = WBlock()
    out = w(torch.rand(2, 1, 6, 6), (size, size))
    assert out.shape == (2, 1, size, size)
    assert out.abs().max() <= 1


@pytest.mark.parametrize("size", [16, 32])
def test_tiny_generator_forward_shape_and_range(size):
    torch.manual_seed(0)
    g = tiny_unet(out_dim=1)
    out = g(torch.randn(2, 3, size, size), torch.rand(2))
    assert out.shape == (2, 1, size, size)
    assert out.abs().max() <= 1
    assert out.std() > 0  # not a constant output


def test_generator_output_depends_on_time():
    torch.manual_seed(0)
    g = tiny_unet()
    x = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(g(x, torch.tensor([0.0])), g(x, torch.tensor([0.9])))


@pytest.mark.parametrize("flags", [dict(learned_sinusoidal_cond=True), dict(random_fourier_features=True)])
def test_fourier_time_embeddings(flags):
    g = tiny_unet(**flags)
    assert g.state_dict()["time_mlp.0.weights"].shape == (8,)
    assert g(torch.randn(1, 3, 16, 16), torch.rand(1)).shape == (1, 3, 16, 16)
    assert g.time_mlp[0].weights.requires_grad is not flags.get("random_fourier_features", False)


def test_bad_dim_mults_names_entry_and_flags():
    with pytest.raises(ValueError, match=r"--dim_mults entry 1 \(3\).*--dim 12 = 36.*--groups 8"):
        DiffusionUNet(dim=12, init_dim=16, dim_mults=(2, 3), resnet_block_groups=8)


def test_bad_groups_for_dim_names_flags():
    with pytest.raises(ValueError, match=r"entry 0 \(1\).*--dim 12.*--groups 8"):
        DiffusionUNet(dim=12, dim_mults=(1, 2), resnet_block_groups=8)
    with pytest.raises(ValueError, match=r"--init_dim 12"):
        DiffusionUNet(dim=8, init_dim=12, dim_mults=(1, 2), resnet_block_groups=8)


def test_bad_input_size_names_crop_size():
    g = tiny_unet(dim_mults=(1, 1, 2))
    with pytest.raises(ValueError, match="--crop_size"):
        g(torch.randn(1, 3, 18, 18), torch.rand(1))
    assert g(torch.randn(1, 3, 4, 4), torch.rand(1)).shape == (1, 3, 4, 4)  # 2 ** (3 - 1) is the smallest side


def test_layout_mismatch_reports_each_kind():
    state = {"a": torch.zeros(2), "b": torch.zeros(3), "extra": torch.zeros(1)}
    mismatch = layout_mismatch({"a": (2,), "b": (4,), "gone": (1,)}, state)
    assert mismatch.missing == ["gone"] and mismatch.unexpected == ["extra"]
    assert mismatch.misshaped == ["b: checkpoint (3,) vs model (4,)"]
    text = describe_mismatch(layout_mismatch({f"k{i}": (1,) for i in range(15)}, {}))
    assert "k9" in text and "k10" not in text and "5 more" in text


def _save_release(directory, g_state, w_state, w_name="T"):
    os.makedirs(directory, exist_ok=True)
    torch.save(g_state, os.path.join(directory, "latest_net_G.pth"))
    torch.save(w_state, os.path.join(directory, f"latest_net_{w_name}.pth"))


def test_convert_release_renames_t_to_w(tmp_path):
    g, w = tiny_unet(), WBlock()
    expected = {"G": layout_of(g), "W": layout_of(w)}
    _save_release(tmp_path, g.state_dict(), w.state_dict())
    written = convert_release(str(tmp_path), expected=expected)
    loaded = torch.load(written["W"], weights_only=True)
    assert written["W"].endswith("latest_net_W.pth")
    assert all(torch.equal(loaded[k], v) for k, v in w.state_dict().items())
    out = str(tmp_path / "out")
    convert_release(str(tmp_path), out_dir=out, expected=expected)
    with pytest.raises(FileExistsError, match="--force"):
        convert_release(str(tmp_path), out_dir=out, expected=expected)
    assert set(convert_release(str(tmp_path), out_dir=out, expected=expected, force=True)) == {"G", "W"}


def test_convert_release_rejects_foreign_layout(tmp_path):
    g, w = tiny_unet(), WBlock()
    expected = {"G": layout_of(g), "W": layout_of(w)}
    bad = dict(w.state_dict())
    bad.pop("model.6.bias")
    bad["model.1.proj.weight"] = torch.zeros(5, 1, 3, 3)
    bad["something.else"] = torch.zeros(1)
    _save_release(tmp_path, g.state_dict(), bad)
    with pytest.raises(RuntimeError) as err:
        convert_release(str(tmp_path), expected=expected)
    message = str(err.value)
    assert "latest_net_T.pth" in message and "model.6.bias" in message
    assert "something.else" in message and "model.1.proj.weight" in message
    assert not (tmp_path / "latest_net_W.pth").exists()


def test_convert_script_missing_files_errors(tmp_path):
    from scripts.tools import convert_atme_checkpoint as script
    with pytest.raises(FileNotFoundError, match="latest_net_G.pth"):
        script.main(["--run_dir", str(tmp_path)])


def test_convert_release_reports_but_accepts_other_g_configs(tmp_path, caplog):
    g, w = tiny_unet(), WBlock()
    _save_release(tmp_path, g.state_dict(), w.state_dict())
    expected = {"G": layout_of(tiny_unet(dim=16)), "W": layout_of(w)}
    with caplog.at_level("WARNING"):
        written = convert_release(str(tmp_path), expected=expected)
    assert os.path.isfile(written["W"])
    assert "default ATME layout" in caplog.text and "latest_net_G.pth" in caplog.text


def test_blocks_match_the_release_formulas():
    """The fused rewrites (var_mean; q and v scalings moved onto the context) give the release's outputs."""
    from einops import rearrange

    from models.atme.blocks import LayerNorm, LinearAttention, WeightStandardizedConv2d
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)

    conv = WeightStandardizedConv2d(16, 8, 3, padding=1)
    w = conv.weight
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    expected = torch.nn.functional.conv2d(x, (w - mean) / (var + 1e-5).sqrt(), conv.bias, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-5)

    norm = LayerNorm(16)
    norm.g.data.uniform_(0.5, 1.5)
    expected = (x - x.mean(1, keepdim=True)) / (x.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt() * norm.g
    assert torch.allclose(norm(x), expected, atol=1e-5)

    attn = LinearAttention(16, heads=2, dim_head=8)
    q, k, v = (rearrange(t, "b (h c) x y -> b h c (x y)", h=2) for t in attn.to_qkv(x).chunk(3, dim=1))
    q, k, v = q.softmax(dim=-2) * 8 ** -0.5, k.softmax(dim=-1), v / 64
    out = torch.einsum("b h d e, b h d n -> b h e n", torch.einsum("b h d n, b h e n -> b h d e", k, v), q)
    expected = attn.to_out(rearrange(out, "b h c (x y) -> b (h c) x y", x=8, y=8))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def _relative_error(out, ref):
    return ((out.float() - ref).norm() / ref.norm()).item()


def test_bf16_autocast_computes_the_fp32_network():
    """Under bf16 autocast the generator computes its fp32 function, at bf16 tolerance: the weight
    standardisation and the channel LayerNorm take their statistics in float32 with float32's epsilon."""
    from models.atme.blocks import LayerNorm, WeightStandardizedConv2d
    from models.networks.layers import init_weights
    torch.manual_seed(0)
    # The project's default initialisation, normal(0, 0.02): kernel variances of 4e-4, where an epsilon of 1e-3
    # instead of 1e-5 would halve the standardised kernels.
    net = init_weights(DiffusionUNet(dim=16, init_dim=16, dim_mults=(1, 2), resnet_block_groups=4), "normal", 0.02)
    x, t = torch.randn(2, 3, 32, 32), torch.rand(2)
    with torch.no_grad():
        ref = net(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, t)
    assert out.dtype == torch.bfloat16
    assert _relative_error(out, ref) < 0.02  # bf16 keeps 8 significant bits: ~0.4 % per rounding

    conv = init_weights(WeightStandardizedConv2d(16, 8, 3, padding=1), "normal", 0.02)
    norm = LayerNorm(16)
    h = torch.randn(2, 16, 8, 8) * 0.01  # small activations: a variance of 1e-4
    with torch.no_grad():
        ref_conv, ref_norm = conv(h), norm(h)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_conv, out_norm = conv(h.bfloat16()), norm(h.bfloat16())
    assert out_norm.dtype == torch.bfloat16
    assert _relative_error(out_conv, ref_conv) < 0.02
    assert _relative_error(out_norm, ref_norm) < 0.02

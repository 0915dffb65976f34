"""The ATME blocks' hand-written gradients (models/atme/fused.py) against the straightforward compositions of torch
ops that autograd differentiates: per block, and a whole training step (losses, outputs, every gradient), which
also covers the linear attention's products written as batched matrix products."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import stored_train_options
from einops import rearrange
from PIL import Image

from data import create_dataset
from models import create_model
from models.atme import blocks
from models.atme.fused import ChannelLayerNorm, GroupNormSiLU, StandardizedWeight, group_norm_scale_shift_silu

EPS = blocks.STATS_EPS


# ---------------------------------------------------------------- the straightforward implementations
def plain_standardized_weight(weight, eps=EPS):
    w = weight.float()
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = ((w - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
    return ((w - mean) / torch.sqrt(var + eps)).to(weight.dtype)


def plain_channel_layer_norm(x, g, eps=EPS):
    x32 = x.float()
    mean = x32.mean(dim=1, keepdim=True)
    var = x32.var(dim=1, unbiased=False, keepdim=True)
    return ((x32 - mean) / torch.sqrt(var + eps) * g).to(x.dtype)


def plain_block(x, groups, weight, bias, eps, scale_shift=None):
    x = F.group_norm(x, groups, weight, bias, eps)
    if scale_shift is not None:
        scale, shift = scale_shift
        x = x * (scale + 1) + shift
    return F.silu(x)


def plain_forwards():
    """Forward methods of the blocks written with plain torch ops, for monkeypatch.setattr."""
    def conv_forward(self, x):
        return F.conv2d(x, plain_standardized_weight(self.weight), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def norm_forward(self, x):
        return plain_channel_layer_norm(x, self.g)

    def block_forward(self, x, scale_shift=None):
        return plain_block(self.proj(x), self.norm.num_groups, self.norm.weight, self.norm.bias, self.norm.eps,
                           scale_shift)
    def linear_attention_forward(self, x):
        qkv = self.to_qkv(x).chunk(3, dim=1)
        q, k, v = (rearrange(t, "b (h c) x y -> b h c (x y)", h=self.heads) for t in qkv)
        q, k = q.softmax(dim=-2) * self.scale, k.softmax(dim=-1)
        v = v / (x.shape[-2] * x.shape[-1])
        out = torch.einsum("b h d e, b h d n -> b h e n", torch.einsum("b h d n, b h e n -> b h d e", k, v), q)
        return self.to_out(rearrange(out, "b h c (x y) -> b (h c) x y", x=x.shape[-2], y=x.shape[-1]))
    return {blocks.WeightStandardizedConv2d: conv_forward, blocks.LayerNorm: norm_forward, blocks.Block: block_forward,
            blocks.LinearAttention: linear_attention_forward,
            # the release's two modules one after the other: rearrange (or upsample), then the convolution
            blocks.Downsample: torch.nn.Sequential.forward, blocks.Upsample: torch.nn.Sequential.forward}


def relative_error(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------- per block
def test_standardized_weight_matches_autograd_and_gradcheck():
    torch.manual_seed(0)
    w = (torch.randn(8, 4, 3, 3, dtype=torch.float64) * 0.02).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: StandardizedWeight.apply(t, EPS), (w,))
    w32 = w.detach().float().requires_grad_()
    grad = torch.randn(8, 4, 3, 3)
    ours, = torch.autograd.grad(StandardizedWeight.apply(w32, EPS), w32, grad)
    plain, = torch.autograd.grad(plain_standardized_weight(w32), w32, grad)
    assert relative_error(ours, plain) < 1e-5


def test_channel_layer_norm_matches_autograd_and_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    g = (torch.rand(1, 6, 1, 1, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ChannelLayerNorm.apply(a, b, EPS), (x, g))
    x32, g32 = x.detach().float().requires_grad_(), g.detach().float().requires_grad_()
    grad = torch.randn(2, 6, 5, 4)
    ours = torch.autograd.grad(ChannelLayerNorm.apply(x32, g32, EPS), (x32, g32), grad)
    plain = torch.autograd.grad(plain_channel_layer_norm(x32, g32), (x32, g32), grad)
    for a, b in zip(ours, plain):
        assert relative_error(a, b) < 1e-5


@pytest.mark.parametrize("with_time", [True, False])
def test_group_norm_scale_shift_silu_matches_the_three_steps(with_time):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    weight, bias = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
    emb = torch.randn(2, 16, 1, 1, requires_grad=True)
    scale_shift = emb.chunk(2, dim=1) if with_time else None
    inputs = (x, weight, bias, emb) if with_time else (x, weight, bias)
    grad = torch.randn(2, 8, 6, 6)
    ours = group_norm_scale_shift_silu(x, 4, weight, bias, 1e-5, scale_shift)
    plain = plain_block(x, 4, weight, bias, 1e-5, scale_shift)
    assert relative_error(ours, plain) < 1e-6
    for a, b in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(plain, inputs, grad)):
        assert relative_error(a, b) < 1e-5


@pytest.mark.parametrize("gain_batch", [2, 1])
def test_group_norm_silu_gradcheck(gain_batch):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    gain = torch.randn(gain_batch, 8, 1, 1, dtype=torch.float64, requires_grad=True)
    offset = torch.randn(gain_batch, 8, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: GroupNormSiLU.apply(a, b, c, 4, 1e-5), (x, gain, offset))


@pytest.mark.parametrize("cls, shape", [(blocks.Upsample, (2, 6, 5, 7)), (blocks.Downsample, (2, 6, 6, 8))])
def test_resampling_convolutions_compute_the_release_modules(cls, shape):
    """Upsample's low-resolution 2x2 phase convolution and Downsample's stride-2 convolution against the
    release's nearest-upsample-then-3x3 and space-to-depth-then-1x1, in float64 (equal to rounding) and float32."""
    torch.manual_seed(0)
    module = cls(6, 4).double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    ours, plain = module(x), torch.nn.Sequential.forward(module, x)
    assert ours.shape == plain.shape
    assert relative_error(ours, plain) < 1e-13
    assert torch.autograd.gradcheck(module, (x,))
    module32, x32 = module.float(), x.detach().float().requires_grad_()
    grad = torch.randn(plain.shape)
    params = list(module32.parameters())
    got = torch.autograd.grad(module32(x32), [x32, *params], grad)
    want = torch.autograd.grad(torch.nn.Sequential.forward(module32, x32), [x32, *params], grad)
    for a, b in zip(got, want):
        assert relative_error(a, b) < 1e-5


def test_channels_last_layer_norm_is_the_channel_layer_norm():
    """A channels-last input takes torch's LayerNorm over the innermost dimension: the same function and
    gradients as the channel LayerNorm (float64), and within bf16 rounding of it for a bf16 input."""
    torch.manual_seed(0)
    norm = blocks.LayerNorm(6).double()
    norm.g.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = norm(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    mean, var = x.mean(dim=1, keepdim=True), x.var(dim=1, unbiased=False, keepdim=True)
    assert relative_error(out, (x - mean) / torch.sqrt(var + EPS) * norm.g) < 1e-13
    assert torch.autograd.gradcheck(lambda a, g: blocks.LayerNorm.forward(type("N", (), {"g": g})(), a),
                                    (x, norm.g.detach().clone().requires_grad_()))
    x16 = x.detach().bfloat16().contiguous(memory_format=torch.channels_last)
    out16 = norm.float()(x16)
    assert out16.dtype == torch.bfloat16
    assert relative_error(out16, plain_channel_layer_norm(x16.float(), norm.g)) < 0.01


def test_channels_last_linear_attention_computes_the_heads_attention():
    """The channels-last path (all channels' context masked to the heads' blocks) against the release's formula,
    in float64; and the forward takes it for a channels-last input."""
    torch.manual_seed(0)
    attn = blocks.LinearAttention(8, heads=2, dim_head=4).double()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    plain = plain_forwards()[blocks.LinearAttention](attn, x)
    inner = attn.attend_channels_last(x)
    assert inner.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(attn.to_out(inner), plain) < 1e-13
    assert torch.autograd.gradcheck(lambda t: attn.to_out(attn.attend_channels_last(t)), (x,))
    taken = []
    original = attn.attend_channels_last
    attn.attend_channels_last = lambda t: taken.append(t) or original(t)
    attn(x)
    attn(x.detach().contiguous())
    assert len(taken) == 1


# ---------------------------------------------------------------- a whole training step
@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    os.makedirs(root / "train")
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, size=(32, 64, 3), dtype=np.uint8)).save(root / "train" / f"{i}.png")
    return str(root)


def step_outputs_and_gradients(dataroot, checkpoints, extra=()):
    """One ATME training step's losses, outputs and every gradient of D (its step) and of G and W (theirs),
    from the same seed; no optimiser step, so both steps see the same weights."""
    opt = stored_train_options(["--model", "atme", "--dataroot", dataroot, "--checkpoints_dir", str(checkpoints),
                                "--name", "run", "--dim", "16", "--init_dim", "16", "--dim_mults", "1,2",
                                "--groups", "4", "--ndf", "8", "--batch_size", "2", "--load_size", "32",
                                "--crop_size", "32", "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1",
                                "--display_id", "0", "--no_html", "--no_flip", *extra])
    dataset = create_dataset(opt)
    opt.dataset_size = len(dataset)
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup(opt)
    model.attach_run_state(opt)
    model.set_input(torch.utils.data.default_collate([dataset[i] for i in range(2)]))
    model.forward()
    out = {"W": model.W.detach(), "fake_B": model.fake_B.detach()}
    model.backward_D().backward()
    out.update({f"D.{n}": p.grad.clone() for n, p in model.netD.named_parameters()})
    model.set_requires_grad(model.netD, False)
    out["loss_D"], out["loss_G"] = model.loss_D.detach(), model.backward_G().detach()
    model.loss_G.backward()
    for name in ("G", "W"):
        out.update({f"{name}.{n}": p.grad.clone() for n, p in getattr(model, "net" + name).named_parameters()})
    return out


@pytest.mark.parametrize("layout", [[], ["--channels_last"]], ids=["channels_first", "channels_last"])
def test_training_step_equals_the_straightforward_implementation(dataroot, tmp_path, monkeypatch, layout):
    ours = step_outputs_and_gradients(dataroot, tmp_path / "fused", layout)
    for cls, forward in plain_forwards().items():
        monkeypatch.setattr(cls, "forward", forward)
    plain = step_outputs_and_gradients(dataroot, tmp_path / "plain")
    assert ours.keys() == plain.keys()
    assert any(k.startswith("G.") and "norm.g" in k for k in ours)  # the channel LayerNorm gains are compared
    # A gradient that is zero in exact arithmetic (a conv bias before an instance norm) is rounding noise on both
    # sides: each tensor's error is taken relative to its norm, but at least 1e-2 of its network's largest.
    largest = {}
    for k, v in plain.items():
        net = k.split(".")[0]
        largest[net] = max(largest.get(net, 0.0), v.double().norm().item())
    errors = {k: (ours[k].double() - plain[k].double()).norm().item()
              / max(plain[k].double().norm().item(), 1e-2 * largest[k.split(".")[0]]) for k in ours}
    worst = max(errors, key=errors.get)
    # float32 rounding through a dozen layers: about 1e-6 relative; a wrong gradient term is of order one.
    assert errors[worst] < 1e-4, f"{worst}: relative error {errors[worst]:.2e}"

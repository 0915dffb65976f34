"""Fast paths (--amp bf16, --channels_last, both) train a step with finite losses, and the gradients of G and D
close to fp32's from the same seed."""
import math

import pytest
import torch

from models import create_model
from options.train_options import TrainOptions

SIZE, BATCH = 32, 2
COMMON = ["--name", "run", "--load_size", str(SIZE), "--crop_size", str(SIZE), "--batch_size", str(BATCH),
          "--seed", "0", "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--num_threads", "0"]
MODELS = {
    "pix2pix": ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance",
                "--no_dropout"],
    "atme": ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8"],
}
FAST = {"bf16": ["--amp", "bf16"], "channels_last": ["--channels_last"],
        "bf16+channels_last": ["--amp", "bf16", "--channels_last"]}


def one_step(model_name, flags, tmp_path):
    """Build a model from seed 0, train one step on a fixed batch; return (fake_B, losses, gradients, model), with
    the gradients each optimiser stepped on ({"D.<param>" or "G.<param>": fp32 tensor})."""
    args = ["--dataroot", str(tmp_path), "--checkpoints_dir", str(tmp_path / "ck"), *COMMON, *MODELS[model_name],
            *flags]
    opt = TrainOptions().parse(args)
    opt.dataset_size = BATCH
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup(opt)
    model.attach_run_state(opt)
    generator = torch.Generator().manual_seed(1)
    batch = {"A": torch.rand(BATCH, 3, SIZE, SIZE, generator=generator) * 2 - 1,
             "B": torch.rand(BATCH, 3, SIZE, SIZE, generator=generator) * 2 - 1,
             "A_paths": ["a.png", "b.png"], "B_paths": ["a.png", "b.png"], "index": torch.arange(BATCH)}
    if model_name == "atme":
        batch["disc_prev"] = model.disc_pool.read(range(BATCH))
    gradients, step = {}, model.step

    def record_then_step(optimizer):  # the step zeroes the gradients: keep them first
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for net in ("D", "G"):
            for name, param in getattr(model, f"net{net}").named_parameters():
                if id(param) in stepped and param.grad is not None:
                    gradients[f"{net}.{name}"] = param.grad.detach().float().contiguous().clone()
        step(optimizer)

    model.step = record_then_step
    model.set_input(batch)
    model.optimize_parameters()
    return model.fake_B.detach().float().contiguous(), model.get_current_losses(), gradients, model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return {name: one_step(name, [], tmp_path_factory.mktemp(f"fp32_{name}")) for name in MODELS}


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("fast", sorted(FAST))
def test_fast_path_step_is_close_to_fp32(model_name, fast, reference, tmp_path):
    fake, losses, gradients, model = one_step(model_name, FAST[fast], tmp_path)
    ref_fake, ref_losses, ref_gradients, _ = reference[model_name]
    assert "bf16" not in fast or model.amp_dtype is torch.bfloat16
    if "channels_last" in fast:
        weight = next(p for p in model.netG.parameters() if p.dim() == 4)
        assert weight.is_contiguous(memory_format=torch.channels_last)
        assert model.real_A.is_contiguous(memory_format=torch.channels_last)
    assert all(math.isfinite(v) for v in losses.values()), losses
    bf16 = "bf16" in fast
    # bf16 keeps 8 bits of mantissa: about 1e-2 relative; channels_last alone only reorders sums.
    out_tol, loss_rtol = (0.1, 0.05) if bf16 else (1e-4, 1e-4)
    assert (fake - ref_fake).abs().max().item() < out_tol
    for name, value in ref_losses.items():
        assert losses[name] == pytest.approx(value, rel=loss_rtol, abs=loss_rtol), name
    # The gradients each optimiser stepped on: the same tensors, close to fp32's as a whole (a tensor whose true
    # gradient is about zero, a bias before a norm, has a relative error of order one in any precision). Adam moves
    # each weight by about lr whatever the gradient's scale, so the weights after the step would not tell.
    assert sorted(gradients) == sorted(ref_gradients) and any(k.startswith("G.") for k in gradients)
    grad_rtol = 0.3 if bf16 else 1e-4  # bf16 measured 0.05-0.15 here; a gradient off by 2x is 1.0 off
    for net in ("D", "G"):
        keys = [k for k in ref_gradients if k.startswith(net + ".")]
        difference = torch.cat([(gradients[k] - ref_gradients[k]).flatten() for k in keys]).norm()
        error = float(difference / torch.cat([ref_gradients[k].flatten() for k in keys]).norm())
        worst = max(keys, key=lambda k: (gradients[k] - ref_gradients[k]).norm())
        assert error < grad_rtol, f"|grad - fp32 grad| / |fp32 grad| of {net} = {error:.2e} (most in {worst})"

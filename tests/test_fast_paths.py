"""Fast paths (--amp bf16, --channels_last, both) train a step with finite losses, close to fp32 from the same seed."""
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
    """Build a model from seed 0, train one step on a fixed batch; return (fake_B, losses, G's state)."""
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
    model.set_input(batch)
    model.optimize_parameters()
    state = {k: v.detach().float().clone() for k, v in model.netG.state_dict().items()}
    return model.fake_B.detach().float().contiguous(), model.get_current_losses(), state, model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return {name: one_step(name, [], tmp_path_factory.mktemp(f"fp32_{name}")) for name in MODELS}


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("fast", sorted(FAST))
def test_fast_path_step_is_close_to_fp32(model_name, fast, reference, tmp_path):
    fake, losses, state, model = one_step(model_name, FAST[fast], tmp_path)
    ref_fake, ref_losses, ref_state, _ = reference[model_name]
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
    # One Adam step moves each weight by at most about lr, whatever the precision; the weights stay close.
    lr = model.opt.lr
    for key, value in ref_state.items():
        assert (state[key] - value).abs().max().item() <= 2.5 * lr + (1e-6 if not bf16 else 1e-3), key

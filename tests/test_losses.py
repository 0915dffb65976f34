"""GANLoss, the WGAN-GP gradient penalty and the generated-image pool, on inputs with known answers."""
import math
import random

import pytest
import torch
from torch import nn

from models.networks.losses import GANLoss, gradient_penalty
from models.image_pool import ImagePool


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)


def test_vanilla_on_zero_logits_is_log_two():
    loss = GANLoss("vanilla")
    zeros = torch.zeros(2, 1, 30, 30)
    torch.testing.assert_close(loss(zeros, True), torch.tensor(math.log(2.0)))
    torch.testing.assert_close(loss(zeros, False), torch.tensor(math.log(2.0)))
    # Confident logits: log(1 + e^-3) when right, log(1 + e^3) when wrong.
    threes = torch.full((1, 1, 4, 4), 3.0)
    torch.testing.assert_close(loss(threes, True), torch.tensor(math.log1p(math.exp(-3.0))))
    torch.testing.assert_close(loss(threes, False), torch.tensor(math.log1p(math.exp(3.0))))


def test_lsgan_known_values_and_custom_labels():
    loss = GANLoss("lsgan")
    prediction = torch.tensor([0.0, 2.0, 0.5, 1.0])
    torch.testing.assert_close(loss(prediction, True), torch.tensor((1 + 1 + 0.25 + 0) / 4))
    torch.testing.assert_close(loss(prediction, False), torch.tensor((0 + 4 + 0.25 + 1) / 4))
    smoothed = GANLoss("lsgan", target_real_label=0.9, target_fake_label=0.1)
    torch.testing.assert_close(smoothed(torch.full((3,), 0.9), True), torch.tensor(0.0))
    torch.testing.assert_close(smoothed(torch.full((3,), 0.9), False), torch.tensor(0.64))


def test_wgangp_is_the_signed_mean():
    loss = GANLoss("wgangp")
    prediction = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    torch.testing.assert_close(loss(prediction, True), torch.tensor(-3.0))
    torch.testing.assert_close(loss(prediction, False), torch.tensor(3.0))


@pytest.mark.parametrize("gan_mode", ["vanilla", "lsgan", "wgangp"])
def test_list_of_predictions_averages_the_scales(gan_mode):
    loss = GANLoss(gan_mode)
    scales = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 3, 3)]
    expected = (loss(scales[0], False) + loss(scales[1], False)) / 2
    torch.testing.assert_close(loss(scales, False), expected)
    torch.testing.assert_close(loss(tuple(scales), False), expected)


def test_loss_is_float32_for_low_precision_logits_and_has_gradients():
    logits = torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    value = GANLoss("vanilla")(logits, True)
    assert value.dtype == torch.float32
    value.backward()
    # d/dz softplus(-z) at 0 is -1/2, averaged over 16 entries.
    torch.testing.assert_close(logits.grad.float(), torch.full((1, 1, 4, 4), -0.5 / 16))


def test_bad_gan_arguments_raise():
    with pytest.raises(ValueError, match="--gan_mode.*vanilla, lsgan, wgangp"):
        GANLoss("hinge")
    with pytest.raises(TypeError, match="bool"):
        GANLoss("lsgan")(torch.zeros(2), torch.tensor(True))
    with pytest.raises(TypeError, match="list"):
        GANLoss("lsgan")([], True)


def _linear_critic(features, norm):
    """D(x) = <w, flatten(x)> with ||w|| = norm: its input gradient is w everywhere."""
    linear = nn.Linear(features, 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(1, features))
        linear.weight.mul_(norm / linear.weight.norm())
    return nn.Sequential(nn.Flatten(), linear)


@pytest.mark.parametrize("kind", ["mixed", "real", "fake"])
def test_gradient_penalty_of_a_linear_critic(kind):
    real, fake = torch.randn(4, 2, 4, 4), torch.randn(4, 2, 4, 4)
    unit = _linear_critic(32, 1.0)
    penalty, gradients = gradient_penalty(unit, real, fake, kind=kind)
    assert gradients.shape == (4, 32)
    assert penalty.item() < 1e-8
    double = _linear_critic(32, 2.0)
    penalty, _ = gradient_penalty(double, real, fake, kind=kind, lambda_gp=10.0)
    torch.testing.assert_close(penalty, torch.tensor(10.0))  # 10 * (2 - 1)^2


def test_gradient_penalty_mixes_each_sample_and_trains_only_D():
    # D(x) = 0.5 ||x||^2 has gradient x; with fake = 0 the point is alpha * real per sample.
    scale = nn.Parameter(torch.tensor(0.5))

    class Quadratic(nn.Module):
        def forward(self, x):
            return scale * x.square().sum(dim=(1, 2, 3))

    real = torch.randn(6, 1, 3, 3)
    fake = torch.zeros(6, 1, 3, 3, requires_grad=True)
    penalty, gradients = gradient_penalty(Quadratic(), real, fake, kind="mixed", constant=0.0, lambda_gp=1.0)
    ratios = gradients / real.flatten(1)
    alphas = ratios[:, 0]
    torch.testing.assert_close(ratios, alphas[:, None].expand_as(ratios))  # one alpha per sample
    assert torch.all((alphas >= 0) & (alphas <= 1)) and alphas.std() > 0
    torch.testing.assert_close(penalty, (alphas * real.flatten(1).norm(dim=1)).square().mean())
    penalty.backward()
    assert scale.grad is not None and scale.grad.abs() > 0  # the graph was kept for D's update
    assert fake.grad is None  # the generator side is detached


def test_gradient_penalty_off_and_bad_kind():
    real = torch.randn(2, 3, 4, 4)
    penalty, gradients = gradient_penalty(_linear_critic(48, 3.0), real, real, lambda_gp=0.0)
    assert gradients is None and penalty.item() == 0.0
    with pytest.raises(ValueError, match="mixed"):
        gradient_penalty(_linear_critic(48, 1.0), real, real, kind="interpolated")
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(_linear_critic(48, 1.0), real, real[:1])


def test_image_pool_size_zero_is_identity():
    images = torch.randn(3, 3, 8, 8)
    assert ImagePool(0).query(images) is images
    with pytest.raises(ValueError, match="--pool_size"):
        ImagePool(-1)


def test_image_pool_returns_only_images_it_has_seen():
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    torch.testing.assert_close(pool.query(first), first)  # filling: returned as given
    assert len(pool) == 4
    seen = list(first)
    swapped = 0
    for step in range(1, 20):
        batch = (4 * step + torch.arange(2.0)).view(2, 1, 1, 1).expand(2, 1, 2, 2).clone().requires_grad_(True)
        seen += list(batch.detach())
        out = pool.query(batch)
        assert out.shape == batch.shape and not out.requires_grad
        for returned, given in zip(out, batch.detach()):
            assert any(torch.equal(returned, image) for image in seen)
            swapped += not torch.equal(returned, given)
    assert len(pool) == 4
    assert 0 < swapped < 38  # about half of the 38 images come from the history


def test_image_pool_is_reproducible_with_python_random():
    batches = [torch.randn(2, 3, 4, 4) for _ in range(10)]

    def run(seed):
        random.seed(seed)
        pool = ImagePool(3)
        return torch.cat([pool.query(b) for b in batches])

    torch.testing.assert_close(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    own = [ImagePool(3, rng=random.Random(5)) for _ in range(2)]
    torch.testing.assert_close(torch.cat([own[0].query(b) for b in batches]),
                               torch.cat([own[1].query(b) for b in batches]))

"""MI estimators: exact values on constant scores, pair construction, and a toy where they must tell
strongly dependent variables from independent ones."""
import math

import pytest
import torch
from torch import nn

from models.segan.mi_estimators import dv_mi, jsd_mi, make_pairs, mi_estimate
from models.segan.networks import StatisticsNetwork


def test_jsd_known_values():
    zeros = torch.zeros(4)
    assert jsd_mi(zeros, zeros).item() == pytest.approx(-2 * math.log(2))
    # Perfect separation approaches the upper bound 0.
    assert jsd_mi(torch.full((3,), 30.0), torch.full((5,), -30.0)).item() == pytest.approx(0.0, abs=1e-9)
    # T = 1 on positives, T = 0 on negatives: -softplus(-1) - log 2.
    expected = -math.log1p(math.exp(-1.0)) - math.log(2)
    assert jsd_mi(torch.ones(2), torch.zeros(6)).item() == pytest.approx(expected, rel=1e-6)


def test_dv_known_values_and_stability():
    assert dv_mi(torch.full((4,), 2.5), torch.full((8,), 2.5)).item() == pytest.approx(0.0, abs=1e-6)
    # E_J[T] = 1; log E_M[e^T] = log((e^0 + e^log3) / 2) = log 2.
    value = dv_mi(torch.ones(2), torch.tensor([0.0, math.log(3.0)]))
    assert value.item() == pytest.approx(1 - math.log(2), rel=1e-6)
    huge = dv_mi(torch.full((2,), 1000.0), torch.full((4,), 1000.0))
    assert torch.isfinite(huge) and huge.item() == pytest.approx(0.0, abs=1e-3)


def test_make_pairs_fresh_negatives():
    z, images = torch.randn(3, 4), torch.randn(3, 2, 8, 8)
    gen = torch.Generator().manual_seed(1)
    pairs = make_pairs(z, images, n_neg=2, generator=gen)
    assert torch.equal(pairs.z_joint, z) and torch.equal(pairs.b_joint, images)
    assert pairs.z_marginal.shape == (6, 4) and pairs.b_marginal.shape == (6, 2, 8, 8)
    assert torch.equal(pairs.b_marginal[:3], images) and torch.equal(pairs.b_marginal[3:], images)
    assert not any(torch.equal(row, code) for row in pairs.z_marginal for code in z)
    again = make_pairs(z, images, n_neg=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(pairs.z_marginal, again.z_marginal)


def test_make_pairs_takes_fresh_codes_drawn_by_the_caller():
    z, images, drawn = torch.randn(3, 4), torch.randn(3, 2, 8, 8), torch.randn(6, 4)
    pairs = make_pairs(z, images, n_neg=2, fresh_codes=drawn)
    assert torch.equal(pairs.z_marginal, drawn) and torch.equal(pairs.b_marginal[3:], images)
    with pytest.raises(ValueError, match="fresh_codes"):
        make_pairs(z, images, n_neg=2, fresh_codes=drawn[:3])


def test_make_pairs_shuffle_is_a_derangement():
    z, images = torch.arange(10.0).reshape(5, 2), torch.randn(5, 3)
    for seed in range(5):
        pairs = make_pairs(z, images, n_neg=3, generator=torch.Generator().manual_seed(seed), negatives="shuffle")
        for chunk in pairs.z_marginal.split(5):
            assert not (chunk == z).all(dim=1).any()  # no image keeps its own code
            assert sorted(chunk[:, 0].tolist()) == z[:, 0].tolist()  # the same codes, permuted
    with pytest.raises(ValueError, match="2 codes"):
        make_pairs(z[:1], images[:1], negatives="shuffle")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="--mi_estimator"):
        mi_estimate(lambda z, b: z.sum(1), torch.randn(2, 2), torch.randn(2, 2), estimator="nce")
    with pytest.raises(ValueError, match="--n_neg"):
        make_pairs(torch.randn(2, 2), torch.randn(2, 2), n_neg=0)
    with pytest.raises(ValueError, match="same B"):
        make_pairs(torch.randn(2, 2), torch.randn(3, 2))




class VectorCritic(nn.Module):
    """T(z, b) as a small MLP on the concatenated vectors."""

    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, 64), nn.ELU(), nn.Linear(64, 64), nn.ELU(), nn.Linear(64, 1))

    def forward(self, z, b):
        return self.net(torch.cat([z, b], dim=1)).squeeze(1)


def train_critic(critic, sample, estimator, *, steps, batch=128, n_neg=1, lr=1e-3):
    """Maximise the estimate on samples from `sample(batch)`; return a held-out estimate."""
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr)
    for _ in range(steps):
        z, b = sample(batch)
        loss = -mi_estimate(critic, z, b, estimator=estimator, n_neg=n_neg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        z, b = sample(1024)
        return mi_estimate(critic, z, b, estimator=estimator, n_neg=n_neg).item()


def dependent_vectors(batch):
    z = torch.randn(batch, 2)
    return z, z + 0.1 * torch.randn(batch, 2)  # true MI = log(101) ~ 4.6 nats


def independent_vectors(batch):
    return torch.randn(batch, 2), torch.randn(batch, 2)


@pytest.mark.slow  # trains two critics for 300 steps each
@pytest.mark.parametrize("estimator,margin", [("jsd", 0.8), ("dv", 2.0)])
def test_estimator_separates_dependent_from_independent(estimator, margin, one_thread):
    torch.manual_seed(0)
    dependent = train_critic(VectorCritic(2), dependent_vectors, estimator, steps=300)
    torch.manual_seed(0)
    independent = train_critic(VectorCritic(2), independent_vectors, estimator, steps=300)
    assert dependent > independent + margin, (dependent, independent)
    if estimator == "jsd":
        assert independent == pytest.approx(-2 * math.log(2), abs=0.1)  # T learns nothing from independent pairs
    else:
        assert abs(independent) < 0.3 and dependent < math.log(101) + 0.5  # DV is a lower bound


@pytest.mark.slow  # trains two statistics networks for 60 steps each
def test_statistics_network_learns_image_code_dependence(one_thread):
    # Images whose two channels are constant planes tanh(z): the critic must find the code in the image.
    def images_from_codes(batch):
        z = torch.randn(batch, 2)
        planes = torch.tanh(z)[:, :, None, None].expand(-1, -1, 16, 16)
        return z, planes + 0.05 * torch.randn(batch, 2, 16, 16)

    def unrelated_images(batch):
        return torch.randn(batch, 2), images_from_codes(batch)[1]

    torch.manual_seed(0)
    dependent = train_critic(StatisticsNetwork(2, 2, 16), images_from_codes, "jsd", steps=60, batch=64, lr=2e-4)
    torch.manual_seed(0)
    independent = train_critic(StatisticsNetwork(2, 2, 16), unrelated_images, "jsd", steps=60, batch=64, lr=2e-4)
    assert dependent > independent + 0.5, (dependent, independent)


def test_gradient_reaches_the_images():
    # G maximises the estimate too (Eq. 6): the estimate must be differentiable in the generated images.
    critic = StatisticsNetwork(1, 3, 8)
    images = torch.randn(4, 1, 8, 8, requires_grad=True)
    mi_estimate(critic, torch.randn(4, 3), images, n_neg=2).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0

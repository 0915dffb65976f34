"""The models' Adam: the fused kernel on the CPU (one pass over the parameters instead of the foreach
kernel's op-by-op loop), and it computes Adam: several steps of a small network equal the reference
single-tensor implementation's to float32 rounding."""
import types

import torch

from models.base_model import BaseModel


def make_adam(params, device="cpu"):
    owner = types.SimpleNamespace(opt=types.SimpleNamespace(lr=2e-3, beta1=0.5), device=torch.device(device))
    return BaseModel.make_adam(owner, params)


def train(optimizer_for, steps=5):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 1, 3))
    optimizer = optimizer_for(net.parameters())
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 3, 12, 12, generator=generator)
        loss = net(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer, [p.detach().clone() for p in net.parameters()]


def test_the_cpu_gets_the_fused_adam():
    optimizer = make_adam([torch.nn.Parameter(torch.zeros(3))])
    assert optimizer.defaults["fused"] is True
    assert optimizer.defaults["betas"] == (0.5, 0.999) and optimizer.defaults["lr"] == 2e-3


def test_fused_adam_steps_equal_the_reference_adam():
    fused, trained = train(make_adam)
    _, reference = train(lambda p: torch.optim.Adam(p, lr=2e-3, betas=(0.5, 0.999), foreach=False, fused=False))
    _, untrained = train(lambda p: torch.optim.SGD(p, lr=0.0))
    moved = max((a - b).abs().max().item() for a, b in zip(reference, untrained))
    assert moved > 1e-3  # the steps did move the weights
    for got, want in zip(trained, reference):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

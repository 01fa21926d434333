"""The ERMoE ViT leaves the predict-the-mean plateau on a local, size-coded signal (the demo's failure mode).

A dark sphere (a "ventricle") in a bright noisy ellipsoid grows with the target; nothing else carries the target.
A few hundred AdamW steps of the tiny ERMoE ViT with the grid read-out must beat always predicting the mean clearly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from brainage.model import BrainAgeViT, MoEConfig, orthonormalize_

pytestmark = pytest.mark.slow  # trains a ViT

SIZE = 16


def volumes(target: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(b,) targets in [-1, 1] -> (b, 1, 16, 16, 16) volumes whose off-centre dark sphere has radius 2 + target."""
    axis = torch.arange(SIZE, dtype=torch.float32)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")  # (16, 16, 16) each
    head = ((x - 7.5) / 7) ** 2 + ((y - 7.5) / 7) ** 2 + ((z - 7.5) / 6) ** 2 < 1  # (16, 16, 16)
    dist = ((x - 5.0) ** 2 + (y - 9.0) ** 2 + (z - 7.0) ** 2).sqrt()  # (16, 16, 16) from the sphere centre
    radius = (2.0 + target).view(-1, 1, 1, 1)  # (b, 1, 1, 1)
    sphere = torch.sigmoid((radius - dist) * 3)  # (b, 16, 16, 16) soft-edged
    noise = 0.3 * torch.randn((len(target), SIZE, SIZE, SIZE), generator=generator)
    return (head * (1.0 - 1.5 * sphere + noise)).unsqueeze(1)  # (b, 1, 16, 16, 16)


def test_ermoe_vit_learns_a_local_size_signal() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    train_y = torch.rand(256, generator=gen) * 2 - 1  # (256,)
    test_y = torch.rand(128, generator=gen) * 2 - 1  # (128,)
    train_x, test_x = volumes(train_y, gen), volumes(test_y, gen)
    net = BrainAgeViT(img_size=(SIZE,) * 3, patch_size=4, embed_dim=48, depth=2, num_heads=4, pool="grid",
                      moe=MoEConfig(router="eigen", num_experts=4, top_k=2))
    steps = 240
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    for step in range(steps):
        batch = torch.randint(0, len(train_y), (16,), generator=gen)  # (16,)
        loss = F.l1_loss(net(train_x[batch]).pred, train_y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        orthonormalize_(net)
    with torch.no_grad():
        mae = float((net.eval()(test_x).pred - test_y).abs().mean())
    baseline = float((test_y - train_y.mean()).abs().mean())
    assert mae < 0.4 * baseline, f"MAE {mae:.3f} vs predict-the-mean {baseline:.3f}"

"""Learned routers for the MoE baselines: a softmax top-k gate (Switch / Mixtral) and the EMoE energy router.

- Softmax router: a bias-free linear gate ``x -> logits (e)`` (Switch Transformer, Fedus et al. 2022; Mixtral).
- EMoE router (Cheng et al., arXiv 2601.12137, public code Belis0811/EMoE, re-implemented from its description): a
  single shared orthonormal basis ``Q`` (d x r) and spectrum ``gamma = exp(log_lambda)``; token energy
  ``z = Q^T x``, ``en = z^2 / sum(z^2)``; expert logits ``sum_r en_r * gamma_r * softmax_e(masks)[e, r] + bias_e``.
  Our choices: ``Q`` is kept orthonormal by the same QR retraction after each optimizer step as the ERMoE bases
  (the public code re-orthonormalises inside every training forward and adds ``||Q^T Q - I||^2``; with the retraction
  that penalty is ~0, so it is dropped); the second basis ``P`` of the public code is not used by its router and is
  omitted.

Both return float32 logits (float64 for float64 inputs) computed with autocast disabled.
Letters: t tokens, e experts, d width, r rank.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from brainage.model.dispatch import router_dtype
from brainage.model.moe_experts import qr_retract_, random_orthonormal

__all__ = ["SoftmaxRouter", "EMoERouter"]


class SoftmaxRouter(nn.Module):
    """Linear gating ``logits = x W_g^T`` in float32."""

    decayed_parameters = ("weight",)  # weight-decay opt-in (brainage.training.optim)

    def __init__(self, dim: int, num_experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, dim))  # (e, d)
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (t, d) -> logits (t, e) float32."""
        with torch.autocast(x.device.type, enabled=False):
            xf = x.to(router_dtype(x))  # (t, d)
            return xf @ self.weight.to(xf.dtype).t()


class EMoERouter(nn.Module):
    """EMoE energy router in a shared orthonormal basis."""

    def __init__(self, dim: int, num_experts: int, rank: int) -> None:
        super().__init__()
        self.q = nn.Parameter(random_orthonormal(rows=dim, cols=rank))  # (d, r)
        self.log_lambda = nn.Parameter(torch.zeros(rank))  # (r,)
        self.masks = nn.Parameter(torch.randn(num_experts, rank) * 0.02)  # (e, r)
        self.bias = nn.Parameter(torch.zeros(num_experts))  # (e,)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (t, d) -> logits (t, e) float32 (before the temperature)."""
        with torch.autocast(x.device.type, enabled=False):
            xf = x.to(router_dtype(x))  # (t, d)
            z = xf @ self.q.to(xf.dtype)  # (t, r)
            energy = z.square() / z.square().sum(dim=-1, keepdim=True).clamp_min(1e-12)  # (t, r)
            mix = self.masks.softmax(dim=0) * self.log_lambda.exp()  # (e, r): softmax over experts, times gamma_r
            return energy @ mix.t() + self.bias  # (t, e)

    @torch.no_grad()
    def orthonormalize_(self) -> None:
        """QR retraction of the shared basis ``Q``."""
        qr_retract_(self.q)

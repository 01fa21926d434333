"""Expert banks for the MoE slot: ERMoE eigen-reparameterized experts and plain MLP experts.

ERMoE (Cheng et al., arXiv 2511.10971) factorises each expert's weight in an orthonormal eigenbasis,
``W^(e) = U^(e) diag(s^(e)) V^(e)^T``, and routes by the cosine between a token and ``span(V^(e))``.

Our choices (the paper's public text is silent on them; see the method notes):
- An expert is a ViT MLP ``d -> h -> d`` with GELU. Its FIRST projection is eigen-reparameterized,
  ``W1 = U diag(exp(log_s)) V^T`` with ``V`` (d x r) the input basis used by the router and ``U`` (h x r); its SECOND
  projection is a plain linear layer ``h -> d`` (full rank). Both projections have per-expert biases.
- The router's projection ``V^T x`` for all experts is computed once and reused as the first stage of the chosen
  experts, so eigen-routing costs ``e * d * r`` MACs per token on top of the experts' ``k * (r * h + h * d)``. The
  default rank (:func:`brainage.model.moe.default_eigen_rank`) makes that total equal to the dense MLP's cost;
  ``r <= min(d, h)`` and ``r < d`` for a discriminative score.
- ``U`` and ``V`` are initialised orthonormal (QR of a Gaussian) and kept orthonormal by a QR retraction after each
  optimizer step (:meth:`EigenExperts.orthonormalize_`), outside ``forward`` so that forward stays pure and
  compile-friendly. The spectrum starts at ``s = 0.02 * sqrt(d * h / r)``, which gives ``W1`` the Frobenius norm of a
  ``trunc_normal(std=0.02)`` matrix (the timm init of the dense MLP).
- Scores are computed in float32 with autocast disabled. ``score="cosine"``: ``a_e = ||V_e^T x|| / ||x||``;
  ``score="spectral"``: ``a_e = ||(s_e / ||s_e||) * V_e^T x|| / ||x||``.

Plain experts (for the softmax and EMoE router baselines) are ``d -> h -> d`` MLPs with ``trunc_normal(0.02)`` weights.

Letters: t tokens, k chosen experts, e experts, d model width, h expert hidden width, r rank.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from brainage.model.dispatch import Dispatch, DispatchImpl, compute_dtype, grouped_linear

__all__ = ["EigenExperts", "PlainExperts", "qr_retract_", "random_orthonormal"]


@torch.no_grad()
def qr_retract_(p: Tensor) -> None:
    """Replace the (..., m, r) matrix ``p`` in place by the Q factor of its QR decomposition, with ``diag(R) > 0``.

    The sign fix makes the retraction the identity on matrices that already have orthonormal columns.
    """
    q, r = torch.linalg.qr(p.float())  # q: (..., m, r), r: (..., r, r)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))  # (..., r)
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    p.copy_(q * sign.unsqueeze(-2))


def random_orthonormal(*batch: int, rows: int, cols: int) -> Tensor:
    m = torch.randn(*batch, rows, cols)  # (..., rows, cols)
    qr_retract_(m)
    return m


class _SecondProjection(nn.Module):
    """The shared ``h -> d`` plain per-expert projection (weights in ``nn.Linear`` layout)."""

    decayed_parameters = ("w2",)  # weight-decay opt-in (brainage.training.optim); U, V, log_s, biases: no decay

    def __init__(self, num_experts: int, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w2 = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))  # (e, d, h)
        self.b2 = nn.Parameter(torch.zeros(num_experts, dim))  # (e, d)
        nn.init.trunc_normal_(self.w2, std=0.02)

    def second(self, h: Tensor, plan: Dispatch, impl: DispatchImpl) -> Tensor:
        """(t*k, h) sorted hidden activations -> (t*k, d)."""
        return grouped_linear(h, self.w2, self.b2, plan, impl)


class EigenExperts(_SecondProjection):
    """ERMoE expert bank: ``W1^(e) = U^(e) diag(s^(e)) V^(e)^T`` and a plain second projection."""

    def __init__(
        self, num_experts: int, dim: int, hidden_dim: int, rank: int, score: Literal["cosine", "spectral"]
    ) -> None:
        super().__init__(num_experts, dim, hidden_dim)
        self.score = score
        self.v = nn.Parameter(random_orthonormal(num_experts, rows=dim, cols=rank))  # (e, d, r) input bases
        self.u = nn.Parameter(random_orthonormal(num_experts, rows=hidden_dim, cols=rank))  # (e, h, r)
        init_s = 0.02 * math.sqrt(dim * hidden_dim / rank)
        self.log_s = nn.Parameter(torch.full((num_experts, rank), math.log(init_s)))  # (e, r)
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden_dim))  # (e, h)

    def bases(self) -> Tensor:
        """The experts' input bases ``V``: (e, d, r)."""
        return self.v

    def scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Eigenbasis scores in float32. ``x``: (t, d) -> (scores (t, e) in [0, 1], projections z (t, e, r))."""
        e, d, r = self.v.shape
        with torch.autocast(x.device.type, enabled=False):
            v_flat = self.v.permute(1, 0, 2).reshape(d, e * r)  # (d, e*r)
            xf = x.float()  # (t, d)
            z = (xf @ v_flat).reshape(-1, e, r)  # (t, e*r) -> (t, e, r)
            x_norm = xf.norm(dim=-1, keepdim=True).clamp_min(1e-6)  # (t, 1)
            if self.score == "spectral":
                s = self.log_s.exp()  # (e, r)
                z_scored = z * (s / s.norm(dim=-1, keepdim=True))  # (t, e, r)
            else:
                z_scored = z
            return z_scored.norm(dim=-1) / x_norm, z  # (t, e), (t, e, r)

    def first(self, x: Tensor, z: Tensor | None, plan: Dispatch, impl: DispatchImpl) -> Tensor:
        """First projection of the chosen experts, reusing the router's projections ``z`` (t, e, r) -> (t*k, h)."""
        if z is None:
            raise ValueError("EigenExperts.first needs the router projections z, got None")
        t, e, r = z.shape
        rows = plan.token * e + plan.expert  # (t*k,) row of (token, expert) in the (t*e, r) view
        z_sorted = z.reshape(t * e, r).index_select(0, rows).to(compute_dtype(x))  # (t*k, r)
        w1 = self.u * self.log_s.exp().unsqueeze(1)  # (e, h, r) = U diag(s), nn.Linear layout (out=h, in=r)
        return grouped_linear(z_sorted, w1, self.b1, plan, impl)

    @torch.no_grad()
    def orthonormalize_(self) -> None:
        """QR retraction of every ``U^(e)`` and ``V^(e)`` (call after each optimizer step)."""
        qr_retract_(self.v)
        qr_retract_(self.u)


class PlainExperts(_SecondProjection):
    """Plain MLP experts ``d -> h -> d`` for the softmax and EMoE router baselines."""

    decayed_parameters = ("w1", "w2")

    def __init__(self, num_experts: int, dim: int, hidden_dim: int) -> None:
        super().__init__(num_experts, dim, hidden_dim)
        self.w1 = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))  # (e, h, d)
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden_dim))  # (e, h)
        nn.init.trunc_normal_(self.w1, std=0.02)

    def first(self, x: Tensor, z: Tensor | None, plan: Dispatch, impl: DispatchImpl) -> Tensor:
        """First projection of the chosen experts: ``x`` (t, d) -> (t*k, h); ``z`` is unused."""
        x_sorted = x.to(compute_dtype(x)).index_select(0, plan.token)  # (t*k, d)
        return grouped_linear(x_sorted, self.w1, self.b1, plan, impl)

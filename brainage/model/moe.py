"""The MoE MLP slot: ERMoE eigenbasis routing (default) or a softmax / EMoE router, with sparse dispatch.

- ERMoE (Cheng et al., arXiv 2511.10971): experts ``W1 = U diag(s) V^T``; the router has no free gating matrix, the
  logit of expert e is the eigenbasis score (cosine between the token and ``span(V^(e))``) over a temperature; top-k,
  gates renormalised over the chosen k; no balancing loss by default. Optional cross-expert orthogonality
  regulariser ``orthogonality_weight * sum_{i != j} ||V_i^T V_j||_F^2`` from the MoE theory of Su & Liu (default off).
- Softmax top-k baseline with the Switch load-balancing loss (Fedus et al., JMLR 2022; Mixtral convention).
- EMoE router (Cheng et al., arXiv 2601.12137), energy in a shared basis.

Every router runs through the same slot and the same sparse dispatch (:mod:`brainage.model.dispatch`): no expert is
ever run on tokens it was not assigned to, and there is no host sync in ``forward`` with ``dispatch="auto"`` and
aligned widths, so ``torch.compile(slot, fullgraph=True)`` works.

Equal active size: the slot takes the hidden width of the dense MLP it replaces, ``hidden_dim``; each expert gets
``hidden_dim // top_k``, so the k chosen experts together have the dense MLP's hidden width.

Switch loss convention: ``E * sum_e f_e * P_e`` with ``f_e`` the fraction of (token, slot) assignments to expert e
(sums to 1) and ``P_e`` the mean router probability; it equals 1 under uniform routing (Mixtral's variant, where f sums
to k, equals k).

Letters: b batch, n tokens, t = b*n, d width, e experts, k chosen experts, h expert hidden width, r rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainage.model.dispatch import DispatchImpl, combine, plan_dispatch
from brainage.model.moe_experts import EigenExperts, PlainExperts
from brainage.model.moe_routers import EMoERouter, SoftmaxRouter
from brainage.model.routing import Routing, SlotOutput

__all__ = [
    "MoEConfig",
    "MoEMlp",
    "switch_load_balancing_loss",
    "expert_orthogonality_penalty",
    "orthonormalize_",
    "default_eigen_rank",
]

_ROUTERS = ("eigen", "softmax", "emoe")
_SCORES = ("cosine", "spectral")
_DISPATCH = ("auto", "grouped_mm", "loop")


@dataclass(frozen=True)
class MoEConfig:
    """Configuration of an MoE MLP slot.

    Args:
        router: "eigen" (ERMoE eigenbasis score), "softmax" (linear gate + Switch loss) or "emoe" (EMoE energy router).
        num_experts: number of experts E (>= 1).
        top_k: experts per token, 1 <= top_k <= num_experts.
        rank: rank r of the ERMoE bases (eigen) or of the shared EMoE basis (emoe). None -> for eigen, the rank at
            which the slot's per-token compute, routing included, equals the dense MLP's (:func:`default_eigen_rank`,
            128 at d=384, 8 experts, hidden 1536); for emoe, dim // 2. A full rank r = d would make every eigen score
            1 (``||V^T x|| = ||x||``), so r < d is required for the score to discriminate.
        temperature: softmax temperature of the router logits (> 0). Eigen scores lie in [0, 1], hence the small
            default.
        score: eigen router only: "cosine" ``||V^T x|| / ||x||`` or "spectral" (directions weighted by ``s / ||s||``).
        switch_loss_weight: weight of the Switch balancing loss, used only by router="softmax".
        orthogonality_weight: weight of ``sum_{i != j} ||V_i^T V_j||_F^2`` (router="eigen" only); 0 = off.
        dispatch: "auto" (grouped_mm when available and aligned, else loop), "grouped_mm" or "loop".
    """

    router: Literal["eigen", "softmax", "emoe"] = "eigen"
    num_experts: int = 8
    top_k: int = 2
    rank: int | None = None
    temperature: float = 0.1
    score: Literal["cosine", "spectral"] = "cosine"
    switch_loss_weight: float = 0.01
    orthogonality_weight: float = 0.0
    dispatch: Literal["auto", "grouped_mm", "loop"] = "auto"

    def __post_init__(self) -> None:
        if self.router not in _ROUTERS:
            raise ValueError(f"MoEConfig.router={self.router!r} is not one of {_ROUTERS}")
        if self.score not in _SCORES:
            raise ValueError(f"MoEConfig.score={self.score!r} is not one of {_SCORES}")
        if self.dispatch not in _DISPATCH:
            raise ValueError(f"MoEConfig.dispatch={self.dispatch!r} is not one of {_DISPATCH}")
        if self.num_experts < 1:
            raise ValueError(f"MoEConfig.num_experts={self.num_experts} must be >= 1")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"MoEConfig.top_k={self.top_k} must be in 1..num_experts={self.num_experts}")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"MoEConfig.rank={self.rank} must be >= 1 or None")
        if not self.temperature > 0:
            raise ValueError(f"MoEConfig.temperature={self.temperature} must be > 0")
        for name in ("switch_loss_weight", "orthogonality_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"MoEConfig.{name}={getattr(self, name)} must be >= 0")


def switch_load_balancing_loss(probs: Tensor, expert_index: Tensor, num_experts: int) -> Tensor:
    """Switch Transformer balancing loss ``E * sum_e f_e * P_e`` (1 under uniform routing).

    Args:
        probs: (t, e) router softmax over all experts.
        expert_index: (t, k) chosen experts.
        num_experts: E.
    """
    counts = F.one_hot(expert_index, num_experts).sum(dim=(0, 1))  # (t, k, e) -> (e,)
    frac = counts.float() / expert_index.numel()  # (e,) sums to 1
    return num_experts * (frac * probs.float().mean(dim=0)).sum()


def expert_orthogonality_penalty(bases: Tensor) -> Tensor:
    """``sum_{i != j} ||V_i^T V_j||_F^2`` for bases (e, d, r) (Su & Liu: orthogonality narrows the greedy gap).

    Uses ``||sum_i V_i V_i^T||_F^2 - sum_i ||V_i^T V_i||_F^2``, the cheaper of the two Gram forms.
    """
    e, d, r = bases.shape
    v_flat = bases.float().permute(1, 0, 2).reshape(d, e * r)  # (d, e*r)
    gram = v_flat @ v_flat.t() if d < e * r else v_flat.t() @ v_flat  # (d, d) or (e*r, e*r)
    self_terms = (bases.float().transpose(1, 2) @ bases.float()).square().sum()  # sum_i ||V_i^T V_i||_F^2
    return gram.square().sum() - self_terms


def default_eigen_rank(dim: int, hidden_dim: int, num_experts: int) -> int:
    """Rank r at which the ERMoE slot costs what the dense MLP costs, routing included.

    Per token the slot computes ``V^T x`` for all experts (``e*d*r`` MACs, reused as the experts' first stage) and
    the k chosen experts' ``U diag(s)`` and second projection (``k*(r*h + h*d)`` with ``k*h = H``): equal to the
    dense ``2*d*H`` when ``r = d*H / (e*d + H)`` (128 at d=384, H=1536, e=8). Rounded down to a multiple of 4 for
    grouped_mm alignment (at least 1, at most ``min(d, H // k)`` is checked by the caller).
    """
    r = dim * hidden_dim // (num_experts * dim + hidden_dim)
    return max(1, r - r % 4) if r >= 4 else max(1, r)


class MoEMlp(nn.Module):
    """Sparse mixture-of-experts MLP slot, a drop-in for :class:`brainage.model.mlp.Mlp`.

    Args:
        dim: token width d.
        hidden_dim: hidden width of the dense MLP this slot replaces; each expert gets ``hidden_dim // top_k``.
        dropout: dropout after the activation and after the output.
        moe: the MoE configuration (None -> ``MoEConfig()``).
    """

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, moe: MoEConfig | None = None) -> None:
        super().__init__()
        cfg = moe if moe is not None else MoEConfig()
        if hidden_dim % cfg.top_k:
            raise ValueError(f"hidden_dim={hidden_dim} must be divisible by top_k={cfg.top_k} (equal active size)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        expert_hidden = hidden_dim // cfg.top_k
        if cfg.rank is not None:
            rank = cfg.rank
        elif cfg.router == "eigen":
            rank = default_eigen_rank(dim, hidden_dim, cfg.num_experts)
        else:
            rank = max(1, dim // 2)
        self.cfg = cfg
        self.num_experts = cfg.num_experts
        self.router: nn.Module | None = None
        if cfg.router == "eigen":
            if rank > min(dim, expert_hidden):
                raise ValueError(f"rank={rank} must be <= min(dim={dim}, expert hidden={expert_hidden})")
            self.experts: EigenExperts | PlainExperts = EigenExperts(
                cfg.num_experts, dim, expert_hidden, rank, cfg.score
            )
        else:
            self.experts = PlainExperts(cfg.num_experts, dim, expert_hidden)
            if cfg.router == "softmax":
                self.router = SoftmaxRouter(dim, cfg.num_experts)
            else:
                if rank > dim:
                    raise ValueError(f"rank={rank} must be <= dim={dim} for the EMoE basis")
                self.router = EMoERouter(dim, cfg.num_experts, rank)
        self.drop = nn.Dropout(dropout)
        self.impl: DispatchImpl = cfg.dispatch

    def forward(self, x: Tensor, return_routing: bool = False) -> SlotOutput:
        """``x`` (b, n, d) -> :class:`SlotOutput` with ``out`` (b, n, d)."""
        b, n, d = x.shape
        tokens = x.reshape(b * n, d)  # (t, d)
        z = None
        if self.router is None:
            scores, z = self.experts.scores(tokens)  # (t, e), (t, e, r)
        else:
            scores = self.router(tokens)  # (t, e)
        probs = (scores / self.cfg.temperature).softmax(dim=-1)  # (t, e) float32
        top_p, expert_index = probs.topk(self.cfg.top_k, dim=-1)  # (t, k), sorted descending
        gates = top_p / top_p.sum(dim=-1, keepdim=True)  # (t, k)

        plan = plan_dispatch(expert_index, gates, self.num_experts)
        hidden = F.gelu(self.experts.first(tokens, z, plan, self.impl))  # (t*k, h)
        y = self.experts.second(self.drop(hidden), plan, self.impl)  # (t*k, d)
        out = self.drop(combine(y, plan, b * n)).reshape(b, n, d)  # (t, d) -> (b, n, d)

        aux = probs.new_zeros(())
        if self.cfg.router == "softmax" and self.cfg.switch_loss_weight > 0:
            aux = self.cfg.switch_loss_weight * switch_load_balancing_loss(probs, expert_index, self.num_experts)
        elif self.cfg.router == "eigen" and self.cfg.orthogonality_weight > 0:
            aux = self.cfg.orthogonality_weight * expert_orthogonality_penalty(self.experts.bases())
        routing = None
        if return_routing:
            e, k = self.num_experts, self.cfg.top_k
            routing = Routing(
                expert_index=expert_index.reshape(b, n, k),  # (t, k) -> (b, n, k)
                gates=gates.reshape(b, n, k),  # (t, k) -> (b, n, k)
                probs=probs.reshape(b, n, e),  # (t, e) -> (b, n, e)
            )
        return SlotOutput(out=out, aux_loss=aux, routing=routing)


@torch.no_grad()
def orthonormalize_(net: nn.Module) -> None:
    """Re-orthonormalise, in place, every ERMoE expert basis and EMoE router basis of ``net`` (QR retraction).

    Call it after every optimizer step; forward never does it, so forward stays pure and compile-friendly.
    """
    for module in net.modules():
        if isinstance(module, (EigenExperts, EMoERouter)):
            module.orthonormalize_()

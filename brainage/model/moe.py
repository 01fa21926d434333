"""The MoE MLP slot: ERMoE eigenbasis routing (default) or a softmax / EMoE router, with sparse dispatch.

- ERMoE (Cheng et al., arXiv 2511.10971): experts ``W1 = U diag(s) V^T``; the router has no free gating matrix, the
  logit of expert e is an eigenbasis score of the token against (part of) ``V^(e)`` over a temperature; top-k, gates
  renormalised over the chosen k; no balancing loss by default. Optional cross-expert orthogonality regulariser
  ``orthogonality_weight * sum_{i != j} ||V_i^T V_j||_F^2`` on the scored bases, from the MoE theory of Su & Liu
  ("Variational Inference, Entropy, and Orthogonality: A Unified Theory of Mixture-of-Experts"; default off).
- Softmax top-k baseline with the Switch load-balancing loss (Fedus et al., JMLR 2022; Mixtral convention).
- EMoE router (Cheng et al., arXiv 2601.12137), energy in a shared basis.

ERMoE designs (``MoEConfig.design``; all our choices, the paper's public text gives no rank or cost rule):
- "lowrank" (the first implementation, kept as the default until the cross-validated comparison picks one): rank r
  from :func:`default_eigen_rank`, which charges the routing cost ``e*d*r`` to the dense MLP's budget (r = 32 at
  d = 96): rank-starved, and with ``E*r > d`` the experts' subspaces cannot be mutually incoherent.
- "fullrank": ``r = d`` orthonormal experts routed by a spectrum-weighted score ("energy" or "spectral"; the cosine is
  1 for every expert at full rank). The spectrum starts log-normal so that the experts differ at init. Cost: the
  router projects every token on every expert's full basis (``e*d^2`` MACs per token, as much as the whole dense
  MLP at mlp_ratio 4): measured 3.2x the dense MLP's forward+backward at d = 384 (``benchmarks/moe_layer.py``).
- "subbasis": decoupled capacity. Experts compute at rank ``r`` (default d) while the router scores only the first
  ``route_rank`` columns of each ``V^(e)`` (default ``d // E``, so ``E * route_rank <= d``, the theory's low-coherence
  regime); ``route_basis`` "random" or "orthogonal" (jointly orthonormal, coherence 0 by construction). The router
  adds ``e*d*route_rank`` MACs per token; the experts' first stage either materialises ``W1`` once per forward (then
  they cost what plain experts cost, plus ``e*h*d*r`` per forward) or projects the chosen tokens on the remaining
  columns, whichever needs fewer MACs (:func:`brainage.model.moe_experts.first_stage_path`). At ``r = d`` this costs
  more than plain experts (measured in ``benchmarks/moe_layer.py``); at ``r = d / 2`` the per-token path is cheaper
  than a plain expert.
- Spectrum step (``spectrum_step``): designs other than "lowrank" scale the spectrum's log-parameter by
  ``kappa = sqrt(d) + sqrt(h)`` so that the experts' gains can move during training (module
  :mod:`brainage.model.moe_experts`); "lowrank" keeps ``s = exp(log_s)`` as before.
- ``temperature_mode="learned"``: a learned log-temperature per slot (scalar ``log_temperature``, initialised at
  ``log(temperature)``; unconstrained, no weight decay since it is 0-d). "fixed" keeps the constant.
- ``shared_expert=True`` (DeepSeekMoE, Dai et al., arXiv 2401.06066): an always-on dense MLP beside the routed
  experts. Equal active size: the dense hidden width H is split in ``top_k + 1`` equal parts, one for the shared
  expert and one for each chosen routed expert (H = 384, k = 2: 128 each). Combines with every router and design.

Every router runs through the same slot and the same sparse dispatch (:mod:`brainage.model.dispatch`): no expert is
ever run on tokens it was not assigned to, and there is no host sync in ``forward`` with ``dispatch="auto"`` and
aligned widths, so ``torch.compile(slot, fullgraph=True)`` works.

Equal active size: the slot takes the hidden width of the dense MLP it replaces, ``hidden_dim``; each expert gets
``hidden_dim // top_k`` (``hidden_dim // (top_k + 1)`` with a shared expert), so the active experts together have the
dense MLP's hidden width. The factorised ``W1 = U diag(s) V^T`` has the shape of a plain expert's weight; its factors
hold ``r * (d + h + 1)`` numbers.

Switch loss convention: ``E * sum_e f_e * P_e`` with ``f_e`` the fraction of (token, slot) assignments to expert e
(sums to 1) and ``P_e`` the mean router probability; it equals 1 under uniform routing (Mixtral's variant, where f sums
to k, equals k).

Letters: b batch, n tokens, t = b*n, d width, e experts, k chosen experts, h expert hidden width, r rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainage.model.dispatch import DispatchImpl, combine, plan_dispatch
from brainage.model.mlp import Mlp
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
_DESIGNS = ("lowrank", "fullrank", "subbasis")
_SCORES = ("cosine", "spectral", "energy")
_ROUTE_BASES = ("random", "orthogonal")
_TEMPERATURE_MODES = ("fixed", "learned")
_SPECTRUM_STEPS = ("auto", "log", "matched")
_DISPATCH = ("auto", "grouped_mm", "loop")


@dataclass(frozen=True)
class MoEConfig:
    """Configuration of an MoE MLP slot (module docstring: the ERMoE designs).

    Args:
        router: "eigen" (ERMoE eigenbasis score), "softmax" (linear gate + Switch loss) or "emoe" (EMoE energy router).
        num_experts: number of experts E (>= 1).
        top_k: experts per token, 1 <= top_k <= num_experts.
        rank: rank r of the ERMoE factorisation (eigen) or of the shared EMoE basis (emoe). None -> design "lowrank":
            :func:`default_eigen_rank` (128 at d=384, 8 experts, hidden 1536); "subbasis": d; emoe: dim // 2.
            Design "fullrank" fixes r = d and takes None only.
        temperature: softmax temperature of the router logits (> 0); the initial value when learned.
        score: eigen router only: "cosine" ``||V^T x|| / ||x||``, "spectral" (directions weighted by ``s / ||s||``)
            or "energy" (``sum_j s_j^2 (v_j^T x)^2 / (mean(s^2) ||x||^2)``); see :mod:`brainage.model.moe_experts`.
        switch_loss_weight: weight of the Switch balancing loss, used only by router="softmax".
        orthogonality_weight: weight of ``sum_{i != j} ||V_i^T V_j||_F^2`` over the scored bases (router="eigen");
            0 = off.
        dispatch: "auto" (grouped_mm when available and aligned, else loop), "grouped_mm" or "loop".
        design: eigen router only: "lowrank", "fullrank" or "subbasis".
        route_rank: design "subbasis" only: columns of each expert basis the router scores (None -> max(1, d // E)).
        route_basis: design "subbasis" only: "random" or "orthogonal" (jointly orthonormal routing sub-bases).
        temperature_mode: "fixed" or "learned" (a learned log-temperature per slot).
        shared_expert: add an always-on dense expert; the hidden width is split in top_k + 1 equal parts.
        spectrum_step: eigen router only: "log" (``s = exp(log_s)``), "matched" (``s = exp(kappa * log_s)``, kappa =
            sqrt(d) + sqrt(h): the spectrum learns as fast as an unconstrained factorisation's column norms; see
            :mod:`brainage.model.moe_experts`) or "auto" ("log" for design "lowrank", else "matched").
    """

    router: Literal["eigen", "softmax", "emoe"] = "eigen"
    num_experts: int = 8
    top_k: int = 2
    rank: int | None = None
    temperature: float = 0.1
    score: Literal["cosine", "spectral", "energy"] = "cosine"
    switch_loss_weight: float = 0.01
    orthogonality_weight: float = 0.0
    dispatch: Literal["auto", "grouped_mm", "loop"] = "auto"
    design: Literal["lowrank", "fullrank", "subbasis"] = "lowrank"
    route_rank: int | None = None
    route_basis: Literal["random", "orthogonal"] = "random"
    temperature_mode: Literal["fixed", "learned"] = "fixed"
    shared_expert: bool = False
    spectrum_step: Literal["auto", "log", "matched"] = "auto"

    def __post_init__(self) -> None:
        for name, allowed in (("router", _ROUTERS), ("score", _SCORES), ("dispatch", _DISPATCH), ("design", _DESIGNS),
                              ("route_basis", _ROUTE_BASES), ("temperature_mode", _TEMPERATURE_MODES),
                              ("spectrum_step", _SPECTRUM_STEPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"MoEConfig.{name}={getattr(self, name)!r} is not one of {allowed}")
        if self.num_experts < 1:
            raise ValueError(f"MoEConfig.num_experts={self.num_experts} must be >= 1")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"MoEConfig.top_k={self.top_k} must be in 1..num_experts={self.num_experts}")
        for name in ("rank", "route_rank"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"MoEConfig.{name}={getattr(self, name)} must be >= 1 or None")
        if not self.temperature > 0:
            raise ValueError(f"MoEConfig.temperature={self.temperature} must be > 0")
        for name in ("switch_loss_weight", "orthogonality_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"MoEConfig.{name}={getattr(self, name)} must be >= 0")
        if self.spectrum_step != "auto" and self.router != "eigen":
            raise ValueError(f"MoEConfig.spectrum_step={self.spectrum_step!r} needs router='eigen', got "
                             f"router={self.router!r}")
        if self.design != "lowrank" and self.router != "eigen":
            raise ValueError(f"MoEConfig.design={self.design!r} needs router='eigen', got router={self.router!r}")
        if self.design == "fullrank":
            if self.rank is not None:
                raise ValueError(f"MoEConfig.rank={self.rank}: design='fullrank' fixes the rank to the width d; "
                                 "leave rank unset")
            if self.score == "cosine":
                raise ValueError("MoEConfig.score='cosine' is 1 for every expert at design='fullrank'; use "
                                 "'energy' or 'spectral'")
        if self.design != "subbasis":
            if self.route_rank is not None:
                raise ValueError(f"MoEConfig.route_rank={self.route_rank} needs design='subbasis', got "
                                 f"design={self.design!r}")
            if self.route_basis != "random":
                raise ValueError(f"MoEConfig.route_basis={self.route_basis!r} needs design='subbasis', got "
                                 f"design={self.design!r}")


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
    """Sparse mixture-of-experts MLP slot, a drop-in for :class:`brainage.model.mlp.Mlp` (same first three
    arguments; :func:`brainage.model.slot.make_mlp` picks one).

    Args:
        dim: token width d.
        hidden_dim: hidden width H of the dense MLP this slot replaces; each routed expert gets ``H // top_k``
            (``H // (top_k + 1)`` with a shared expert, which gets the same).
        dropout: dropout after the activation and after the output.
        moe: the MoE configuration (None -> ``MoEConfig()``).
    """

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, moe: MoEConfig | None = None) -> None:
        super().__init__()
        cfg = moe if moe is not None else MoEConfig()
        parts = cfg.top_k + int(cfg.shared_expert)
        if hidden_dim % parts:
            raise ValueError(f"hidden_dim={hidden_dim} must be divisible by {parts} (top_k={cfg.top_k}"
                             f"{' + a shared expert' if cfg.shared_expert else ''}; equal active size)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        expert_hidden = hidden_dim // parts
        self.cfg = cfg
        self.num_experts = cfg.num_experts
        self.router: nn.Module | None = None
        if cfg.router == "eigen":
            self.experts: EigenExperts | PlainExperts = _eigen_experts(cfg, dim, expert_hidden)
        else:
            self.experts = PlainExperts(cfg.num_experts, dim, expert_hidden)
            if cfg.router == "softmax":
                self.router = SoftmaxRouter(dim, cfg.num_experts)
            else:
                rank = cfg.rank if cfg.rank is not None else max(1, dim // 2)
                if rank > dim:
                    raise ValueError(f"rank={rank} must be <= dim={dim} for the EMoE basis")
                self.router = EMoERouter(dim, cfg.num_experts, rank)
        self.shared = Mlp(dim, expert_hidden, dropout) if cfg.shared_expert else None
        if cfg.temperature_mode == "learned":
            self.log_temperature = nn.Parameter(torch.tensor(math.log(cfg.temperature)))  # () learned log tau
        self.drop = nn.Dropout(dropout)
        self.impl: DispatchImpl = cfg.dispatch

    def temperature(self) -> Tensor | float:
        """The router temperature: ``exp(log_temperature)`` when learned, else the configured constant."""
        return self.log_temperature.exp() if self.cfg.temperature_mode == "learned" else self.cfg.temperature

    def forward(self, x: Tensor, return_routing: bool = False) -> SlotOutput:
        """``x`` (b, n, d) -> :class:`SlotOutput` with ``out`` (b, n, d)."""
        b, n, d = x.shape
        tokens = x.reshape(b * n, d)  # (t, d)
        z = None
        if self.router is None:
            scores, z = self.experts.scores(tokens)  # (t, e), (t, e, q) projections on the scored columns
        else:
            scores = self.router(tokens)  # (t, e)
        probs = (scores / self.temperature()).softmax(dim=-1)  # (t, e) float32
        top_p, expert_index = probs.topk(self.cfg.top_k, dim=-1)  # (t, k), sorted descending
        gates = top_p / top_p.sum(dim=-1, keepdim=True)  # (t, k)

        plan = plan_dispatch(expert_index, gates, self.num_experts)
        hidden = F.gelu(self.experts.first(tokens, z, plan, self.impl))  # (t*k, h)
        y = self.experts.second(self.drop(hidden), plan, self.impl)  # (t*k, d)
        out = self.drop(combine(y, plan, b * n)).reshape(b, n, d)  # (t, d) -> (b, n, d)
        if self.shared is not None:
            out = out + self.shared(x).out  # (b, n, d)

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


def _eigen_experts(cfg: MoEConfig, dim: int, expert_hidden: int) -> EigenExperts:
    """The ERMoE expert bank of ``cfg.design`` (ranks resolved and checked against dim and the expert width)."""
    if cfg.design == "lowrank":
        rank = cfg.rank if cfg.rank is not None else default_eigen_rank(dim, cfg.top_k * expert_hidden, cfg.num_experts)
        route_rank = None
    elif cfg.design == "fullrank":
        rank, route_rank = dim, None
    else:  # subbasis
        rank = cfg.rank if cfg.rank is not None else dim
        route_rank = cfg.route_rank if cfg.route_rank is not None else max(1, dim // cfg.num_experts)
        if route_rank >= rank:
            raise ValueError(f"route_rank={route_rank} must be < rank={rank} for design='subbasis' (at "
                             "route_rank = rank use design='lowrank' or 'fullrank')")
    if rank > min(dim, expert_hidden):
        raise ValueError(f"rank={rank} must be <= min(dim={dim}, expert hidden={expert_hidden}) "
                         f"(design={cfg.design!r})")
    spectrum = "flat" if cfg.design == "lowrank" else "lognormal"
    step = cfg.spectrum_step if cfg.spectrum_step != "auto" else ("log" if cfg.design == "lowrank" else "matched")
    rate = 1.0 if step == "log" else math.sqrt(dim) + math.sqrt(expert_hidden)
    return EigenExperts(cfg.num_experts, dim, expert_hidden, rank, cfg.score, route_rank, cfg.route_basis, spectrum,
                        rate)


@torch.no_grad()
def orthonormalize_(net: nn.Module) -> None:
    """Re-orthonormalise, in place, every ERMoE expert basis and EMoE router basis of ``net`` (QR retraction).

    Call it after every optimizer step; forward never does it, so forward stays pure and compile-friendly.
    """
    for module in net.modules():
        if isinstance(module, (EigenExperts, EMoERouter)):
            module.orthonormalize_()

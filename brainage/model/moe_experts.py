"""Expert banks for the MoE slot: ERMoE eigen-reparameterized experts and plain MLP experts.

ERMoE (Cheng et al., arXiv 2511.10971) factorises each expert's weight in an orthonormal eigenbasis,
``W^(e) = U^(e) diag(s^(e)) V^(e)^T``, and routes by how a token aligns with the expert's basis. The MoE theory of
Su & Liu ("Variational Inference, Entropy, and Orthogonality: A Unified Theory of Mixture-of-Experts") says greedy
top-k routing is optimal when the scored subspaces are mutually incoherent, which needs ``E * r_route <= d``.

Our choices (the paper's public text is silent on them; see the method notes):
- An expert is a ViT MLP ``d -> h -> d`` with GELU. Its FIRST projection is eigen-reparameterized,
  ``W1 = U diag(exp(log_s)) V^T`` with ``V`` (d x r) the input basis and ``U`` (h x r); its SECOND projection is a
  plain linear layer ``h -> d`` (full rank). Both projections have per-expert biases.
- What the router scores: the first ``route_rank`` columns of each ``V^(e)`` (the *routing sub-basis*; all r columns
  by default). Two compute paths, same function:
  - ``route_rank == r`` (designs "lowrank" and "fullrank" of :class:`brainage.model.moe.MoEConfig`): the router's
    projections ``z = V^T x`` for all experts are computed once and reused as the chosen experts' first stage, so
    eigen-routing costs ``e * d * r`` MACs per token on top of the experts' ``k * (r * h + h * d)``.
  - ``route_rank < r`` (design "subbasis"): the router adds ``e * d * route_rank`` MACs per token, and the chosen
    experts' first stage takes the cheaper of two exact paths (:func:`first_stage_path`): materialise
    ``W1 = U diag(s) V^T`` (e, h, d) once per forward (``e * h * d * r`` MACs, independent of the token count) and
    apply it as a plain grouped linear (then the experts cost what plain experts cost), or project the chosen
    tokens on the remaining ``r - route_rank`` columns and apply ``U diag(s)`` (cheaper than a plain expert when
    ``r`` is well below d, and for few tokens).
- Routing sub-basis init (``route_basis``): "random" (each ``V^(e)`` an independent random orthonormal basis; the
  optional cross-expert penalty can then lower the coherence in training) or "orthogonal" (the E routing sub-bases are
  disjoint blocks of one random orthogonal matrix, needs ``E * route_rank <= d``, and the retraction keeps them
  jointly orthonormal: mutual coherence 0 at all times).
- ``U`` and ``V`` are initialised orthonormal (QR of a Gaussian) and kept orthonormal by a QR retraction after each
  optimizer step (:meth:`EigenExperts.orthonormalize_`), outside ``forward`` so that forward stays pure and
  compile-friendly. With ``route_basis="orthogonal"`` the retraction first re-orthonormalises the concatenated
  routing sub-bases (d x E*route_rank) by the polar factor (the nearest orthonormal matrix, symmetric in the experts,
  where QR would favour the first expert), then each ``V^(e)`` by QR, which keeps orthonormal leading columns fixed.
- Spectrum init: ``s = 0.02 * sqrt(d * h / r)`` gives ``W1`` the Frobenius norm of a ``trunc_normal(std=0.02)``
  matrix (the timm init of the dense MLP). ``spectrum_init="flat"`` uses that value for every direction (design
  "lowrank"); ``"lognormal"`` multiplies it by ``exp(0.5 * N(0, 1))`` and rescales to the same Frobenius norm (the
  other designs): at full rank a flat spectrum would give every expert the same energy score (``||W1 x|| = s ||x||``).
- Spectrum step (``spectrum_rate`` kappa): ``s = exp(kappa * log_s)``, so the parameter ``log_s`` holds
  ``log(s) / kappa``. Adam moves every scalar by about lr per step, so with kappa = 1 log s moves by lr: the spectrum,
  hence the expert's gain (the retraction pins the columns of U and V to unit norm), barely leaves its init in a
  training run (s changes by at most ``exp(lr * steps)``). ``kappa = sqrt(d) + sqrt(h)`` lets log s move as fast as
  the log-norms of the columns of an unconstrained factorisation ``U diag(s) V^T`` could (each of their h + d entries
  moving by lr); it is a per-parameter learning-rate multiplier of kappa for ``log_s`` under Adam (kappa^2 under SGD).
  The toy in ``benchmarks/moe_capacity.py`` motivated it (R^2 of a linear teacher, subbasis design, lr 1e-3:
  0.64 with kappa = 1, 0.91 with kappa = 24 = sqrt(96) + sqrt(192), one seed).
- Scores are computed in float32 with autocast disabled, on the scored columns ``z = V_route^T x``:
  ``"cosine"``: ``||z|| / ||x||``; ``"spectral"``: ``||(s / ||s||) * z|| / ||x||`` (s of the scored columns; carries
  a ``1 / sqrt(r)`` factor); ``"energy"``: ``sum_j s_j^2 z_j^2 / (mean(s^2) ||x||^2)`` with the mean over the whole
  spectrum, i.e. ``||W1 x||^2 / (||W1||_F^2 / r * ||x||^2)`` at ``route_rank = r``: the expert's gain on the token
  relative to its average gain (1 for every expert at full rank with a flat spectrum; it discriminates through the
  spectrum, and its scale does not shrink with r). Every eigenbasis score is even in x: a token and its negation get
  the same scores, so a partition by the sign of a direction (which a linear softmax gate expresses) is out of reach
  (``benchmarks/moe_capacity.py``, teacher "mixture").

Plain experts (for the softmax and EMoE router baselines) are ``d -> h -> d`` MLPs with ``trunc_normal(0.02)`` weights.

Letters: t tokens, k chosen experts, e experts, d model width, h expert hidden width, r rank, q routing rank.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from brainage.model.dispatch import Dispatch, DispatchImpl, compute_dtype, grouped_linear, router_dtype

__all__ = ["EigenExperts", "PlainExperts", "first_stage_path", "polar_retract_", "qr_retract_", "random_orthonormal"]

_SPECTRUM_JITTER = 0.5  # std of log s around its init value for spectrum_init="lognormal"


@torch.no_grad()
def qr_retract_(p: Tensor) -> None:
    """Replace the (..., m, r) matrix ``p`` in place by the Q factor of its QR decomposition, with ``diag(R) > 0``.

    The sign fix makes the retraction the identity on matrices that already have orthonormal columns.
    """
    q, r = torch.linalg.qr(p.float())  # q: (..., m, r), r: (..., r, r)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))  # (..., r)
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    p.copy_(q * sign.unsqueeze(-2))


@torch.no_grad()
def polar_retract_(p: Tensor) -> None:
    """Replace the (m, c) matrix ``p`` in place by its nearest matrix with orthonormal columns, ``U W^T`` from the SVD
    ``p = U S W^T``. Unlike QR it treats all columns alike (no Gram-Schmidt order)."""
    u, _, wh = torch.linalg.svd(p.float(), full_matrices=False)  # (m, c), (c,), (c, c)
    p.copy_(u @ wh)


def random_orthonormal(*batch: int, rows: int, cols: int) -> Tensor:
    m = torch.randn(*batch, rows, cols)  # (..., rows, cols)
    qr_retract_(m)
    return m


def _gather_tokens(x: Tensor, plan: Dispatch) -> Tensor:
    """(t, d) tokens -> (t*k, d) rows in expert-sorted order, in the compute dtype."""
    return x.to(compute_dtype(x)).index_select(0, plan.token)


def first_stage_path(rows: int, e: int, d: int, h: int, r: int, q: int) -> Literal["reuse", "tokens", "materialise"]:
    """How :meth:`EigenExperts.first` computes ``U diag(s) V^T x`` for ``rows`` = t*k (token, expert) pairs, given
    the router's projections on the first q of r columns: "reuse" when q = r; else the cheaper in MACs of
    "tokens" (the chosen experts' remaining ``V^T x`` columns, then ``U diag(s)``: ``rows * (d*(r-q) + r*h)``) and
    "materialise" (``W1 = U diag(s) V^T`` once per forward, then a plain grouped linear: ``e*h*d*r + rows*d*h``).
    The backward of each costs twice its forward, so the forward decides."""
    if q == r:
        return "reuse"
    return "tokens" if rows * (d * (r - q) + r * h) <= e * h * d * r + rows * d * h else "materialise"


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
    """ERMoE expert bank: ``W1^(e) = U^(e) diag(s^(e)) V^(e)^T`` and a plain second projection.

    Args:
        num_experts: E.
        dim: input width d.
        hidden_dim: expert hidden width h.
        rank: rank r of each expert's factorisation, ``r <= min(d, h)``.
        score: "cosine", "spectral" or "energy" (module docstring).
        route_rank: columns of each ``V^(e)`` the router scores, ``1 <= route_rank <= r`` (None -> r).
        route_basis: "random" or "orthogonal" (jointly orthonormal routing sub-bases, ``E * route_rank <= d``).
        spectrum_init: "flat" or "lognormal".
        spectrum_rate: kappa in ``s = exp(kappa * log_s)`` (> 0).
    """

    def __init__(
        self,
        num_experts: int,
        dim: int,
        hidden_dim: int,
        rank: int,
        score: Literal["cosine", "spectral", "energy"],
        route_rank: int | None = None,
        route_basis: Literal["random", "orthogonal"] = "random",
        spectrum_init: Literal["flat", "lognormal"] = "flat",
        spectrum_rate: float = 1.0,
    ) -> None:
        super().__init__(num_experts, dim, hidden_dim)
        route_rank = rank if route_rank is None else route_rank
        if not 1 <= rank <= min(dim, hidden_dim):
            raise ValueError(f"rank={rank} must be in 1..min(dim={dim}, expert hidden={hidden_dim})")
        if not 1 <= route_rank <= rank:
            raise ValueError(f"route_rank={route_rank} must be in 1..rank={rank}")
        if route_basis == "orthogonal" and num_experts * route_rank > dim:
            raise ValueError(f"route_basis='orthogonal' needs num_experts * route_rank <= dim; got "
                             f"{num_experts} * {route_rank} > {dim}")
        if not spectrum_rate > 0:
            raise ValueError(f"spectrum_rate={spectrum_rate} must be > 0")
        self.score = score
        self.spectrum_rate = spectrum_rate
        self.route_rank = route_rank
        self.route_basis = route_basis
        if route_basis == "orthogonal":
            joint = random_orthonormal(rows=dim, cols=num_experts * route_rank)  # (d, e*q)
            route = joint.reshape(dim, num_experts, route_rank).permute(1, 0, 2)  # (d, e*q) -> (e, d, q)
            v = torch.cat([route, torch.randn(num_experts, dim, rank - route_rank)], dim=2)  # (e, d, r)
            qr_retract_(v)  # completes each basis, keeps the leading q columns
        else:
            v = random_orthonormal(num_experts, rows=dim, cols=rank)
        self.v = nn.Parameter(v)  # (e, d, r) input bases
        self.u = nn.Parameter(random_orthonormal(num_experts, rows=hidden_dim, cols=rank))  # (e, h, r)
        init_s = 0.02 * math.sqrt(dim * hidden_dim / rank)
        log_s = torch.full((num_experts, rank), math.log(init_s))  # (e, r)
        if spectrum_init == "lognormal":
            log_s = log_s + _SPECTRUM_JITTER * torch.randn(num_experts, rank)
            log_s = log_s - 0.5 * torch.log(log_s.exp().square().mean(dim=1, keepdim=True) / init_s**2)
        self.log_s = nn.Parameter(log_s / spectrum_rate)  # log(s) / kappa
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden_dim))  # (e, h)

    def spectrum(self) -> Tensor:
        """The spectra ``s = exp(kappa * log_s)``: (e, r)."""
        return (self.spectrum_rate * self.log_s).exp()

    def bases(self) -> Tensor:
        """The bases the router scores: the routing sub-bases ``V[:, :, :route_rank]``, (e, d, q)."""
        return self.v[..., : self.route_rank]

    def scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Eigenbasis scores in float32 (float64 for float64 inputs).

        ``x``: (t, d) -> (scores (t, e), projections z (t, e, q) on the scored columns, reused by :meth:`first`).
        """
        e, d, r = self.v.shape
        q = self.route_rank
        with torch.autocast(x.device.type, enabled=False):
            v_flat = self.bases().permute(1, 0, 2).reshape(d, e * q)  # (e, d, q) -> (d, e*q)
            xf = x.to(router_dtype(x))  # (t, d)
            z = (xf @ v_flat.to(xf.dtype)).reshape(-1, e, q)  # (t, e*q) -> (t, e, q)
            x_norm = xf.norm(dim=-1, keepdim=True).clamp_min(1e-6)  # (t, 1)
            if self.score == "cosine":
                score = z.norm(dim=-1) / x_norm
            elif self.score == "spectral":
                s = self.spectrum()[:, :q].to(xf.dtype)  # (e, q)
                score = (z * (s / s.norm(dim=-1, keepdim=True))).norm(dim=-1) / x_norm
            else:  # energy
                s_sq = self.spectrum().to(xf.dtype).square()  # (e, r)
                weight = s_sq[:, :q] / s_sq.mean(dim=-1, keepdim=True)  # (e, q)
                score = (z.square() * weight).sum(dim=-1) / x_norm.square()
            return score, z  # (t, e), (t, e, q)

    def first(self, x: Tensor, z: Tensor | None, plan: Dispatch, impl: DispatchImpl) -> Tensor:
        """First projection ``U diag(s) V^T x + b1`` of the chosen experts -> (t*k, h).

        ``z`` (t, e, q): the router's projections on the scored columns, reused; the path is
        :func:`first_stage_path`'s.
        """
        if z is None:
            raise ValueError("EigenExperts.first needs the router projections z from scores(), got None")
        e, d, r = self.v.shape
        t, _, q = z.shape
        s = self.spectrum().unsqueeze(1)  # (e, 1, r)
        path = first_stage_path(plan.token.shape[0], e, d, self.b1.shape[1], r, q)
        if path == "materialise":
            w1 = (self.u * s) @ self.v.transpose(1, 2)  # (e, h, r) @ (e, r, d) -> (e, h, d)
            return grouped_linear(_gather_tokens(x, plan), w1, self.b1, plan, impl)
        rows = plan.token * e + plan.expert  # (t*k,) row of (token, expert) in the (t*e, q) view
        z_sorted = z.reshape(t * e, q).index_select(0, rows).to(compute_dtype(x))  # (t*k, q)
        if path == "tokens":  # the chosen experts' remaining columns: V_rest^T x
            v_rest = self.v[..., q:].transpose(1, 2).contiguous()  # (e, r-q, d), nn.Linear layout
            z_rest = grouped_linear(_gather_tokens(x, plan), v_rest, None, plan, impl)  # (t*k, r-q)
            z_sorted = torch.cat([z_sorted, z_rest], dim=1)  # (t*k, r)
        return grouped_linear(z_sorted, self.u * s, self.b1, plan, impl)  # U diag(s): (e, h, r), nn.Linear layout

    @torch.no_grad()
    def orthonormalize_(self) -> None:
        """QR retraction of every ``U^(e)`` and ``V^(e)`` (call after each optimizer step); with
        ``route_basis="orthogonal"`` the routing sub-bases are first re-orthonormalised jointly."""
        if self.route_basis == "orthogonal":
            e, d, _ = self.v.shape
            q = self.route_rank
            joint = self.v[..., :q].permute(1, 0, 2).reshape(d, e * q)  # (e, d, q) -> (d, e*q), a copy
            polar_retract_(joint)
            self.v[..., :q] = joint.reshape(d, e, q).permute(1, 0, 2)  # (d, e*q) -> (e, d, q)
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
        return grouped_linear(_gather_tokens(x, plan), self.w1, self.b1, plan, impl)

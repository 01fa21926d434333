"""Routing diagnostics from the MoE theory (Su & Liu, "Variational Inference, Entropy, and Orthogonality: A Unified
Theory of Mixture-of-Experts"), for ERMoE (Cheng et al., arXiv 2511.10971) and the baseline routers.

Pure functions, plus :func:`collect_diagnostics` which runs a net once and returns a flat ``dict[str, float]``:

- load: fraction of (token, slot) assignments per expert; coefficient of variation (population std / mean),
  max / mean, and the entropy of the load distribution (nats);
- routing entropy: mean over tokens of ``-sum_e p_e log p_e`` of the router softmax (nats);
- mutual coherence (eigen router only): ``max_{i != j} sigma_max(V_i^T V_j)`` and its mean over pairs i < j
  (0 = orthogonal subspaces, 1 = a shared direction), on the bases the router scores (the routing sub-bases of design
  "subbasis"; at design "fullrank" every pair of full-rank bases spans R^d, so the coherence is 1 and the greedy gap
  0 by construction: subspace selection does not apply there). :func:`basis_coherence` reads it from the weights
  alone, without data (the training callback logs it at init);
- greedy gap (eigen router only): ``F(S) = ||P_S x||^2 / ||x||^2``, the energy of x in the union of the chosen
  experts' subspaces. Greedy S = top-k by the router score; S* = argmax over all C(E, k) subsets (exhaustive when
  C(E, k) <= 5000, else the gap is NaN). Our choices: the union basis is the left singular vectors of the
  concatenated bases with singular value > 1e-6 * largest (robust to shared directions), and a token counts as a
  mismatch when ``F(S*) - F(S_greedy) > 1e-6`` (ties between equally good subsets are not mismatches).

Letters: t tokens, d width, e experts, r rank, k chosen experts, s subsets.
"""

from __future__ import annotations

import itertools
import math
import re

import torch
from torch import Tensor, nn

from brainage.model.moe import MoEMlp
from brainage.model.moe_experts import EigenExperts

__all__ = [
    "load_stats",
    "routing_entropy",
    "mutual_coherence",
    "subset_energy",
    "greedy_gap",
    "basis_coherence",
    "collect_diagnostics",
    "MAX_SUBSETS",
]

MAX_SUBSETS = 5000
_MISMATCH_TOL = 1e-6


def load_stats(expert_index: Tensor, num_experts: int) -> dict[str, float]:
    """Load statistics of ``expert_index`` (..., k): ``cv``, ``max_over_mean``, ``entropy`` and ``load_{e}``."""
    counts = torch.bincount(expert_index.reshape(-1).cpu(), minlength=num_experts).double()  # (e,)
    load = counts / counts.sum().clamp_min(1.0)  # (e,) fractions summing to 1
    mean = 1.0 / num_experts
    nz = load[load > 0]
    stats = {
        "cv": float(load.std(unbiased=False) / mean),
        "max_over_mean": float(load.max() / mean),
        "entropy": float(-(nz * nz.log()).sum()),
    }
    stats.update({f"load_{e}": float(v) for e, v in enumerate(load)})
    return stats


def routing_entropy(probs: Tensor) -> float:
    """Mean over tokens of the entropy (nats) of the router probabilities ``probs`` (..., e)."""
    p = probs.reshape(-1, probs.shape[-1]).double()  # (t, e)
    return float(-(p * p.clamp_min(1e-30).log()).sum(dim=-1).mean())


def mutual_coherence(bases: Tensor) -> tuple[float, float]:
    """(max, mean) over expert pairs i < j of ``sigma_max(V_i^T V_j)`` for orthonormal bases (e, d, r)."""
    e = bases.shape[0]
    if e < 2:
        return 0.0, 0.0
    v = bases.detach().double()
    i, j = torch.triu_indices(e, e, offset=1)  # pairs i < j
    cross = v[i].transpose(1, 2) @ v[j]  # (pairs, r, r)
    sigma = torch.linalg.matrix_norm(cross, ord=2)  # (pairs,)
    return float(sigma.max()), float(sigma.mean())


def subset_energy(x: Tensor, bases: Tensor, subsets: Tensor, chunk: int = 64) -> Tensor:
    """``F(S) = ||P_S x||^2 / ||x||^2`` for every subset and token.

    Args:
        x: (t, d) tokens.
        bases: (e, d, r) expert bases.
        subsets: (s, k) expert indices of each subset.

    Returns:
        (s, t) captured energy fractions in [0, 1].
    """
    xd = x.detach().double()  # (t, d)
    x_sq = xd.square().sum(dim=1).clamp_min(1e-30)  # (t,)
    v = bases.detach().double()
    out = []
    for start in range(0, subsets.shape[0], chunk):
        sub = subsets[start : start + chunk]  # (c, k)
        c, k = sub.shape
        stacked = v[sub].permute(0, 2, 1, 3).reshape(c, v.shape[1], k * v.shape[2])  # (c, k, d, r) -> (c, d, k*r)
        u, sv, _ = torch.linalg.svd(stacked, full_matrices=False)  # u (c, d, m), sv (c, m)
        keep = (sv > 1e-6 * sv[:, :1]).double()  # (c, m) drop directions outside the union's span
        proj = torch.einsum("cdm,td->ctm", u, xd)  # (c, t, m)
        out.append((proj.square() * keep.unsqueeze(1)).sum(dim=-1) / x_sq)  # (c, t)
    return torch.cat(out)  # (s, t)


def greedy_gap(x: Tensor, bases: Tensor, k: int, scores: Tensor) -> dict[str, float]:
    """Greedy-vs-exhaustive routing gap on tokens ``x`` (t, d) with bases (e, d, r) and router ``scores`` (t, e).

    Returns ``mean`` and ``p95`` of ``F(S*) - F(S_greedy)`` and ``mismatch_frac``; NaNs when C(e, k) > MAX_SUBSETS.
    """
    e = bases.shape[0]
    if not 1 <= k <= e:
        raise ValueError(f"k={k} must be in 1..{e} (number of experts)")
    if math.comb(e, k) > MAX_SUBSETS:
        return {"mean": math.nan, "p95": math.nan, "mismatch_frac": math.nan}
    combos = list(itertools.combinations(range(e), k))
    subsets = torch.tensor(combos, dtype=torch.long)  # (s, k)
    energy = subset_energy(x, bases, subsets)  # (s, t)
    best = energy.max(dim=0).values  # (t,)
    lookup = {c: i for i, c in enumerate(combos)}
    greedy_sets = scores.detach().topk(k, dim=-1).indices.sort(dim=-1).values.cpu()  # (t, k)
    greedy_id = torch.tensor([lookup[tuple(row)] for row in greedy_sets.tolist()], dtype=torch.long)  # (t,)
    greedy = energy.gather(0, greedy_id.unsqueeze(0)).squeeze(0)  # (t,)
    gap = (best - greedy).clamp_min(0.0)  # (t,)
    return {
        "mean": float(gap.mean()),
        "p95": float(torch.quantile(gap, 0.95)),
        "mismatch_frac": float((gap > _MISMATCH_TOL).double().mean()),
    }


def _layer_index(name: str, fallback: int) -> int:
    match = re.search(r"blocks\.(\d+)\.", name)
    return int(match.group(1)) if match else fallback


def _moe_slots(net: nn.Module) -> list[tuple[str, MoEMlp]]:
    """(``layer{i}`` key, slot) of every MoE slot of ``net``, in module order."""
    slots = [(name, m) for name, m in net.named_modules() if isinstance(m, MoEMlp)]
    return [(f"layer{_layer_index(name, pos)}", m) for pos, (name, m) in enumerate(slots)]


@torch.no_grad()
def basis_coherence(net: nn.Module) -> dict[str, float]:
    """``layer{i}/coherence_max`` and ``layer{i}/coherence_mean`` of every eigen-routed slot, from its scored bases."""
    result: dict[str, float] = {}
    for key, slot in _moe_slots(net):
        if isinstance(slot.experts, EigenExperts):
            result[f"{key}/coherence_max"], result[f"{key}/coherence_mean"] = mutual_coherence(slot.experts.bases())
    return result


@torch.no_grad()
def collect_diagnostics(
    net: nn.Module, x: Tensor, sex: Tensor | None = None, max_tokens: int = 512
) -> dict[str, float]:
    """Run ``net`` once (eval, no grad) and return the diagnostics of every MoE slot as a flat dict.

    Keys: ``layer{i}/load_cv``, ``load_max_over_mean``, ``load_entropy``, ``routing_entropy`` for every MoE slot, and
    ``coherence_max``, ``coherence_mean``, ``greedy_gap_mean``, ``greedy_gap_p95``, ``greedy_mismatch`` for eigen
    slots (computed on at most ``max_tokens`` evenly spaced tokens), ``temperature`` for slots that learn it. Nets
    without MoE slots give an empty dict.
    """
    slots = _moe_slots(net)
    captured: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def hook_for(pos: int):
        def hook(module: nn.Module, args: tuple, output) -> None:
            if output.routing is not None:
                captured[pos] = (args[0].detach(), output.routing.expert_index, output.routing.probs)

        return hook

    handles = [m.register_forward_hook(hook_for(pos)) for pos, (_, m) in enumerate(slots)]
    was_training = net.training
    try:
        net.eval()
        net(x, sex=sex, return_routing=True)
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()

    result: dict[str, float] = basis_coherence(net)
    for pos, (key, slot) in enumerate(slots):
        if pos not in captured:
            continue
        tokens, expert_index, probs = captured[pos]
        load = load_stats(expert_index, slot.num_experts)
        result[f"{key}/load_cv"] = load["cv"]
        result[f"{key}/load_max_over_mean"] = load["max_over_mean"]
        result[f"{key}/load_entropy"] = load["entropy"]
        result[f"{key}/routing_entropy"] = routing_entropy(probs)
        if slot.cfg.temperature_mode == "learned":
            result[f"{key}/temperature"] = float(slot.temperature())
        if isinstance(slot.experts, EigenExperts):
            flat = tokens.reshape(-1, tokens.shape[-1])  # (b, n, d) -> (t, d)
            pick = torch.linspace(0, flat.shape[0] - 1, min(max_tokens, flat.shape[0])).round().long()
            sample = flat[pick]  # (t', d)
            gap = greedy_gap(sample, slot.experts.bases(), slot.cfg.top_k, slot.experts.scores(sample)[0])
            result[f"{key}/greedy_gap_mean"] = gap["mean"]
            result[f"{key}/greedy_gap_p95"] = gap["p95"]
            result[f"{key}/greedy_mismatch"] = gap["mismatch_frac"]
    return result

"""Routing diagnostics: load, entropy, mutual coherence, greedy-vs-exhaustive gap, and the collector."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from brainage.model import SFCN, BrainAgeViT, MoEConfig, collect_diagnostics
from brainage.model.diagnostics import greedy_gap, load_stats, mutual_coherence, routing_entropy

TINY = dict(img_size=(16, 16, 16), patch_size=8, embed_dim=32, depth=2, num_heads=4)


def _cosine_scores(x: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    return torch.einsum("td,edr->ter", x, bases).norm(dim=-1) / x.norm(dim=-1, keepdim=True)


def _brute_force_gap(x: torch.Tensor, bases: torch.Tensor, k: int, scores: torch.Tensor) -> torch.Tensor:
    """Per-token F(S*) - F(S_greedy) with projectors from the pseudo-inverse."""
    xd, vd = x.double(), bases.double()

    def energy(subset: tuple[int, ...], token: torch.Tensor) -> float:
        a = torch.cat([vd[e] for e in subset], dim=1)  # (d, k*r)
        proj = a @ torch.linalg.pinv(a) @ token
        return float(proj.square().sum() / token.square().sum())

    gaps = []
    for t in range(x.shape[0]):
        best = max(energy(s, xd[t]) for s in itertools.combinations(range(bases.shape[0]), k))
        greedy = tuple(sorted(scores[t].topk(k).indices.tolist()))
        gaps.append(best - energy(greedy, xd[t]))
    return torch.tensor(gaps)


def test_load_stats_and_entropy() -> None:
    idx = torch.tensor([[0, 1], [0, 1], [0, 2], [0, 3]])  # loads 4/8, 2/8, 1/8, 1/8
    stats = load_stats(idx, 4)
    load = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    assert math.isclose(stats["cv"], float(load.std(unbiased=False) / 0.25), rel_tol=1e-9)
    assert math.isclose(stats["max_over_mean"], 2.0)
    assert math.isclose(stats["entropy"], float(-(load * load.log()).sum()), rel_tol=1e-9)
    assert load_stats(torch.arange(8).reshape(4, 2), 8)["cv"] == 0.0
    assert math.isclose(routing_entropy(torch.full((5, 3, 8), 1 / 8)), math.log(8), rel_tol=1e-9)
    assert routing_entropy(torch.eye(4)) < 1e-12


def test_orthogonal_subspaces_have_zero_coherence_and_zero_gap() -> None:
    torch.manual_seed(0)
    bases = torch.eye(16).reshape(16, 4, 4).permute(1, 0, 2)  # (e=4, d=16, r=4) disjoint coordinate blocks
    assert mutual_coherence(bases) == (0.0, 0.0)
    x = torch.randn(64, 16)
    gap = greedy_gap(x, bases, 2, _cosine_scores(x, bases))
    assert gap["mean"] < 1e-12 and gap["p95"] < 1e-12 and gap["mismatch_frac"] == 0.0


def test_shared_direction_has_coherence_one() -> None:
    torch.manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(16, 5))
    bases = torch.stack([q[:, [0, 1]], q[:, [0, 2]], q[:, [3, 4]]])  # experts 0 and 1 share q0
    cmax, cmean = mutual_coherence(bases)
    assert math.isclose(cmax, 1.0, rel_tol=1e-6)
    assert math.isclose(cmean, 1.0 / 3.0, rel_tol=1e-6)  # pairs (0,1)=1, (0,2)=0, (1,2)=0


def test_greedy_can_be_suboptimal_under_coherence() -> None:
    e1, e2, e3 = torch.eye(3)
    bases = torch.stack([e1, (e1 + 0.1 * e2) / math.hypot(1, 0.1), e3]).unsqueeze(-1)  # (3, 3, 1)
    x = torch.tensor([[1.0, 0.0, 0.6]])
    scores = _cosine_scores(x, bases)
    assert scores[0].topk(2).indices.sort().values.tolist() == [0, 1]  # greedy takes the two coherent experts
    gap = greedy_gap(x, bases, 2, scores)
    assert math.isclose(gap["mean"], 1.0 - 1.0 / 1.36, rel_tol=1e-6)  # S* = {0, 2} captures all of x
    assert gap["mismatch_frac"] == 1.0


def test_greedy_gap_matches_brute_force_reference() -> None:
    torch.manual_seed(2)
    bases = torch.linalg.qr(torch.randn(5, 12, 3))[0]  # coherent random 3-dim subspaces of R^12
    x = torch.randn(40, 12)
    scores = _cosine_scores(x, bases)
    ref = _brute_force_gap(x, bases, 2, scores)
    got = greedy_gap(x, bases, 2, scores)
    assert math.isclose(got["mean"], float(ref.mean()), rel_tol=1e-6, abs_tol=1e-9)
    assert math.isclose(got["p95"], float(torch.quantile(ref, 0.95)), rel_tol=1e-6, abs_tol=1e-9)
    assert math.isclose(got["mismatch_frac"], float((ref > 1e-6).double().mean()))
    assert got["mean"] > 0  # this configuration is coherent enough for greedy to lose sometimes


def test_greedy_gap_skips_huge_searches() -> None:
    bases = torch.linalg.qr(torch.randn(40, 8, 1))[0]
    x = torch.randn(3, 8)
    assert math.isnan(greedy_gap(x, bases, 5, _cosine_scores(x, bases))["mean"])  # C(40, 5) > 5000


@pytest.mark.parametrize("router", ["eigen", "softmax"])
def test_collect_diagnostics_flat_dict(router: str) -> None:
    torch.manual_seed(3)
    net = BrainAgeViT(moe=MoEConfig(router=router, num_experts=4), moe_layers=[1], pool="cls", **TINY).train()
    diag = collect_diagnostics(net, torch.randn(2, 1, 16, 16, 16), max_tokens=8)
    assert net.training  # mode restored
    base = {"load_cv", "load_max_over_mean", "load_entropy", "routing_entropy"}
    eigen = {"coherence_max", "coherence_mean", "greedy_gap_mean", "greedy_gap_p95", "greedy_mismatch"}
    expected = base | eigen if router == "eigen" else base
    assert set(diag) == {f"layer1/{k}" for k in expected}
    assert all(isinstance(v, float) and math.isfinite(v) for v in diag.values())
    assert 0.0 <= diag["layer1/routing_entropy"] <= math.log(4) + 1e-9


def test_collect_diagnostics_empty_without_moe() -> None:
    assert collect_diagnostics(BrainAgeViT(mlp="dense", **TINY), torch.randn(1, 1, 16, 16, 16)) == {}
    sfcn = SFCN(channels=(2, 2, 2, 2, 2, 2))
    assert collect_diagnostics(sfcn, torch.randn(1, 1, 32, 32, 32)) == {}

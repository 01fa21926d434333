"""Capacity and routing of the ERMoE slot designs on token-regression toys (a first picture, not a model choice).

Each design of :class:`brainage.model.moe.MoEConfig` (ERMoE, Cheng et al., arXiv 2511.10971), the dense MLP and the
softmax top-k MoE with the Switch loss are trained as one MLP slot to map random tokens ``x ~ N(0, I_d)`` to a
teacher's output, at equal active width (d = 96, dense hidden 384, 8 experts, top-2 by default):
- "linear": ``y = A x`` with ``A ~ N(0, 1/d)`` (the rank test: a low-rank expert pair cannot represent it);
- "mixture": a piecewise-linear teacher with 4 pieces, ``y = A_c(x) x`` with ``c(x) = argmax_m g_m^T x`` (rewards a
  router that learns the partition).
Training: Adam (lr 1e-3 by default, the same for every design, cosine decay), 500 steps of 512 tokens drawn from
8192 training tokens; the QR retraction after every step; each slot's own aux loss (Switch loss, or the orthogonality
penalty when configured) is added. Reported on 4096 held-out tokens, mean +- std over seeds: R^2, mutual coherence of
the scored bases at init and after training (Su & Liu's theory: greedy routing is optimal at low coherence), load CV
(std / mean of the per-expert assignment fractions), routing entropy over ``log E`` (1 = uniform) and the learned
temperature. The last printed line is one JSON object with every number.

Run it under ``nice -n 10`` on a shared machine; it takes minutes on 2 cores. This toy says nothing about brain age:
the default design is chosen by the cross-validated comparison on an inner split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from brainage.model import Mlp, MoEConfig, MoEMlp, make_mlp, orthonormalize_  # noqa: E402
from brainage.model.diagnostics import greedy_gap, load_stats, mutual_coherence, routing_entropy  # noqa: E402
from brainage.model.moe_experts import EigenExperts  # noqa: E402

_LEARNED = dict(temperature_mode="learned")
DESIGNS: dict[str, MoEConfig | None] = {
    "dense": None,
    "softmax+switch": MoEConfig(router="softmax"),
    "lowrank (default)": MoEConfig(),
    "fullrank-energy": MoEConfig(design="fullrank", score="energy", **_LEARNED),
    "subbasis-random": MoEConfig(design="subbasis", **_LEARNED),
    "subbasis-random+penalty": MoEConfig(design="subbasis", orthogonality_weight=0.01, **_LEARNED),
    "subbasis-orthogonal": MoEConfig(design="subbasis", route_basis="orthogonal", **_LEARNED),
    "subbasis-orth-energy": MoEConfig(design="subbasis", route_basis="orthogonal", score="energy", **_LEARNED),
    "shared+subbasis-orth": MoEConfig(design="subbasis", route_basis="orthogonal", shared_expert=True, **_LEARNED),
}


def teacher(kind: str, dim: int, generator: torch.Generator):
    """A function (t, d) -> (t, d) with unit-scale outputs."""
    if kind == "linear":
        a = torch.randn(dim, dim, generator=generator) / math.sqrt(dim)  # (d, d)
        return lambda x: x @ a.t()
    if kind == "mixture":
        pieces = torch.randn(4, dim, dim, generator=generator) / math.sqrt(dim)  # (m, d, d)
        gate = torch.randn(4, dim, generator=generator)  # (m, d)
        return lambda x: torch.einsum("tij,tj->ti", pieces[(x @ gate.t()).argmax(dim=1)], x)  # (t, d)
    raise ValueError(f"teacher={kind!r} is not 'linear' or 'mixture'")


def coherence(slot: Mlp | MoEMlp) -> tuple[float, float]:
    if isinstance(slot, MoEMlp) and isinstance(slot.experts, EigenExperts):
        return mutual_coherence(slot.experts.bases())
    return math.nan, math.nan


def train_one(cfg: MoEConfig | None, kind: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    f = teacher(kind, args.dim, gen)
    x_train, x_test = torch.randn(8192, args.dim, generator=gen), torch.randn(4096, args.dim, generator=gen)
    y_train, y_test = f(x_train), f(x_test)
    torch.manual_seed(seed)
    cfg = None if cfg is None else dataclasses.replace(cfg, num_experts=args.experts, top_k=args.top_k)
    slot = make_mlp(args.dim, 4 * args.dim, 0.0, cfg)
    coh0 = coherence(slot)
    opt = torch.optim.Adam(slot.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    for _ in range(args.steps):
        idx = torch.randint(0, len(x_train), (512,), generator=gen)  # (512,)
        out = slot(x_train[idx].unsqueeze(0))  # (1, 512, d)
        loss = (out.out.squeeze(0) - y_train[idx]).square().mean() + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        orthonormalize_(slot)
    with torch.no_grad():
        out = slot(x_test.unsqueeze(0), return_routing=True)  # (1, t, d)
        r2 = 1 - float((out.out.squeeze(0) - y_test).square().mean() / y_test.var(dim=0).mean())
    result = {"r2": r2, "coherence_max_init": coh0[0], "coherence_mean_init": coh0[1]}
    result["coherence_max"], result["coherence_mean"] = coherence(slot)
    if out.routing is not None:
        result["load_cv"] = load_stats(out.routing.expert_index, args.experts)["cv"]
        result["routing_entropy_rel"] = routing_entropy(out.routing.probs) / math.log(args.experts)
        result["top_gate"] = float(out.routing.gates[..., 0].mean())
        result["temperature"] = float(slot.temperature())
        if isinstance(slot.experts, EigenExperts):
            sample = x_test[:512]
            with torch.no_grad():
                gap = greedy_gap(sample, slot.experts.bases(), args.top_k, slot.experts.scores(sample)[0])
            result["greedy_gap_mean"] = gap["mean"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example:\n  nice -n 10 python benchmarks/moe_capacity.py --seeds 3")
    parser.add_argument("--dim", type=int, default=96, help="token width d (default 96)")
    parser.add_argument("--experts", type=int, default=8, help="number of experts (default 8)")
    parser.add_argument("--top-k", type=int, default=2, help="experts per token (default 2)")
    parser.add_argument("--steps", type=int, default=500, help="Adam steps (default 500)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per design and teacher (default 3)")
    parser.add_argument("--teachers", nargs="+", default=["linear", "mixture"], help="linear and/or mixture")
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS), metavar="DESIGN",
                        help=f"subset of {list(DESIGNS)}")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(args.threads, os.cpu_count() or 1)))

    print(f"d={args.dim} experts={args.experts} top_k={args.top_k} steps={args.steps} lr={args.lr} "
          f"seeds={args.seeds} threads={torch.get_num_threads()}")
    header = (f"{'teacher':>8} {'design':>24} {'R2':>15} {'coh max init->end':>18} {'coh mean init->end':>19} "
              f"{'load CV':>7} {'H/logE':>6} {'top gate':>8} {'tau':>6} {'gap':>6} {'s':>4}")
    print(header)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for kind in args.teachers:
        for name in args.designs:
            start = time.perf_counter()
            runs = [train_one(DESIGNS[name], kind, seed, args) for seed in range(args.seeds)]
            keys = runs[0].keys()
            mean = {k: statistics.fmean(r[k] for r in runs) for k in keys}
            spread = statistics.stdev(r["r2"] for r in runs) if len(runs) > 1 else 0.0
            summary.setdefault(kind, {})[name] = {**{k: round(v, 4) for k, v in mean.items()},
                                                  "r2_std": round(spread, 4), "r2_seeds": [round(r["r2"], 4) for r in runs]}

            def fmt(key: str, width: int = 6, digits: int = 3) -> str:
                value = mean.get(key, math.nan)
                return f"{'-':>{width}}" if math.isnan(value) else f"{value:{width}.{digits}f}"

            print(f"{kind:>8} {name:>24} {mean['r2']:7.3f} +- {spread:5.3f} "
                  f"{fmt('coherence_max_init', 7, 2)} -> {fmt('coherence_max', 7, 2)} "
                  f"{fmt('coherence_mean_init', 8, 2)} -> {fmt('coherence_mean', 7, 2)} "
                  f"{fmt('load_cv', 7, 2)} {fmt('routing_entropy_rel', 6, 3)} {fmt('top_gate', 8, 2)} "
                  f"{fmt('temperature', 6, 3)} {fmt('greedy_gap_mean', 6, 3)} {time.perf_counter() - start:4.0f}",
                  flush=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark the ERMoE slot designs against a dense MLP of equal active size and a mask-all-experts reference.

Top-2 of 8 experts with sparse grouped-GEMM dispatch (:mod:`brainage.model.dispatch`); every MoE has the dense MLP's
active hidden width (``mlp_ratio * d``). Implementations, all measured side by side in one process:
- "dense": the ViT MLP with hidden width ``4 * d``;
- the ERMoE designs of :class:`brainage.model.moe.MoEConfig` (Cheng et al., arXiv 2511.10971): "ermoe" (design
  "lowrank", the current default), "fullrank" (r = d, energy score, learned temperature), "subbasis" (full-rank
  experts, router on ``d // E`` orthogonal columns per expert, learned temperature), "sub-half" (the same at expert
  rank d / 2) and "shared-sub" (subbasis plus an always-on shared expert, hidden width split in thirds);
- "softmax": plain experts with a linear softmax router (the baseline MoE);
- "mask-all", the top-k path of the public EMoE code (arXiv 2601.12137) on the "ermoe" experts: for each of the k
  slots and each of the E experts, run the expert on every token and multiply by the 0/1 mask times the gate (k*E
  expert passes); "mask-E", the cheapest run-everything form: each expert once on every token, weighted by its gate.

Times are medians after warm-up in one process; the implementations run interleaved round by round and ratios are
medians of the per-round ratios, which keeps them stable on a shared machine. The last printed line is one JSON
object with ``moe_vs_dense`` ("ermoe" fwd+bwd time over dense at the largest token count, lower is better),
``<design>_vs_dense`` for every other MoE, and ``maskall_vs_moe`` (higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from brainage.model import Mlp, MoEConfig, MoEMlp  # noqa: E402


def _expert_on_all_tokens(moe: MoEMlp, tokens: Tensor, e: int) -> Tensor:
    """Eigen expert ``e`` of ``moe`` applied to every token: (t, d) -> (t, d)."""
    experts = moe.experts
    w1 = experts.u[e] * experts.spectrum()[e]  # (h, r) = U diag(s)
    hidden = F.gelu(F.linear(tokens @ experts.v[e], w1, experts.b1[e]))  # (t, r) -> (t, h)
    return F.linear(hidden, experts.w2[e], experts.b2[e])  # (t, d)


def mask_all_forward(moe: MoEMlp, x: Tensor, per_slot: bool) -> Tensor:
    """Run the experts of an eigen ``moe`` slot on every token and multiply by the 0/1 routing mask times the gate.

    ``per_slot=True`` is the EMoE public code's top-k path: a loop over the k slots and the E experts, each running
    the expert on all tokens, skipping only (slot, expert) pairs whose mask is empty (a host sync each).
    ``per_slot=False`` runs each expert once on all tokens with its summed gate weight (the cheapest mask-all form).
    """
    b, n, d = x.shape
    tokens = x.reshape(b * n, d)  # (t, d)
    scores, _ = moe.experts.scores(tokens)  # (t, e)
    probs = (scores / moe.cfg.temperature).softmax(dim=-1)  # (t, e)
    top_p, idx = probs.topk(moe.cfg.top_k, dim=-1)  # (t, k)
    gates = top_p / top_p.sum(-1, keepdim=True)  # (t, k)
    out = torch.zeros_like(tokens)  # (t, d)
    if per_slot:
        for j in range(moe.cfg.top_k):
            for e in range(moe.num_experts):
                mask = idx[:, j] == e  # (t,)
                if mask.any():
                    weight = (mask * gates[:, j]).unsqueeze(1)  # (t, 1)
                    out = out + _expert_on_all_tokens(moe, tokens, e) * weight
    else:
        weight = torch.zeros_like(probs).scatter(1, idx, gates)  # (t, e)
        for e in range(moe.num_experts):
            out = out + _expert_on_all_tokens(moe, tokens, e) * weight[:, e : e + 1]
    return out.reshape(b, n, d)


def time_paired(
    fns: dict[str, Callable[[], None]], reps: int, warmup: int, sync: Callable[[], None],
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per run of each function, interleaved round by round so that load from other processes hits every
    implementation alike; ``warmup`` untimed rounds first. ``clock``: wall time, or the process's CPU time, which
    time spent waiting for a core on a loaded machine does not inflate."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + reps):
        for name, fn in fns.items():
            sync()
            start = clock()
            fn()
            sync()
            if round_ >= warmup:
                times[name].append(clock() - start)
    return times


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of the per-round time ratio."""
    return statistics.median(a / b for a, b in zip(num, den))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  python benchmarks/moe_layer.py                 # CPU, 2 threads, 8x216 and 2x1200 tokens, d=384\n"
            "  python benchmarks/moe_layer.py --quick         # smoke test, tiny sizes\n"
            "  python benchmarks/moe_layer.py --threads 1 --clock cpu --dim 96 --tokens 8x392   # on a loaded machine\n"
            "  python benchmarks/moe_layer.py --device cuda --bf16 --compile --tokens 16x1200 --dim 768"
        ),
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repetition (smoke test)")
    parser.add_argument("--dim", type=int, default=384, help="token width d (default 384)")
    parser.add_argument("--tokens", nargs="+", default=["8x216", "2x1200"], help="batch x tokens cases")
    parser.add_argument("--experts", type=int, default=8, help="number of experts (default 8)")
    parser.add_argument("--top-k", type=int, default=2, help="experts per token (default 2)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (median; default 5)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2, capped at the cores)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile every implementation")
    parser.add_argument("--no-mask", action="store_true", help="skip the slow mask-all references")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time (default) or process CPU time (CPU only, with --threads 1: robust to other "
                             "jobs on a shared machine)")
    args = parser.parse_args(argv)

    if args.quick:
        args.dim, args.tokens, args.reps = 48, ["2x16", "2x48"], 1
    torch.set_num_threads(max(1, min(args.threads, os.cpu_count() or 1)))
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        parser.error("--clock cpu needs --device cpu and --threads 1 (CPU time of several threads includes spinning)")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else nullcontext()
    hidden = 4 * args.dim
    e, k = args.experts, args.top_k
    designs = {
        "ermoe": MoEConfig(num_experts=e, top_k=k),
        "fullrank": MoEConfig(num_experts=e, top_k=k, design="fullrank", score="energy", temperature_mode="learned"),
        "subbasis": MoEConfig(num_experts=e, top_k=k, design="subbasis", route_basis="orthogonal",
                              temperature_mode="learned"),
        "sub-half": MoEConfig(num_experts=e, top_k=k, design="subbasis", rank=args.dim // 2, route_basis="orthogonal",
                              temperature_mode="learned"),
        "shared-sub": MoEConfig(num_experts=e, top_k=k, design="subbasis", route_basis="orthogonal",
                                temperature_mode="learned", shared_expert=True),
        "softmax": MoEConfig(num_experts=e, top_k=k, router="softmax"),
    }
    dense = Mlp(args.dim, hidden).to(device)
    slots = {name: MoEMlp(args.dim, hidden, moe=cfg).to(device) for name, cfg in designs.items()}
    moe = slots["ermoe"]
    impls: dict[str, Callable[[Tensor], Tensor]] = {"dense": lambda x: dense(x).out}
    impls.update({name: (lambda x, slot=slot: slot(x).out) for name, slot in slots.items()})
    if not args.no_mask:
        impls["mask-all"] = lambda x: mask_all_forward(moe, x, per_slot=True)
        impls["mask-E"] = lambda x: mask_all_forward(moe, x, per_slot=False)
    if args.compile:
        impls = {k: torch.compile(f) for k, f in impls.items()}

    print(f"threads={torch.get_num_threads()} device={device} bf16={args.bf16} compile={args.compile} "
          f"clock={args.clock} d={args.dim} experts={e} top_k={k} dense hidden={hidden}")  # fmt: skip
    for name, slot in slots.items():
        ex = slot.experts
        print(f"  {name}: expert hidden={ex.w2.shape[-1]} rank={ex.v.shape[-1] if hasattr(ex, 'v') else '-'} "
              f"routing rank={getattr(ex, 'route_rank', '-')} shared={slot.shared is not None}")
    print(f"{'tokens':>9} {'impl':>10} {'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd/dense':>10} {'f+b/dense':>10}")
    ratios: dict[str, float] = {}
    for case in args.tokens:
        b, n = (int(v) for v in case.split("x"))
        x = torch.randn(b, n, args.dim, device=device, requires_grad=True)
        grad = torch.randn(b, n, args.dim, device=device)
        fns: dict[str, Callable[[], None]] = {}
        for name, fn in impls.items():

            def fwd(fn=fn) -> None:
                with torch.no_grad(), autocast:
                    fn(x)

            def fwd_bwd(fn=fn) -> None:
                with autocast:
                    out = fn(x)
                out.backward(grad.to(out.dtype))

            fns[f"{name}/fwd"], fns[f"{name}/fwd+bwd"] = fwd, fwd_bwd
        times = time_paired(fns, args.reps, 1 if args.quick else 2, sync, clock)
        for name in impls:
            tf, tfb = times[f"{name}/fwd"], times[f"{name}/fwd+bwd"]
            print(f"{case:>9} {name:>10} {statistics.median(tf) * 1e3:9.1f} {statistics.median(tfb) * 1e3:11.1f} "
                  f"{paired_ratio(tf, times['dense/fwd']):10.2f} {paired_ratio(tfb, times['dense/fwd+bwd']):10.2f}")
        ratios = {
            "moe_vs_dense": paired_ratio(times["ermoe/fwd+bwd"], times["dense/fwd+bwd"]),
            **{f"{name.replace('-', '_')}_vs_dense": paired_ratio(times[f"{name}/fwd+bwd"], times["dense/fwd+bwd"])
               for name in slots if name != "ermoe"},
            "moe_vs_dense_fwd": paired_ratio(times["ermoe/fwd"], times["dense/fwd"]),
        }
        if not args.no_mask:
            ratios.update({
                "maskall_vs_moe": paired_ratio(times["mask-all/fwd+bwd"], times["ermoe/fwd+bwd"]),
                "maskall_vs_moe_fwd": paired_ratio(times["mask-all/fwd"], times["ermoe/fwd"]),
                "maskE_vs_moe": paired_ratio(times["mask-E/fwd+bwd"], times["ermoe/fwd+bwd"]),
            })
    last = {k: round(v, 3) for k, v in ratios.items()}
    last["tokens"] = args.tokens[-1]
    print(json.dumps(last))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Sparse token dispatch for mixture-of-experts layers, with no host synchronisation.

Recipe (MegaBlocks arXiv 2211.15841, torchtitan, performance notes section 1): argsort the flat expert ids, gather
the tokens in expert order, run one grouped GEMM (``torch.nn.functional.grouped_mm`` with int32 group ends built on
the device), and scatter the results back with ``index_add`` weighted by the gates. No token is dropped, and every
expert stays in the autograd graph even when its group is empty, so DDP needs no ``find_unused_parameters``.

In torch 2.13 the fake kernel of ``grouped_mm`` accepts bf16 only; fp32 goes through a thin custom op so that
``torch.compile`` can still trace the layer. ``grouped_mm`` needs 16-byte aligned strides (widths that are multiples
of 4 in fp32, of 8 in bf16) and runs in fp32, bf16 and fp16 only. When a shape or dtype does not allow it, or when
``impl="loop"`` is asked for, :func:`grouped_linear` falls back to a loop over contiguous per-expert slices; that
fallback reads the group sizes on the host (one sync) and is therefore not ``torch.compile(fullgraph=True)``-friendly.

Letters: t tokens, k experts per token, e experts, i input width, o output width.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Dispatch", "DispatchImpl", "plan_dispatch", "grouped_linear", "combine", "compute_dtype", "router_dtype"]

DispatchImpl = Literal["auto", "grouped_mm", "loop"]

_HAS_GROUPED_MM = hasattr(F, "grouped_mm")
_GROUPED_MM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # e.g. float64 takes the loop


class Dispatch(NamedTuple):
    """Where each (token, slot) pair goes, in expert-sorted order."""

    token: Tensor  # (t*k,) int64 source token of each sorted row
    expert: Tensor  # (t*k,) int64 expert of each sorted row (non-decreasing)
    gate: Tensor  # (t*k,) float32 gate of each sorted row
    offs: Tensor  # (e,) int32 cumulative group ends, offs[-1] == t*k


def plan_dispatch(expert_index: Tensor, gates: Tensor, num_experts: int) -> Dispatch:
    """Sort the (token, slot) pairs by expert. ``expert_index``, ``gates``: (t, k)."""
    k = expert_index.shape[1]
    flat = expert_index.reshape(-1)  # (t*k,)
    order = torch.argsort(flat, stable=True)  # (t*k,)
    expert = flat.index_select(0, order)  # (t*k,) sorted expert ids
    # searchsorted on the sorted ids gives the group ends with static shape (e,): no bincount, no sync
    ids = torch.arange(num_experts, device=flat.device, dtype=expert.dtype)  # (e,)
    offs = torch.searchsorted(expert, ids, right=True, out_int32=True)  # (e,)
    gate = gates.reshape(-1).index_select(0, order)  # (t*k,)
    return Dispatch(token=order // k, expert=expert, gate=gate, offs=offs)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype matmuls run in: the autocast dtype when autocast is on for ``x``'s device, else ``x.dtype``."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def router_dtype(x: Tensor) -> torch.dtype:
    """The dtype router scores run in: float32, or float64 for float64 inputs (never lower than float32)."""
    return torch.promote_types(x.dtype, torch.float32)


@torch.library.custom_op("brainage::grouped_mm", mutates_args=())
def _grouped_mm_op(mat_a: Tensor, mat_b: Tensor, offs: Tensor) -> Tensor:
    """``F.grouped_mm`` as an opaque custom op. In torch 2.13 the fake (meta) kernel of ``grouped_mm`` accepts bf16
    only, so ``torch.compile`` cannot trace the fp32 CPU path; wrapping it lets compiled graphs call the eager kernel.
    """
    return F.grouped_mm(mat_a, mat_b, offs=offs)


@_grouped_mm_op.register_fake
def _(mat_a: Tensor, mat_b: Tensor, offs: Tensor) -> Tensor:
    if mat_b.dim() == 3:  # (t, i) x (e, i, o) -> (t, o)
        return mat_a.new_empty(mat_a.shape[0], mat_b.shape[-1])
    return mat_a.new_empty(offs.shape[0], mat_a.shape[0], mat_b.shape[1])  # (i, t) x (t, o) -> (e, i, o)


def _grouped_mm_setup(ctx, inputs: tuple[Tensor, Tensor, Tensor], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _grouped_mm_backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
    mat_a, mat_b, offs = ctx.saved_tensors  # (t, i), (e, i, o), (e,)
    grad = grad.contiguous()  # (t, o)
    grad_a = _grouped_mm_op(grad, mat_b.transpose(1, 2), offs)  # (t, o) x (e, o, i) -> (t, i)
    grad_b = _grouped_mm_op(mat_a.t(), grad, offs)  # (i, t) x (t, o) -> (e, i, o), zero for empty groups
    return grad_a, grad_b, None


_grouped_mm_op.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


def _aligned(*tensors: Tensor) -> bool:
    """True when every non-unit stride of every tensor is a multiple of 16 bytes (grouped_mm requirement)."""
    for t in tensors:
        size = t.element_size()
        if any((s * size) % 16 for s, n in zip(t.stride(), t.shape) if s != 1 and n > 1):
            return False
    return True


def grouped_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, plan: Dispatch, impl: DispatchImpl = "auto"
) -> Tensor:
    """Per-expert ``x_g @ weight[g].T + bias[g]`` over the expert-sorted rows of ``x``.

    Args:
        x: (t*k, i) rows sorted by expert as in ``plan``.
        weight: (e, o, i), the layout of ``nn.Linear`` weights stacked over experts.
        bias: (e, o) or None.
        plan: from :func:`plan_dispatch`.
        impl: "grouped_mm" (error when impossible), "loop" (per-expert slices; one host sync) or "auto".

    Returns:
        (t*k, o) in ``x``'s dtype.
    """
    w_t = weight.to(x.dtype).transpose(1, 2)  # (e, i, o) view: grouped_mm is fastest on this column-major layout
    out_aligned = (weight.shape[1] * x.element_size()) % 16 == 0  # the (t*k, o) output's row stride
    supported = x.dtype in _GROUPED_MM_DTYPES and _aligned(x, w_t) and out_aligned
    use_grouped = impl == "grouped_mm" or (impl == "auto" and _HAS_GROUPED_MM and supported)
    if use_grouped:
        # native op for bf16 (its fake kernel traces); the custom-op wrapper for other dtypes, also in eager mode: its
        # backward makes a stride-0 gradient contiguous, which torch 2.13's native CPU backward rejects
        gmm = F.grouped_mm if x.dtype == torch.bfloat16 else _grouped_mm_op
        y = gmm(x, w_t, offs=plan.offs)  # (t*k, o)
    else:
        counts = torch.diff(plan.offs, prepend=plan.offs.new_zeros(1))  # (e,)
        pieces = torch.split(x, counts.tolist())  # host sync: fallback only
        y = torch.cat([p @ w_t[g] for g, p in enumerate(pieces)])  # (t*k, o); empty groups stay in the graph
    if bias is not None:
        y = y + bias.to(y.dtype).index_select(0, plan.expert)  # (t*k, o)
    return y


def combine(y: Tensor, plan: Dispatch, num_tokens: int) -> Tensor:
    """Scatter the expert outputs ``y`` (t*k, o) back to (t, o), weighted by the gates."""
    weighted = y * plan.gate.to(y.dtype).unsqueeze(1)  # (t*k, o)
    out = y.new_zeros(num_tokens, y.shape[1])  # (t, o)
    return out.index_add(0, plan.token, weighted)

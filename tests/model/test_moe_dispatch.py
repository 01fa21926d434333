"""Sparse dispatch of the MoE slot against a loop-over-experts reference, grouped_mm vs loop, compile, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from brainage.model import MoEConfig, MoEMlp
from brainage.model.dispatch import grouped_linear, plan_dispatch
from brainage.model.moe_experts import EigenExperts


def reference_forward(slot: MoEMlp, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop over experts; each expert runs only on its tokens. Returns (out (b, n, d), expert_index (t, k))."""
    b, n, d = x.shape
    tokens = x.reshape(-1, d)
    ex = slot.experts
    if isinstance(ex, EigenExperts):
        z = torch.einsum("td,edr->ter", tokens, ex.v)  # independent score computation
        scores = z.norm(dim=-1) / tokens.norm(dim=-1, keepdim=True)
    else:
        scores = slot.router(tokens)
    probs = (scores / slot.cfg.temperature).softmax(-1)
    top_p, idx = probs.topk(slot.cfg.top_k, dim=-1)
    gates = top_p / top_p.sum(-1, keepdim=True)
    out = torch.zeros_like(tokens)
    for e in range(slot.num_experts):
        hit = idx == e  # (t, k)
        rows = hit.any(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        xe = tokens[rows]
        if isinstance(ex, EigenExperts):
            w1 = ex.u[e] @ torch.diag(ex.log_s[e].exp()) @ ex.v[e].t()  # (h, d) = U diag(s) V^T
        else:
            w1 = ex.w1[e]
        y = F.linear(F.gelu(F.linear(xe, w1, ex.b1[e])), ex.w2[e], ex.b2[e])
        out[rows] += y * (gates[rows] * hit[rows]).sum(dim=1, keepdim=True)
    return out.reshape(b, n, d), idx


def _silence_last_expert(slot: MoEMlp, x: torch.Tensor) -> torch.Tensor:
    """Make the last eigen expert's basis orthogonal to the inputs, so it receives zero tokens."""
    d = x.shape[-1]
    r = slot.experts.v.shape[-1]
    with torch.no_grad():
        slot.experts.v[-1].zero_()
        slot.experts.v[-1][d - r :, :] = torch.eye(r)  # spans the last r coordinates
        x = x.clone()
        x[..., d - r :] = 0.0  # inputs live in the first d - r coordinates
    return x


@pytest.mark.parametrize("router", ["eigen", "softmax", "emoe"])
@pytest.mark.parametrize("impl", ["auto", "loop"])
def test_dispatch_matches_reference(router: str, impl: str) -> None:
    torch.manual_seed(1)
    slot = MoEMlp(16, 48, moe=MoEConfig(router=router, num_experts=4, top_k=2, dispatch=impl))
    for trial in range(3):  # fresh random inputs
        x = torch.randn(3, 7, 16)
        if router == "eigen" and trial == 2:
            x = _silence_last_expert(slot, x)
        got = slot(x, return_routing=True)
        want, idx = reference_forward(slot, x)
        assert_close(got.out, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(got.routing.expert_index.reshape(-1, 2), idx)
        assert_close(got.routing.gates.sum(-1), torch.ones(3, 7))
        if router == "eigen" and trial == 2:
            assert not (idx == 3).any(), "the silenced expert must get zero tokens"


def test_grouped_mm_equals_loop_with_empty_groups() -> None:
    torch.manual_seed(2)
    t, k, e, i, o = 11, 2, 5, 8, 12
    expert_index = torch.tensor([[0, 2], [2, 0], [4, 2]] * 3 + [[0, 4], [4, 0]])  # experts 1 and 3 get nothing
    gates = torch.rand(t, k)
    plan = plan_dispatch(expert_index, gates, e)
    assert plan.offs.dtype == torch.int32
    assert plan.offs.tolist() == [8, 8, 17, 17, 22]
    x = torch.randn(t * k, i)
    w = torch.randn(e, o, i, requires_grad=True)
    b = torch.randn(e, o, requires_grad=True)
    outs, grads = [], []
    for impl in ("grouped_mm", "loop"):
        y = grouped_linear(x, w, b, plan, impl)
        y.backward(torch.ones_like(y))
        outs.append(y.detach())
        grads.append((w.grad.clone(), b.grad.clone()))
        w.grad, b.grad = None, None
    assert_close(outs[0], outs[1])
    assert_close(grads[0][0], grads[1][0])
    assert_close(grads[0][1], grads[1][1])
    assert grads[0][0][1].abs().sum() == 0 and grads[0][0][3].abs().sum() == 0  # empty groups: zero, not None
    rows = torch.arange(8)  # group 0 = rows 0..7 of the sorted order
    assert_close(outs[0][rows], x[rows] @ w[0].detach().t() + b[0].detach())


def test_grouped_mm_backward_takes_an_expanded_gradient() -> None:
    """`.sum()` hands back a stride-0 gradient; torch 2.13's native grouped_mm backward rejects it on CPU ("Invalid
    strides/sizes"), which is why eager fp32 goes through the custom op that makes it contiguous."""
    torch.manual_seed(6)
    plan = plan_dispatch(torch.tensor([[0, 1], [1, 2], [2, 0], [0, 2]]), torch.rand(4, 2), 3)
    grads = []
    for impl in ("grouped_mm", "loop"):
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(7), requires_grad=True)
        w = torch.randn(3, 32, 16, generator=torch.Generator().manual_seed(8), requires_grad=True)
        grouped_linear(x, w, None, plan, impl).sum().backward()
        grads.append((x.grad, w.grad))
    assert_close(grads[0][0], grads[1][0])
    assert_close(grads[0][1], grads[1][1])


@pytest.mark.parametrize("router", ["eigen", "softmax", "emoe"])
def test_every_parameter_has_grad_even_with_an_idle_expert(router: str) -> None:
    torch.manual_seed(3)
    slot = MoEMlp(16, 32, moe=MoEConfig(router=router, num_experts=4, top_k=1))
    x = torch.randn(2, 5, 16)
    if router == "eigen":
        x = _silence_last_expert(slot, x)
    out = slot(x, return_routing=True)
    (out.out.square().sum() + out.aux_loss).backward()
    missing = [name for name, p in slot.named_parameters() if p.grad is None]
    assert missing == []
    if router == "eigen":
        assert not (out.routing.expert_index == 3).any()
        assert slot.experts.w2.grad[3].abs().sum() == 0  # idle expert: zero gradient, still in the graph


@pytest.mark.parametrize("router", ["eigen", "softmax", "emoe"])
def test_every_parameter_gets_nonzero_grad_with_enough_tokens(router: str) -> None:
    torch.manual_seed(4)
    slot = MoEMlp(16, 32, moe=MoEConfig(router=router, num_experts=4, top_k=2, temperature=1.0))
    out = slot(torch.randn(4, 64, 16), return_routing=True)
    assert set(out.routing.expert_index.unique().tolist()) == {0, 1, 2, 3}
    (out.out.square().sum() + out.aux_loss).backward()
    zero = [n for n, p in slot.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert zero == []


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_fullgraph_cpu(backend: str) -> None:
    torch.manual_seed(5)
    slot = MoEMlp(16, 32, moe=MoEConfig(num_experts=4, top_k=2))
    x = torch.randn(2, 6, 16, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(slot, fullgraph=True, backend=backend)
    got = compiled(x, return_routing=True)
    want = slot(x, return_routing=True)
    assert_close(got.out, want.out)
    assert torch.equal(got.routing.expert_index, want.routing.expert_index)
    got.out.sum().backward()
    assert slot.experts.v.grad is not None

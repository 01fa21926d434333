"""MoE slot: orthonormality under training, argument validation, Switch loss, router variants, rank default."""

from __future__ import annotations

import math

import pytest
import torch

from brainage.model import BrainAgeViT, Mlp, MoEConfig, MoEMlp, make_mlp, orthonormalize_, switch_load_balancing_loss
from brainage.model.moe import default_eigen_rank, expert_orthogonality_penalty


def _ortho_error(m: torch.Tensor) -> float:
    """max over experts of ||M^T M - I||_F for (e, n, r)."""
    eye = torch.eye(m.shape[-1])
    return float((m.transpose(-2, -1) @ m - eye).norm(dim=(-2, -1)).max())


@pytest.mark.parametrize("retract", [True, False])
def test_bases_stay_orthonormal_over_50_adamw_steps(retract: bool) -> None:
    torch.manual_seed(0)
    slot = MoEMlp(16, 64, moe=MoEConfig(num_experts=4, top_k=2, rank=8, temperature=0.5))
    v0 = slot.experts.v.detach().clone()
    opt = torch.optim.AdamW(slot.parameters(), lr=1e-2)
    x = torch.randn(4, 16, 16)
    target = torch.tanh(x.flip(-1))
    losses = []
    for _ in range(50):
        loss = (slot(x).out - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if retract:
            orthonormalize_(slot)
        losses.append(float(loss.detach()))
    assert (slot.experts.v.detach() - v0).abs().max() > 1e-2  # the bases did move
    assert losses[-1] < losses[0]
    errors = (_ortho_error(slot.experts.u.detach()), _ortho_error(slot.experts.v.detach()))
    if retract:
        assert max(errors) < 1e-4, errors
    else:  # without the retraction AdamW leaves the Stiefel manifold: the test above is not vacuous
        assert max(errors) > 1e-3, errors


def test_orthonormalize_is_identity_on_orthonormal_and_covers_emoe() -> None:
    torch.manual_seed(1)
    net = BrainAgeViT(img_size=(16, 16, 16), embed_dim=32, depth=2, num_heads=4, moe=MoEConfig(router="emoe"))
    q = net.blocks[0].mlp.router.q
    before = q.detach().clone()
    orthonormalize_(net)
    torch.testing.assert_close(q.detach(), before, atol=1e-5, rtol=0)  # sign fix: retraction is idempotent
    with torch.no_grad():
        q.add_(0.1 * torch.randn_like(q))
    orthonormalize_(net)
    assert _ortho_error(q.detach().unsqueeze(0)) < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "value"),
    [
        (dict(top_k=9, num_experts=8), "top_k=9"),
        (dict(top_k=0), "top_k=0"),
        (dict(temperature=0.0), "temperature=0.0"),
        (dict(temperature=-1.0), "temperature=-1.0"),
        (dict(router="dense"), "router='dense'"),
        (dict(score="l2"), "score='l2'"),
        (dict(num_experts=0, top_k=0), "num_experts=0"),
        (dict(rank=0), "rank=0"),
        (dict(orthogonality_weight=-1.0), "orthogonality_weight=-1.0"),
    ],
)
def test_bad_config_raises_naming_value(kwargs: dict, value: str) -> None:
    with pytest.raises(ValueError, match=value.replace("(", r"\(")):
        MoEConfig(**kwargs)


def test_bad_slot_args_raise() -> None:
    with pytest.raises(ValueError, match="hidden_dim=30"):
        MoEMlp(16, 30, moe=MoEConfig(top_k=4))
    with pytest.raises(ValueError, match="rank=64"):
        MoEMlp(16, 64, moe=MoEConfig(rank=64))


def test_dense_and_moe_share_signature_and_active_size() -> None:
    dense, moe = make_mlp(24, 96), make_mlp(24, 96, 0.0, MoEConfig(num_experts=4, top_k=2))
    assert isinstance(dense, Mlp) and isinstance(moe, MoEMlp)
    assert moe.experts.w2.shape == (4, 24, 48)  # expert hidden = hidden_dim / top_k
    x = torch.randn(2, 3, 24)
    for slot in (dense, moe):
        out = slot(x, return_routing=True)
        assert out.out.shape == x.shape and out.aux_loss.shape == ()
    assert dense(x, return_routing=True).routing is None
    assert moe(x).routing is None


def test_default_rank_equalises_compute() -> None:
    d, hidden, e, k = 384, 1536, 8, 2
    r = default_eigen_rank(d, hidden, e)
    assert r == 128
    macs_moe = e * d * r + k * (r * hidden // k + hidden // k * d)
    assert macs_moe == 2 * d * hidden  # routing included, equal to the dense MLP
    assert MoEMlp(d, hidden).experts.v.shape == (e, d, r)


def test_switch_loss_convention() -> None:
    e, t, k = 8, 64, 2
    uniform = torch.full((t, e), 1.0 / e)
    balanced = torch.arange(t * k).reshape(t, k) % e
    assert math.isclose(float(switch_load_balancing_loss(uniform, balanced, e)), 1.0, rel_tol=1e-6)
    collapsed_probs = torch.zeros(t, e)
    collapsed_probs[:, :2] = 0.5
    collapsed = torch.tensor([[0, 1]]).expand(t, k)
    assert math.isclose(float(switch_load_balancing_loss(collapsed_probs, collapsed, e)), e / 2, rel_tol=1e-6)


def test_softmax_router_slot_returns_weighted_switch_loss_at_uniform_routing() -> None:
    slot = MoEMlp(16, 32, moe=MoEConfig(router="softmax", num_experts=4, top_k=2, switch_loss_weight=0.5))
    with torch.no_grad():
        slot.router.weight.zero_()  # uniform router probabilities
    out = slot(torch.randn(2, 10, 16), return_routing=True)
    torch.testing.assert_close(out.routing.probs, torch.full((2, 10, 4), 0.25))
    assert math.isclose(out.aux_loss.item(), 0.5, rel_tol=1e-6)


def test_eigen_has_no_aux_loss_by_default_and_orthogonality_penalty_when_asked() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 5, 16)
    assert MoEMlp(16, 32, moe=MoEConfig(num_experts=4))(x).aux_loss.item() == 0.0
    slot = MoEMlp(16, 32, moe=MoEConfig(num_experts=4, rank=4, orthogonality_weight=2.0))
    v = slot.experts.v.detach()
    brute = sum(float((v[i].t() @ v[j]).square().sum()) for i in range(4) for j in range(4) if i != j)
    assert math.isclose(float(expert_orthogonality_penalty(v)), brute, rel_tol=1e-4)
    assert math.isclose(slot(x).aux_loss.item(), 2.0 * brute, rel_tol=1e-4)
    with torch.no_grad():
        slot.experts.v.copy_(torch.eye(16).reshape(16, 4, 4).permute(1, 0, 2))  # disjoint coordinate blocks
    assert slot(x).aux_loss.item() < 1e-10


def test_eigen_scores_are_cosines_in_unit_interval() -> None:
    torch.manual_seed(3)
    slot = MoEMlp(16, 32, moe=MoEConfig(num_experts=4, rank=4, score="spectral"))
    x = torch.randn(20, 16)
    for score in ("cosine", "spectral"):
        slot.experts.score = score
        s, z = slot.experts.scores(x)
        assert s.shape == (20, 4) and z.shape == (20, 4, 4)
        assert bool((s >= 0).all() and (s <= 1 + 1e-6).all())
    # a token inside expert 2's subspace has cosine 1 with it
    token = slot.experts.v[2].detach() @ torch.randn(4)
    slot.experts.score = "cosine"
    assert math.isclose(slot.experts.scores(token.unsqueeze(0))[0][0, 2].item(), 1.0, rel_tol=1e-5)


def test_bf16_autocast_runs() -> None:
    torch.manual_seed(4)
    slot = MoEMlp(16, 32, moe=MoEConfig(num_experts=4))
    x = torch.randn(2, 8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = slot(x, return_routing=True)
    assert out.routing.probs.dtype == torch.float32
    torch.testing.assert_close(out.out.float(), slot(x).out, atol=5e-2, rtol=5e-2)

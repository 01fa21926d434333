"""ERMoE slot designs (full rank, routing sub-basis, shared expert, learned temperature) against an independent float64
loop-over-experts reference: scores, gates, outputs and gradients; shapes, argument checks, compile, old configs."""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from brainage.model import BrainAgeViT, Mlp, MoEConfig, MoEMlp, make_mlp, orthonormalize_
from brainage.model.diagnostics import collect_diagnostics, mutual_coherence
from brainage.model.moe import default_eigen_rank
from brainage.model.moe_experts import EigenExperts, first_stage_path, polar_retract_, qr_retract_

DESIGNS = {
    "lowrank-energy-learned": dict(score="energy", temperature_mode="learned"),
    "fullrank-energy-learned": dict(design="fullrank", score="energy", temperature_mode="learned"),
    "fullrank-spectral": dict(design="fullrank", score="spectral", temperature=0.02),
    "subbasis-random-cosine": dict(design="subbasis"),
    "subbasis-orthogonal-energy": dict(design="subbasis", route_basis="orthogonal", score="energy",
                                       temperature_mode="learned"),
    "subbasis-lowrank-spectral": dict(design="subbasis", rank=12, route_rank=3, score="spectral", temperature=0.05),
    "shared-subbasis": dict(design="subbasis", route_basis="orthogonal", shared_expert=True),
    "shared-softmax": dict(router="softmax", shared_expert=True),
}
D, H, E, K = 16, 96, 4, 2


def reference(slot: MoEMlp, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Float64 re-implementation from the formulas, one expert at a time on its own tokens.

    Returns a dict of out (b, n, d), probs (t, e), index (t, k), gates (t, k) and the float64 leaf parameters.
    """
    params = {n: p.detach().double().requires_grad_(True) for n, p in slot.named_parameters()}
    xd = x.detach().double().reshape(-1, x.shape[-1])  # (t, d)
    cfg = slot.cfg
    if cfg.router == "eigen":
        kappa = slot.experts.spectrum_rate  # s = exp(kappa * log_s); kappa's value is tested below
        v, s = params["experts.v"], (kappa * params["experts.log_s"]).exp()  # (e, d, r), (e, r)
        q = slot.experts.route_rank
        scores = []
        for e in range(cfg.num_experts):
            z = xd @ v[e][:, :q]  # (t, q) projection on the scored columns
            if cfg.score == "cosine":
                scores.append(z.norm(dim=1) / xd.norm(dim=1))
            elif cfg.score == "spectral":
                w = s[e, :q] / s[e, :q].norm()
                scores.append((z * w).norm(dim=1) / xd.norm(dim=1))
            else:  # energy: sum_j s_j^2 z_j^2 / (mean over the whole spectrum of s^2 * ||x||^2)
                scores.append((z.square() * s[e, :q].square()).sum(dim=1) / (s[e].square().mean() * xd.square().sum(1)))
        logits = torch.stack(scores, dim=1)  # (t, e)
    else:
        logits = xd @ params["router.weight"].t()
    tau = params["log_temperature"].exp() if cfg.temperature_mode == "learned" else cfg.temperature
    probs = (logits / tau).softmax(dim=1)
    top_p, index = probs.topk(cfg.top_k, dim=1)
    gates = top_p / top_p.sum(dim=1, keepdim=True)
    out = torch.zeros_like(xd)
    for e in range(cfg.num_experts):
        if cfg.router == "eigen":
            w1 = params["experts.u"][e] @ torch.diag(s[e]) @ params["experts.v"][e].t()  # (h, d) = U diag(s) V^T
        else:
            w1 = params["experts.w1"][e]
        for slot_k in range(cfg.top_k):
            rows = (index[:, slot_k] == e).nonzero().squeeze(1)
            hidden = F.gelu(F.linear(xd[rows], w1, params["experts.b1"][e]))
            y = F.linear(hidden, params["experts.w2"][e], params["experts.b2"][e])
            out = out.index_add(0, rows, y * gates[rows, slot_k : slot_k + 1])
    if cfg.shared_expert:
        hidden = F.gelu(F.linear(xd, params["shared.fc1.weight"], params["shared.fc1.bias"]))
        out = out + F.linear(hidden, params["shared.fc2.weight"], params["shared.fc2.bias"])
    return dict(out=out.reshape(x.shape), probs=probs, index=index, gates=gates, params=params)


CASES = [(name, 14) for name in DESIGNS] + [(name, 60) for name in DESIGNS if "subbasis" in name]


@pytest.mark.parametrize(("name", "tokens"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_matches_float64_reference(name: str, tokens: int, dtype: torch.dtype) -> None:
    """14 tokens per sample: the subbasis designs project the chosen tokens; 60: they materialise W1 (below)."""
    torch.manual_seed(0)
    slot = MoEMlp(D, H, moe=MoEConfig(num_experts=E, top_k=K, **DESIGNS[name])).to(dtype)
    x = torch.randn(3, tokens, D, dtype=dtype)
    got = slot(x, return_routing=True)  # float64 takes the loop dispatch, float32 grouped_mm
    ref = reference(slot, x)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    assert torch.equal(got.routing.expert_index.reshape(-1, K), ref["index"])
    assert_close(got.routing.probs.reshape(-1, E).double(), ref["probs"], **tol)
    assert_close(got.routing.gates.reshape(-1, K).double(), ref["gates"], **tol)
    assert_close(got.out.double(), ref["out"], **tol)
    grad = torch.randn_like(x)
    got.out.backward(grad)
    ref["out"].backward(grad.double())
    for pname, p in slot.named_parameters():
        assert_close(p.grad.double(), ref["params"][pname].grad, **tol, msg=pname)
    if slot.cfg.temperature_mode == "learned":  # the temperature does learn
        assert slot.log_temperature.grad.abs() > 0


def test_first_stage_path_takes_the_cheaper_exact_path() -> None:
    d, h, r, q, e, k = D, H // K, D, D // E, E, K
    assert first_stage_path(3 * 14 * k, e, d, h, r, r) == "reuse"
    assert first_stage_path(3 * 14 * k, e, d, h, r, q) == "tokens"  # the 14-token cases above
    assert first_stage_path(3 * 60 * k, e, d, h, r, q) == "materialise"  # the 60-token cases above
    # at d = 384, h = 768: full rank projects 2400 tokens, and half rank is cheaper per token than a plain expert
    assert first_stage_path(4800, 8, 384, 768, 384, 48) == "tokens"
    assert first_stage_path(4800 * 8, 8, 384, 768, 384, 48) == "materialise"
    assert 384 * (192 - 48) + 192 * 768 < 384 * 768 and first_stage_path(10**6, 8, 384, 768, 192, 48) == "tokens"


@pytest.mark.parametrize("name", list(DESIGNS))
def test_shapes_and_equal_active_width(name: str) -> None:
    torch.manual_seed(1)
    cfg = MoEConfig(num_experts=E, top_k=K, **DESIGNS[name])
    slot = make_mlp(D, H, 0.0, cfg)
    out = slot(torch.randn(2, 5, D), return_routing=True)
    assert out.out.shape == (2, 5, D) and out.aux_loss.shape == ()
    assert out.routing.expert_index.shape == (2, 5, K) and out.routing.probs.shape == (2, 5, E)
    h = slot.experts.w2.shape[-1]
    active = K * h + (slot.shared.fc1.out_features if slot.shared is not None else 0)
    assert active == H  # the active experts together have the dense MLP's hidden width
    assert h == (H // 3 if cfg.shared_expert else H // 2)
    if isinstance(slot.experts, EigenExperts):
        rank = {"lowrank": default_eigen_rank(D, H, E), "fullrank": D, "subbasis": cfg.rank or D}[cfg.design]
        assert slot.experts.v.shape == (E, D, rank) and slot.experts.u.shape == (E, h, rank)
        route = {"subbasis": cfg.route_rank or D // E}.get(cfg.design, rank)
        assert slot.experts.bases().shape == (E, D, route)


def test_slots_share_one_signature() -> None:
    dense, moe = inspect.signature(Mlp).parameters, inspect.signature(MoEMlp).parameters
    assert list(dense) == ["dim", "hidden_dim", "dropout"]
    assert list(moe)[:3] == list(dense) and list(moe)[3:] == ["moe"]
    assert isinstance(make_mlp(D, H), Mlp) and isinstance(make_mlp(D, H, 0.1, MoEConfig()), MoEMlp)


@pytest.mark.parametrize(
    ("kwargs", "value"),
    [
        (dict(design="tiny"), "design='tiny'"),
        (dict(route_basis="qr"), "route_basis='qr'"),
        (dict(temperature_mode="annealed"), "temperature_mode='annealed'"),
        (dict(score="dot"), "score='dot'"),
        (dict(design="fullrank", score="energy", rank=8), "rank=8"),
        (dict(design="fullrank"), "score='cosine'"),
        (dict(design="subbasis", router="softmax"), "router='softmax'"),
        (dict(route_rank=4), "route_rank=4"),
        (dict(design="fullrank", score="energy", route_rank=4), "route_rank=4"),
        (dict(route_basis="orthogonal"), "route_basis='orthogonal'"),
        (dict(design="subbasis", route_rank=0), "route_rank=0"),
        (dict(spectrum_step="fast"), "spectrum_step='fast'"),
        (dict(spectrum_step="matched", router="emoe"), "router='emoe'"),
    ],
)
def test_bad_design_config_raises_naming_value(kwargs: dict, value: str) -> None:
    with pytest.raises(ValueError, match=value):
        MoEConfig(**kwargs)


@pytest.mark.parametrize(
    ("dim", "hidden", "kwargs", "value"),
    [
        (16, 96, dict(design="subbasis", route_rank=16), "route_rank=16"),  # not a sub-basis of rank 16
        (16, 96, dict(design="subbasis", rank=8, route_rank=8), "route_rank=8"),
        (16, 96, dict(design="subbasis", route_rank=5, route_basis="orthogonal"), "4 \\* 5 > 16"),
        (16, 90, dict(shared_expert=True, top_k=3), "hidden_dim=90 must be divisible by 4"),
        (16, 20, dict(design="fullrank", score="energy"), "rank=16"),  # expert hidden 10 < d
        (16, 96, dict(design="subbasis", rank=17), "rank=17"),
    ],
)
def test_bad_design_slot_args_raise_naming_value(dim: int, hidden: int, kwargs: dict, value: str) -> None:
    with pytest.raises(ValueError, match=value):
        MoEMlp(dim, hidden, moe=MoEConfig(num_experts=E, **kwargs))


@pytest.mark.parametrize("name", ["fullrank-energy-learned", "subbasis-orthogonal-energy", "shared-subbasis"])
def test_every_parameter_gets_nonzero_grad(name: str) -> None:
    torch.manual_seed(2)
    slot = MoEMlp(D, H, moe=MoEConfig(num_experts=E, top_k=K, **DESIGNS[name]))
    out = slot(torch.randn(4, 64, D), return_routing=True)
    assert set(out.routing.expert_index.unique().tolist()) == set(range(E))
    (out.out.square().sum() + out.aux_loss).backward()
    assert [n for n, p in slot.named_parameters() if p.grad is None or p.grad.abs().sum() == 0] == []


@pytest.mark.parametrize("name", ["fullrank-energy-learned", "subbasis-orthogonal-energy", "shared-subbasis"])
def test_compile_fullgraph_cpu(name: str) -> None:
    torch.manual_seed(3)
    slot = MoEMlp(D, H, moe=MoEConfig(num_experts=E, top_k=K, **DESIGNS[name]))
    x = torch.randn(2, 6, D, requires_grad=True)
    torch._dynamo.reset()
    got = torch.compile(slot, fullgraph=True, backend="aot_eager")(x, return_routing=True)
    want = slot(x, return_routing=True)
    assert_close(got.out, want.out)
    assert torch.equal(got.routing.expert_index, want.routing.expert_index)
    got.out.sum().backward()
    assert slot.experts.v.grad is not None


def test_energy_score_is_the_relative_gain_of_w1_and_needs_a_spread_spectrum() -> None:
    torch.manual_seed(4)
    x = torch.randn(30, D)
    slot = MoEMlp(D, H, moe=MoEConfig(num_experts=E, design="fullrank", score="energy"))
    ex = slot.experts
    w1 = ex.u.detach() * ex.spectrum().detach().unsqueeze(1) @ ex.v.detach().transpose(1, 2)  # (e, h, d)
    gain = torch.einsum("ehd,td->teh", w1, x).square().sum(-1)  # (t, e) ||W1 x||^2
    expected = gain / (w1.square().sum(dim=(1, 2)) / D) / x.square().sum(-1, keepdim=True)
    assert_close(ex.scores(x)[0], expected, rtol=1e-4, atol=1e-6)
    spread = float(ex.scores(x)[0].detach().std(dim=1).mean())
    assert spread > 0.05  # the log-normal init spectrum separates the experts
    with torch.no_grad():
        ex.log_s.fill_(0.3)  # a flat spectrum: at full rank every expert scores exactly 1
    assert_close(ex.scores(x)[0], torch.ones(30, E))
    # the cosine score over a full-rank basis is 1 for every expert, hence the ValueError for design='fullrank'
    ex.score = "cosine"
    assert_close(ex.scores(x)[0], torch.ones(30, E))


def test_orthogonal_routing_subbases_stay_jointly_orthonormal_under_training() -> None:
    torch.manual_seed(5)
    slots = {basis: MoEMlp(D, H, moe=MoEConfig(num_experts=E, design="subbasis", route_basis=basis, rank=12))
             for basis in ("orthogonal", "random")}
    x, target = torch.randn(4, 32, D), torch.randn(4, 32, D)
    for slot in slots.values():
        opt = torch.optim.AdamW(slot.parameters(), lr=1e-2)
        v0 = slot.experts.v.detach().clone()
        for _ in range(20):
            loss = (slot(x).out - target).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            orthonormalize_(slot)
        v = slot.experts.v.detach()
        assert (v[..., :4] - v0[..., :4]).abs().max() > 1e-2  # the routing sub-bases did move
        eye = torch.eye(12)
        assert float((v.transpose(1, 2) @ v - eye).abs().max()) < 1e-5  # each expert basis orthonormal
    assert mutual_coherence(slots["orthogonal"].experts.bases())[0] < 1e-5
    assert mutual_coherence(slots["random"].experts.bases())[0] > 0.3


def test_penalty_on_routing_subbases_lowers_coherence_when_e_times_q_fits() -> None:
    torch.manual_seed(6)
    slot = MoEMlp(32, 96, moe=MoEConfig(num_experts=E, design="subbasis", route_rank=8, orthogonality_weight=1.0))
    before = mutual_coherence(slot.experts.bases())[0]
    opt = torch.optim.Adam([slot.experts.v], lr=1e-2)
    x = torch.randn(1, 4, 32)
    for _ in range(150):
        opt.zero_grad()
        slot(x).aux_loss.backward()  # the penalty reads the routing sub-bases only
        opt.step()
        orthonormalize_(slot)
    after = mutual_coherence(slot.experts.bases())[0]
    assert before > 0.5 and after < 0.1, (before, after)


def test_diagnostics_use_the_scored_subbases_and_report_learned_temperature() -> None:
    torch.manual_seed(7)
    cfg = MoEConfig(num_experts=E, design="subbasis", route_rank=3, temperature_mode="learned")
    net = BrainAgeViT(img_size=(16, 16, 16), patch_size=8, embed_dim=16, depth=2, num_heads=2, moe=cfg,
                      moe_layers="last_half")
    assert net.moe_layers == [1]
    diag = collect_diagnostics(net, torch.randn(2, 1, 16, 16, 16))
    v = net.blocks[1].mlp.experts.v.detach()
    assert diag["layer1/coherence_max"] == pytest.approx(mutual_coherence(v[..., :3])[0])
    assert diag["layer1/coherence_max"] != pytest.approx(mutual_coherence(v)[0])
    assert diag["layer1/temperature"] == pytest.approx(0.1)
    assert "layer0/load_cv" not in diag  # block 0 is dense


def test_old_init_args_still_load_with_the_old_parameters() -> None:
    """init_args written before the designs existed (no design/route/shared/temperature_mode keys) rebuild the same
    lowrank model: same parameter names and shapes, and a state dict saved from it loads strictly."""
    old_moe = dict(router="eigen", num_experts=4, top_k=2, rank=None, temperature=0.1, score="cosine",
                   switch_loss_weight=0.01, orthogonality_weight=0.0, dispatch="auto")
    old = dict(img_size=[16, 16, 16], patch_size=8, in_chans=1, embed_dim=32, depth=2, num_heads=4, mlp_ratio=4.0,
               mlp="moe", moe=old_moe, moe_layers="all", pool="grid", head_dim=4, use_sex=False, dropout=0.0,
               drop_path=0.0)
    net = BrainAgeViT.from_init_args(json.loads(json.dumps(old)))
    shapes = {n: tuple(p.shape) for n, p in net.blocks[0].mlp.named_parameters()}
    r = 16  # default_eigen_rank(32, 128, 4)
    assert shapes == {"experts.w2": (4, 32, 64), "experts.b2": (4, 32), "experts.v": (4, 32, r),
                      "experts.u": (4, 64, r), "experts.log_s": (4, r), "experts.b1": (4, 64)}
    assert len(set(net.blocks[0].mlp.experts.log_s.detach().reshape(-1).tolist())) == 1  # flat spectrum as before
    rebuilt = BrainAgeViT.from_init_args(json.loads(json.dumps(net.init_args)))
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    new = BrainAgeViT(img_size=(16, 16, 16), embed_dim=48, depth=2, num_heads=4,
                      moe=MoEConfig(num_experts=4, **DESIGNS["shared-subbasis"], temperature_mode="learned"))
    again = BrainAgeViT.from_init_args(json.loads(json.dumps(new.init_args)))
    assert again.blocks[0].mlp.cfg == new.blocks[0].mlp.cfg
    again.load_state_dict(new.state_dict(), strict=True)
    assert math.isclose(float(again.blocks[0].mlp.temperature().detach()), 0.1, rel_tol=1e-6)


def test_polar_retraction_is_the_nearest_orthonormal_matrix() -> None:
    torch.manual_seed(8)
    q = torch.linalg.qr(torch.randn(16, 12))[0]
    same = q.clone()
    polar_retract_(same)
    assert_close(same, q, atol=1e-5, rtol=0)  # identity on orthonormal columns
    noisy = q + 0.1 * torch.randn(16, 12)
    polar, qr = noisy.clone(), noisy.clone()
    polar_retract_(polar)
    qr_retract_(qr)
    assert_close(polar.t() @ polar, torch.eye(12), atol=1e-5, rtol=0)
    assert float((noisy - polar).norm()) < float((noisy - qr).norm())  # QR is not the nearest


@pytest.mark.parametrize(("kwargs", "kappa"), [(dict(), 1.0), (dict(design="subbasis"), 4.0 + math.sqrt(48)),
                                               (dict(design="subbasis", spectrum_step="log"), 1.0),
                                               (dict(spectrum_step="matched"), 4.0 + math.sqrt(48))])
def test_matched_spectrum_step_moves_log_s_kappa_times_faster_under_adam(kwargs: dict, kappa: float) -> None:
    torch.manual_seed(9)
    slot = MoEMlp(D, H, moe=MoEConfig(num_experts=E, **kwargs))
    assert slot.experts.spectrum_rate == pytest.approx(kappa)  # sqrt(d) + sqrt(h) = 4 + sqrt(48) when matched
    s0 = slot.experts.spectrum().detach().clone()
    opt = torch.optim.Adam([slot.experts.log_s], lr=1e-3)
    slot(torch.randn(4, 64, D)).out.square().sum().backward()
    opt.step()  # Adam's first step moves every scalar with a nonzero gradient by lr
    step = (slot.experts.spectrum().detach().log() - s0.log()).abs()
    assert_close(step[step > 0], torch.full_like(step[step > 0], kappa * 1e-3), rtol=1e-3, atol=0)

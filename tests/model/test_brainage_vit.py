"""BrainAgeViT, SFCN and the net registry: shapes, routing with the token grid, covariates, args, round trip."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from brainage.model import SFCN, BrainAgeViT, MoEConfig, build_net
from brainage.model.patch_embed import ConvStem3d, PatchEmbed3d
from brainage.model.vit import resolve_moe_layers

TINY = dict(embed_dim=32, depth=2, num_heads=4)


def test_patch_embed_equals_conv3d() -> None:
    torch.manual_seed(0)
    pe = PatchEmbed3d(patch_size=4, in_chans=2, embed_dim=8)
    conv = nn.Conv3d(2, 8, kernel_size=4, stride=4)
    with torch.no_grad():
        pe.proj.weight.copy_(conv.weight.reshape(8, -1))
        pe.proj.bias.copy_(conv.bias)
    x = torch.randn(2, 2, 8, 12, 4)
    tokens, grid = pe(x)
    assert grid == (2, 3, 1)
    torch.testing.assert_close(tokens, conv(x).flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("img_size", "patch", "pool", "mlp"),
    [((16, 16, 16), 8, "mean", "moe"), ((24, 16, 8), 8, "cls", "moe"), ((12, 8, 8), 4, "mean", "dense"),
     ((16, 24, 8), 8, "grid", "moe")],
)
def test_vit_shapes_and_routing(img_size: tuple, patch: int, pool: str, mlp: str) -> None:
    torch.manual_seed(1)
    net = BrainAgeViT(img_size=img_size, patch_size=patch, pool=pool, mlp=mlp, moe_layers=[1], **TINY)
    out = net(torch.randn(2, 1, *img_size), return_routing=True)
    assert out.pred.shape == (2,) and torch.isfinite(out.pred).all() and out.aux_loss.shape == ()
    grid = tuple(s // patch for s in img_size)
    n = grid[0] * grid[1] * grid[2]
    if mlp == "dense":
        assert out.routing == []
    else:
        assert [r.layer for r in out.routing] == [1]
        r = out.routing[0]
        assert r.grid == grid
        assert r.expert_index.shape == (2, n, 2) and r.gates.shape == (2, n, 2) and r.probs.shape == (2, n, 8)
        assert r.expert_index.dtype == torch.int64 and r.gates.dtype == torch.float32
        assert bool((r.gates[..., 0] >= r.gates[..., 1]).all())  # ordered by gate descending
    assert net(torch.randn(2, 1, *img_size)).routing is None


def test_other_input_shape_divisible_by_patch_works_and_bad_shape_raises() -> None:
    net = BrainAgeViT(img_size=(16, 16, 16), patch_size=8, pool="mean", **TINY)
    out = net(torch.randn(1, 1, 24, 16, 8), return_routing=True)
    assert out.pred.shape == (1,) and out.routing[0].grid == (3, 2, 1)
    with pytest.raises(ValueError, match=r"\(20, 16, 16\)"):
        net(torch.randn(1, 1, 20, 16, 16))
    grid_net = BrainAgeViT(img_size=(16, 16, 16), patch_size=8, pool="grid", **TINY)  # one head weight per position
    assert grid_net.head.in_features == 2 * 2 * 2 * 4
    with pytest.raises(ValueError, match=r"fixed token grid \(2, 2, 2\).*\(24, 16, 8\)"):
        grid_net(torch.randn(1, 1, 24, 16, 8))
    with pytest.raises(ValueError, match=r"\(18, 16, 16\)"):
        BrainAgeViT(img_size=(18, 16, 16), patch_size=8, **TINY)


def test_sex_covariate_changes_prediction_and_nan_is_half() -> None:
    torch.manual_seed(2)
    net = BrainAgeViT(img_size=(16, 16, 16), use_sex=True, **TINY).eval()
    with torch.no_grad():
        net.head.weight[0, -1] = 1.0
    x = torch.randn(1, 1, 16, 16, 16).expand(3, -1, -1, -1, -1)
    pred = net(x, sex=torch.tensor([0.0, 1.0, float("nan")])).pred
    torch.testing.assert_close(pred[1] - pred[0], torch.tensor(1.0))
    torch.testing.assert_close(pred[2], (pred[0] + pred[1]) / 2)
    with pytest.raises(ValueError, match="sex"):
        net(x)


def test_moe_layer_selection() -> None:
    assert resolve_moe_layers("all", 4) == [0, 1, 2, 3]
    assert resolve_moe_layers("every_2", 6) == [1, 3, 5]
    assert resolve_moe_layers("last_2", 6) == [4, 5]
    assert resolve_moe_layers("last_half", 5) == [3, 4]
    assert resolve_moe_layers([3, 0], 4) == [0, 3]
    with pytest.raises(ValueError, match="every_x"):
        resolve_moe_layers("every_x", 4)
    with pytest.raises(ValueError, match=r"\[4\]"):
        resolve_moe_layers([4], 4)
    net = BrainAgeViT(img_size=(16, 16, 16), moe_layers="every_2", embed_dim=32, depth=4, num_heads=4)
    kinds = [type(b.mlp).__name__ for b in net.blocks]
    assert kinds == ["Mlp", "MoEMlp", "Mlp", "MoEMlp"]


def test_bad_vit_args_raise_naming_value() -> None:
    with pytest.raises(ValueError, match="num_heads=5"):
        BrainAgeViT(img_size=(16, 16, 16), embed_dim=32, depth=1, num_heads=5)
    with pytest.raises(ValueError, match="pool='max'"):
        BrainAgeViT(img_size=(16, 16, 16), pool="max", **TINY)
    with pytest.raises(ValueError, match="top_k=3"):
        BrainAgeViT(img_size=(16, 16, 16), moe=MoEConfig(num_experts=2, top_k=3), **TINY)


def test_vit_all_parameters_get_grads() -> None:
    torch.manual_seed(3)
    net = BrainAgeViT(img_size=(16, 16, 16), pool="cls", moe=MoEConfig(num_experts=4, temperature=1.0), **TINY)
    out = net(torch.randn(4, 1, 16, 16, 16))
    (out.pred.square().sum() + out.aux_loss).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("router", ["eigen", "softmax", "emoe"])
def test_build_net_round_trip(router: str) -> None:
    net = BrainAgeViT(img_size=(16, 24, 16), moe=MoEConfig(router=router, num_experts=4), moe_layers=[0], **TINY)
    args = json.loads(json.dumps(net.init_args))  # JSON-serialisable
    assert args["moe"]["router"] == router and args["img_size"] == [16, 24, 16]
    rebuilt = build_net(type(net).__name__, args)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 16, 24, 16)
    torch.testing.assert_close(rebuilt.eval()(x).pred, net.eval()(x).pred)


def test_build_net_rejects_unknown_names_and_args() -> None:
    with pytest.raises(ValueError, match="'os.system'"):
        build_net("os.system", {})
    with pytest.raises(ValueError, match="SFCN"):
        build_net("SFCN", {"bogus": 1})


def test_sfcn_full_size_param_count() -> None:
    n = sum(p.numel() for p in SFCN().parameters())
    assert 2.5e6 <= n <= 3.5e6


def test_sfcn_forward_and_round_trip() -> None:
    torch.manual_seed(4)
    net = SFCN(channels=(4, 4, 8, 8, 8, 4), use_sex=True)
    out = net(torch.randn(2, 1, 32, 40, 32), sex=torch.tensor([0.0, float("nan")]), return_routing=True)
    assert out.pred.shape == (2,) and out.routing is None and float(out.aux_loss) == 0.0
    rebuilt = build_net("SFCN", json.loads(json.dumps(net.init_args)))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"\(2, 1, 16, 40, 32\)"):
        net(torch.randn(2, 1, 16, 40, 32), sex=torch.zeros(2))


def test_conv_stem_grid_receptive_field_and_round_trip() -> None:
    """The conv stem gives PatchEmbed3d's grid; a voxel moves exactly the tokens whose receptive field holds it (the
    token's patch plus 7 voxels each side, centred; the linear projection: its patch only); round trip."""
    torch.manual_seed(3)
    x = torch.randn(1, 1, 40, 8, 8)
    for embed, reach in ((PatchEmbed3d(8, 1, 16), 0), (ConvStem3d(8, 1, 16), 7)):
        tokens, grid = embed(x)
        assert grid == (5, 1, 1) and tokens.shape == (1, 5, 16)
        for v in range(40):
            bumped = x.clone()
            bumped[0, 0, v, 4, 4] += 1.0
            moved = (embed(bumped)[0] - tokens).abs().amax(-1)[0]  # (n,) change per token
            expected = [t for t in range(5) if 8 * t - reach <= v <= 8 * t + 7 + reach]
            assert [t for t in range(5) if moved[t] > 1e-6] == expected, (type(embed).__name__, v)
    net = BrainAgeViT(img_size=(16, 16, 16), patch_size=8, stem="conv", **TINY)
    assert isinstance(net.patch_embed, ConvStem3d)
    twin = build_net("BrainAgeViT", json.loads(json.dumps(net.init_args)))
    twin.load_state_dict(net.state_dict())
    y = torch.randn(2, 1, 16, 16, 16)
    torch.testing.assert_close(net.eval()(y).pred, twin.eval()(y).pred)
    for bad in (dict(patch_size=6, img_size=(12, 12, 12), stem="conv"), dict(stem="deep")):
        with pytest.raises(ValueError, match="patch_size=6|stem='deep'"):
            BrainAgeViT(**{**dict(img_size=(16, 16, 16), patch_size=8), **bad}, **TINY)

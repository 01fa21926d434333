"""Weight-decay groups read by parameter name from the optimizer of a real Lightning fit, for the shipped dense,
ERMoE, softmax-MoE and SFCN configs; the SGD option; the warm-up + cosine schedule."""

from __future__ import annotations

import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from brainage.training.cli import BrainAgeCLI
from brainage.training.optim import decay_groups, warmup_cosine

ROOT = Path(__file__).resolve().parents[2]
MATRIX_NAMES = {"weight", "w1", "w2"}  # the only leaf names the rule may decay in the shipped models
NEVER = {"bias", "b1", "b2", "pos_embed", "cls_token", "log_s", "u", "v", "q", "log_lambda", "masks"}


def _fitted_optimizer(config: str, tmp_path: Path, *extra: str) -> tuple[dict[str, list[str]], dict, nn.Module]:
    """One real optimizer step of the config's model on a 16^3 grid (the groups do not depend on the grid); returns
    {group name: parameter names}, the groups' settings and the net."""
    small = ["--data.shape", "[16, 16, 16]"] + (["--model.net.init_args.img_size", "[16, 16, 16]"]
                                                 if config.startswith("vit") else [])
    cli = BrainAgeCLI(args=["--config", str(ROOT / "configs/experiment/compare.yaml"), "--config",
                            str(ROOT / f"configs/model/{config}.yaml"), *small, *extra], run=False)
    module = cli.model
    shape = cli.datamodule.preprocessing.shape
    batches = [{"image": torch.randn(2, 1, *shape), "age": torch.tensor([30.0, 60.0]),
                "sex": torch.tensor([0.0, 1.0]), "subject_id": ["a", "b"], "site": ["", ""]}]
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    optimizer = trainer.optimizers[0]
    names = {g["name"]: list(g["param_names"]) for g in optimizer.param_groups}
    settings = {g["name"]: {k: v for k, v in g.items() if k not in ("params", "param_names")}
                for g in optimizer.param_groups}
    return names, {"type": type(optimizer).__name__, **settings}, module.net


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


@pytest.mark.parametrize("config, decayed, not_decayed_2d", [
    ("vit_dense_tiny", {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
                        "blocks.0.mlp.fc1.weight", "blocks.3.mlp.fc2.weight", "token_proj.weight", "head.weight"},
     {"pos_embed"}),
    ("vit_ermoe_tiny", {"blocks.0.mlp.experts.w2", "blocks.0.attn.qkv.weight", "head.weight"},
     {"pos_embed", "experts.u", "experts.v", "experts.log_s", "experts.b1", "experts.b2"}),
    ("vit_softmax_moe_tiny", {"blocks.1.mlp.experts.w1", "blocks.1.mlp.experts.w2", "blocks.1.mlp.router.weight"},
     {"pos_embed", "experts.b1", "experts.b2"}),
    ("sfcn", {"features.0.weight", "head.weight"}, set()),
])
def test_decay_groups_by_name(config, decayed, not_decayed_2d, tmp_path):
    names, settings, net = _fitted_optimizer(config, tmp_path)
    assert settings["type"] == "AdamW" and settings["decay"]["weight_decay"] == 0.05
    assert settings["no_decay"]["weight_decay"] == 0.0
    params = dict(net.named_parameters())
    assert sorted(names["decay"] + names["no_decay"]) == sorted(params)  # every parameter once
    assert decayed <= set(names["decay"])
    assert all(_leaf(n) in MATRIX_NAMES and params[n].ndim >= 2 for n in names["decay"])
    assert not [n for n in names["decay"] if _leaf(n) in NEVER]
    assert not [n for n in names["decay"] if re.search(r"norm\d?\.|\.bn|^features\.\d+\.(running|num)", n)]
    # the tensors of >= 2 dims left out of decay are exactly the roles the rule exempts
    left_2d = {re.sub(r"^blocks\.\d+\.mlp\.", "", n) for n in names["no_decay"] if params[n].ndim >= 2}
    assert left_2d == not_decayed_2d
    if config == "sfcn":  # BatchNorm affine parameters and conv biases are not decayed
        bn = [n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm3d)]
        assert {f"{b}.weight" for b in bn} | {f"{b}.bias" for b in bn} <= set(names["no_decay"])


def test_sgd_option_for_sfcn(tmp_path):
    names, settings, _ = _fitted_optimizer("sfcn", tmp_path, "--model.optimizer", "sgd", "--model.lr", "0.01",
                                           "--model.momentum", "0.8", "--model.weight_decay", "0.001")
    assert settings["type"] == "SGD" and settings["decay"]["momentum"] == 0.8
    assert settings["decay"]["weight_decay"] == 0.001 and settings["no_decay"]["weight_decay"] == 0.0
    assert "features.0.weight" in names["decay"] and "features.0.bias" in names["no_decay"]


def test_undeclared_matrices_are_not_decayed_and_bad_declarations_are_named():
    class Bank(nn.Module):
        decayed_parameters = ("w",)

        def __init__(self) -> None:
            super().__init__()
            self.w, self.basis = nn.Parameter(torch.ones(3, 4, 4)), nn.Parameter(torch.ones(3, 4, 2))

    net = nn.Sequential(nn.Linear(4, 4), Bank())
    assert decay_groups(net) == (["0.weight", "1.w"], ["0.bias", "1.basis"])

    class Typo(Bank):
        decayed_parameters = ("w", "w9")

    with pytest.raises(ValueError, match=r"Typo.decayed_parameters lists \['w9'\]"):
        decay_groups(nn.Sequential(Typo()))


def test_warmup_cosine_schedule():
    schedule = warmup_cosine(total_steps=110, warmup_steps=10, min_lr_ratio=0.01)
    assert [schedule(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert schedule(10) == pytest.approx(1.0) and schedule(60) == pytest.approx(0.505)
    assert schedule(110) == pytest.approx(0.01) and schedule(500) == pytest.approx(0.01)

"""Every shipped YAML is instantiated through the real CLI (run=False), alone or layered as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from brainage.data.preprocessing import Preprocessing
from brainage.training.cli import BrainAgeCLI

ROOT = Path(__file__).resolve().parents[1]
# configs/compare/ holds comparison protocols, not CLI layers: tests/training/test_compare_protocol.py instantiates them
CONFIGS = sorted(p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name != "compare")
BASE = ["configs/trainer/cpu.yaml", "configs/model/vit_ermoe_tiny.yaml", "configs/data/synthetic.yaml"]


def _args(layers: list[str]) -> list[str]:
    """CLI arguments: a data section (configs/data/*.yaml) is given as --data FILE, every other layer as --config."""
    return [a for layer in layers for a in ("--data" if Path(layer).parts[1] == "data" else "--config", layer)]


def _layers(config: Path) -> list[str]:
    """A top-level config stands alone; an experiment gets the base layers for the sections (model, data) it does
    not set (a model section giving only the net's init_args sets nothing), as pipelines/compare.sh layers a model on
    configs/experiment/compare.yaml; a layer is combined with the base layers of the other kinds."""
    if config.parent == Path("configs"):
        return [str(config)]
    if config.parts[1] == "experiment":
        raw = yaml.safe_load((ROOT / config).read_text())
        sets = set(raw) - ({"model"} if "class_path" not in _net_section(raw) else set())  # bare init_args: a layer
        return [b for b in BASE if Path(b).parts[1] not in sets] + [str(config)]
    return [b for b in BASE if Path(b).parts[1] != config.parts[1]] + [str(config)]


def _net_section(raw: dict) -> dict:
    """The ``model.net`` section of a parsed config ({} when it has none)."""
    return (raw.get("model") or {}).get("net") or {}


def _data_section(config: Path) -> dict | None:
    """The data section a config declares (a configs/data file, or the file its `data:` points to), else None."""
    raw = yaml.safe_load((ROOT / config).read_text())
    if config.parts[1] == "data":
        return raw
    if isinstance(raw.get("data"), str):
        return yaml.safe_load(((ROOT / config).parent / raw["data"]).read_text())
    return raw.get("data")


def test_configs_found():
    assert Path("configs/demo.yaml") in CONFIGS and len(CONFIGS) >= 8
    for kind in ("model", "data", "trainer", "logger", "experiment"):
        assert any(c.parts[1] == kind for c in CONFIGS), kind


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_config_instantiates(config, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = _args(_layers(config))
    raw = yaml.safe_load((ROOT / config).read_text())
    data = _data_section(config)
    if raw.get("trainer", {}).get("accelerator") == "gpu" and not torch.cuda.is_available():
        args += ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]  # the rest is still checked
    cli = BrainAgeCLI(args=args, run=False)
    net = cli.model.net
    raw_net = _net_section(raw)
    if "class_path" in raw_net:
        assert type(net).__name__ == raw_net["class_path"].rsplit(".", 1)[1]
    for key, value in (raw_net.get("init_args") or {}).items():  # a layer's net arguments reach the built net
        if not isinstance(value, dict):
            assert net.init_args[key] == value, key
    swap = (raw.get("model") or {}).get("region_swap")
    if swap:  # a layer's region swap reaches the module
        assert cli.model.region_swap.settings() == swap["init_args"]
    if data is not None:  # the declared chain is the one built; its crop is the model's grid
        assert cli.datamodule.preprocessing == Preprocessing(data["preprocessing"], data["augmentation"])
        crop = [e for e in data["preprocessing"] if e["class_path"].endswith(".ResizeWithPadOrCropd")]
        assert list(cli.datamodule.preprocessing.shape) == crop[0]["init_args"]["spatial_size"]
    if data is not None and "class_path" in raw_net:
        assert tuple(net.init_args["img_size"]) == cli.datamodule.preprocessing.shape
    assert cli.trainer is not None


def test_command_line_overrides_any_value(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cli = BrainAgeCLI(args=["--config", "configs/demo.yaml", "--trainer.max_epochs", "3", "--model.lr", "0.0002",
                            "--model.net.init_args.moe.top_k", "1", "--data.batch_size", "5"], run=False)
    assert cli.trainer.max_epochs == 3 and cli.model.hparams.lr == 0.0002 and cli.datamodule.batch_size == 5
    assert cli.model.net.init_args["moe"]["top_k"] == 1


def test_print_config_shows_the_resolved_layers(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(SystemExit) as exit_:
        BrainAgeCLI(args=["fit", "--config", "configs/experiment/compare.yaml", "--config", "configs/model/sfcn.yaml",
                          "--trainer.max_epochs", "7", "--print_config"])
    assert exit_.value.code == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["trainer"]["max_epochs"] == 7 and resolved["trainer"]["deterministic"] is True
    assert resolved["model"]["net"]["class_path"] == "brainage.model.SFCN"
    assert Preprocessing(resolved["data"]["preprocessing"]).shape == (56, 64, 56)


def test_sfcn_config_runs_on_the_3mm_grid(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cli = BrainAgeCLI(args=["--config", "configs/experiment/compare.yaml", "--config", "configs/model/sfcn.yaml"],
                      run=False)
    net = cli.model.net.eval()
    shape = cli.datamodule.preprocessing.shape
    with torch.no_grad():
        out = net(torch.randn(2, 1, *shape))
    assert out.pred.shape == (2,) and torch.isfinite(out.pred).all()

"""Every shipped YAML is instantiated through the real CLI (run=False), alone or layered as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from brainage.training.cli import BrainAgeCLI

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml"))
BASE = ["configs/trainer/cpu.yaml", "configs/model/vit_ermoe_tiny.yaml", "configs/data/synthetic.yaml"]


def _layers(config: Path) -> list[str]:
    """A full experiment stands alone; a layer is combined with the base layers it does not replace."""
    if config.parent == Path("configs") or config.parts[1] == "experiment":
        return [str(config)]
    return [b for b in BASE if Path(b).parts[1] != config.parts[1]] + [str(config)]


def test_configs_found():
    assert Path("configs/demo.yaml") in CONFIGS and len(CONFIGS) >= 8


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_config_instantiates(config, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = [a for layer in _layers(config) for a in ("--config", layer)]
    raw = yaml.safe_load((ROOT / config).read_text())
    if raw.get("trainer", {}).get("accelerator") == "gpu" and not torch.cuda.is_available():
        args += ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]  # the rest is still checked
    cli = BrainAgeCLI(args=args, run=False)
    net = cli.model.net
    if "model" in raw:
        expected = raw["model"]["net"]["class_path"].rsplit(".", 1)[1]
        assert type(net).__name__ == expected
    if "data" in raw:
        assert list(cli.datamodule.preprocessing.shape) == raw["data"]["shape"]
    assert cli.trainer is not None

"""The attribution benchmark's resumable training stage refuses a folder trained with another configuration."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("attribution_benchmark", ROOT / "benchmarks" / "attribution.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]  # its dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _trained(folder: Path, epochs: int, extra: list[str]) -> Path:
    best = folder / "train" / "checkpoints" / "best.ckpt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"not read by train()")
    (folder / "train" / "done.json").write_text(json.dumps({"seconds": 1.0, "epochs": epochs,
                                                            "extra_configs": extra}))
    return best


def test_train_reuses_a_folder_trained_with_the_same_configuration(tmp_path: Path) -> None:
    sfcn = ROOT / "configs" / "model" / "sfcn.yaml"
    best = _trained(tmp_path, 15, [str(sfcn)])
    assert _benchmark().train(tmp_path, tmp_path / "cohort", 15, [sfcn]) == best


@pytest.mark.parametrize("epochs, extra", [(30, ["configs/model/sfcn.yaml"]), (15, [])])
def test_train_refuses_a_folder_trained_with_another_configuration(tmp_path: Path, epochs: int,
                                                                    extra: list[str]) -> None:
    _trained(tmp_path, epochs, [str(ROOT / e) for e in extra])
    with pytest.raises(ValueError, match="done.json.*fresh --out"):
        _benchmark().train(tmp_path, tmp_path / "cohort", 15, [ROOT / "configs" / "model" / "sfcn.yaml"])

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


def test_spread_cohorts_write_each_effect_with_its_own_age(tmp_path: Path) -> None:
    """A ``*_spread`` cohort is its base cohort (effects, seed) written with ``brainage synth --effect-spread``."""
    bench = _benchmark()
    cohorts = {c.name: c for c in bench.COHORTS}
    base, spread = cohorts["mix"], cohorts["mix_spread"]
    assert (spread.effects, spread.seed, spread.role, spread.spread) == (base.effects, base.seed, base.role, 10.0)
    root = bench.build_cohort(spread, tmp_path, subjects=2, workers=1)
    truth = json.loads((root / "ground_truth.json").read_text())
    assert truth["settings"]["effect_spread"] == 10.0
    assert all(set(s["effect_age_offsets"]) == {e["name"] for e in truth["effects"]} for s in truth["subjects"])

"""The cross-validated comparison end to end on 12 synthetic subjects at 8 mm with 1 epoch: real Lightning fits, real
files; resumption, a killed unit and an added candidate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from brainage.training.compare import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "data.spacing=8.0", "--set", "data.shape=[16, 16, 16]", "--set", "data.batch_size=4",
        "--set", "data.augment=false"]


def _vit(path: Path, mlp: str, **moe) -> str:
    init = {"img_size": [16, 16, 16], "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2,
            "mlp_ratio": 2.0, "mlp": mlp, "pool": "grid"}
    if moe:
        init["moe"] = moe
    path.write_text(yaml.safe_dump({"model": {"net": {"class_path": "brainage.model.BrainAgeViT",
                                                      "init_args": init}, "warmup_epochs": 0.5}}))
    return str(path)


def _protocol(tmp_path: Path, ermoe_configs: list[str], models: dict[str, str]) -> Path:
    sfcn = tmp_path / "sfcn.yaml"
    sfcn.write_text(yaml.safe_dump({"model": {"net": {"class_path": "brainage.model.SFCN",
                                                      "init_args": {"channels": [4, 8, 8]}}}}))
    protocol = {"base": ["configs/experiment/compare.yaml"], "folds": 3, "val_fraction": 0.375, "epochs": 1,
                "n_boot": 200, "reference": "ermoe", "arms": [
                    {"name": "ermoe", "configs": ermoe_configs, "grid": [{"lr": 0.001}, {"lr": 0.003}]},
                    {"name": "dense", "configs": [models["dense"]], "grid": [{"lr": 0.001}]},
                    {"name": "sfcn", "configs": [str(sfcn)],
                     "grid": [{"optimizer": "adamw", "lr": 0.001}, {"optimizer": "sgd", "lr": 0.01}]}]}
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(protocol))
    return path


def _run(capsys, protocol: Path, cohort: Path, out: Path) -> dict:
    assert main(["run", "--protocol", str(protocol), "--root", str(cohort), "--out", str(out), *TINY]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _fit_times(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "units").glob("fold*/*/*/fit.json")}


@pytest.mark.slow
def test_compare_pipeline_end_to_end(cohort12, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    models = {"ermoe": _vit(tmp_path / "ermoe.yaml", "moe", router="eigen", num_experts=4, top_k=2),
              "dense": _vit(tmp_path / "dense.yaml", "dense")}
    protocol, out = _protocol(tmp_path, [models["ermoe"]], models), tmp_path / "out"
    table = _run(capsys, protocol, cohort12, out)

    subjects = set(pd.read_csv(cohort12 / "participants.tsv", sep="\t")["participant_id"])
    rows = {r["arm"]: r for r in table["models"]}
    assert set(rows) == {"ermoe", "dense", "sfcn", "constant"} and table["n_subjects_tested"] == table["n_cohort"] == 12
    for arm in ("ermoe", "dense", "sfcn"):
        assert rows[arm]["complete"] and rows[arm]["n"] == 12 and rows[arm]["epochs"] == 1
        tested = []
        for fold in range(3):
            folder = out / "results" / arm / f"fold{fold}"
            result = json.loads((folder / "result.json").read_text())
            pred = pd.read_csv(folder / "predictions.csv")
            assert list(pred.columns) == ["subject_id", "age", "predicted", "corrected", "fold"]
            assert (pred["fold"] == fold).all() and result["test_mae"] == pytest.approx(
                (pred["predicted"] - pred["age"]).abs().mean())
            # the choice is the lowest inner-val MAE, and the chosen unit never saw a test subject
            scores = [s["val_mae"] for s in result["selection"]]
            assert result["chosen"] == result["selection"][int(np.argmin(scores))]["candidate"]
            unit = out / "units" / f"fold{fold}" / result["chosen"]
            roles = pd.read_csv(unit / "splits.csv")
            assert set(roles.loc[roles["split"] == "test", "subject_id"]) == set(pred["subject_id"])
            assert roles.groupby("subject_id")["split"].nunique().max() == 1 and set(roles["subject_id"]) == subjects
            val = pd.read_csv(unit / "val_predictions.csv")
            assert set(val["subject_id"]) == set(roles.loc[roles["split"] == "val", "subject_id"])
            assert not set(val["subject_id"]) & set(pred["subject_id"])
            correction = result["bias_correction"]
            if correction:  # fitted on the inner-val predictions, applied to test
                slope, intercept = np.polyfit(val["age"], val["predicted"], 1)
                assert (correction["slope"], correction["intercept"]) == pytest.approx((slope, intercept))
                np.testing.assert_allclose(pred["corrected"], (pred["predicted"] - intercept) / slope)
            else:
                assert pred["corrected"].isna().all() and result["bias_correction_note"].startswith("not fitted")
            assert (unit / "metrics.csv").is_file()  # the learning curve survives the test-time predict
            fit = json.loads((unit / "fit.json").read_text())
            assert fit["n_test"] == len(pred) and fit["n_val"] == len(val) and fit["epochs_run"] == 1
            tested += pred["subject_id"].tolist()
        assert sorted(tested) == sorted(subjects)  # every subject tested exactly once
    ermoe_fit = json.loads(next((out / "units" / "fold0" / "ermoe").glob("*/fit.json")).read_text())
    assert 0 <= ermoe_fit["diagnostics_init"]["coherence_max"] <= 1 and ermoe_fit["diagnostics_end"]["load_cv"] >= 0
    pairs = {p["other"]: p for p in table["paired"]}
    assert set(pairs) == {"dense", "sfcn", "constant"} and all(p["raw"]["n"] == 12 for p in pairs.values())
    assert len(pairs["dense"]["raw"]["fold_signs"]) == 3
    assert table["machine"]["logical_cores"] >= 1 and "compare" in table["command"]
    assert (out / "table_protocol.md").read_text().count("\n| ") >= 6  # named after the protocol file

    # a rerun trains nothing and gives the same table
    before = _fit_times(out)
    assert _run(capsys, protocol, cohort12, out)["models"] == table["models"] and _fit_times(out) == before
    # a unit killed before it finished (no fit.json) is redone, the others are kept
    killed = next(iter(before))
    (out / killed).unlink()
    _run(capsys, protocol, cohort12, out)
    after = _fit_times(out)
    assert after.keys() == before.keys() and [k for k in before if after[k] != before[k]] == [killed]
    # adding a design to the ERMoE arm fits only its candidates and redoes the ERMoE selection
    other = _vit(tmp_path / "ermoe_top1.yaml", "moe", router="eigen", num_experts=4, top_k=1)
    grown = _run(capsys, _protocol(tmp_path, [models["ermoe"], other], models), cohort12, out)
    new = _fit_times(out)
    assert set(new) - set(after) == {k for k in new if "ermoe_top1" in k} and len(set(new) - set(after)) == 6
    assert all(new[k] == after[k] for k in after)
    for fold in range(3):
        result = json.loads((out / "results" / "ermoe" / f"fold{fold}" / "result.json").read_text())
        assert len(result["selection"]) == 4
    assert {r["arm"]: r["complete"] for r in grown["models"]}["ermoe"]
    # `table` reads the finished results without training
    assert main(["table", "--protocol", str(tmp_path / "protocol.yaml"), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"] == grown["models"]
    assert _fit_times(out) == new

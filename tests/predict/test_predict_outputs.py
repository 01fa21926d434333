"""Output columns of `brainage predict`: order, bias correction, flip-TTA uncertainty, routing maps, help text."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers.predict import read_rows, save_checkpoint, write_scans

from brainage.contracts.routing import load_routing, routing_filename
from brainage.predict import OUTPUT_COLUMNS, load_model, main
from brainage.predict.command import build_parser

CORRECTION = {"method": "test", "slope": 0.8, "intercept": 10.0, "fit_on": "val", "n": 5, "age_min": 20.0,
              "age_max": 80.0}


def _reference(model, path, tta: bool) -> tuple[float, float]:
    """Prediction of one file the simple way: preprocess, forward the scan (and its x-mirror), mean and std."""
    x = model.transform({"image": str(path)})["image"].as_tensor()[None]  # (1, 1, X, Y, Z)
    views = [x, x.flip(2)] if tta else [x]
    with torch.inference_mode():
        ages = [float(model.to_years(model.net(v, sex=torch.full((1,), float("nan"))).pred)[0]) for v in views]
    return float(np.mean(ages)), float(np.std(ages))


def test_tta_bias_correction_and_gaps(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "corrected.ckpt", bias_correction=CORRECTION, seed=3)
    scans = write_scans(tmp_path / "scans", 3)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject_id,path,age\n" + "".join(f"s{2 - i},{p},{40 + i}\n" for i, p in enumerate(scans)))
    out = tmp_path / "pred.csv"
    assert main(["--model", str(ckpt), "--input", str(manifest), "--output", str(out), "--tta", "--workers", "0",
                 "--batch-size", "2"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == OUTPUT_COLUMNS
    rows = read_rows(out)
    assert [r["subject_id"] for r in rows] == ["s2", "s1", "s0"]  # the manifest's order
    model = load_model(ckpt)
    for row in rows:
        pred, std = _reference(model, row["path"], tta=True)
        age = float(row["age"])
        assert float(row["predicted_age"]) == pytest.approx(pred, abs=0.006)
        assert float(row["uncertainty"]) == pytest.approx(std, abs=0.0006) and std > 0
        assert float(row["corrected_age"]) == pytest.approx((pred - 10.0) / 0.8, abs=0.01)
        assert float(row["brain_age_gap"]) == pytest.approx(pred - age, abs=0.01)
        assert float(row["corrected_gap"]) == pytest.approx((pred - 10.0) / 0.8 - age, abs=0.01)
        assert row["status"] == "ok" and row["error"] == ""
    assert "slope 0.800" in capsys.readouterr().out


def test_without_tta_or_correction_and_routing_maps(tmp_path, tiny_ckpt, capsys):
    write_scans(tmp_path / "scans", 2)
    out, routing = tmp_path / "pred.csv", tmp_path / "routing"
    assert main(["--model", str(tiny_ckpt), "--input", str(tmp_path / "scans"), "--output", str(out),
                 "--save-routing", str(routing), "--workers", "1"]) == 0
    assert "corrected_age = predicted_age: the model has no bias correction" in capsys.readouterr().out
    rows = read_rows(out)
    model = load_model(tiny_ckpt)
    for index, row in enumerate(rows):
        assert row["uncertainty"] == "" and row["age"] == "" and row["brain_age_gap"] == ""
        assert row["corrected_age"] == row["predicted_age"]
        assert float(row["predicted_age"]) == pytest.approx(_reference(model, row["path"], tta=False)[0], abs=0.006)
        saved = load_routing(routing / routing_filename(row["subject_id"], row["session"], index))
        assert saved.shape == (16, 16, 16) and len(saved.layers) == 1
        assert saved.predicted_age == pytest.approx(float(row["predicted_age"]), abs=0.006)
        assert saved.layers[0].expert_index.shape == (8, 2)  # (n tokens, k)
    assert sorted(p.name for p in routing.iterdir()) == sorted(
        routing_filename(r["subject_id"], r["session"], i) for i, r in enumerate(rows))


def test_help_documents_columns_models_and_exit_codes():
    text = build_parser().format_help()
    for needle in ("exit codes: 0 all rows ok; 1 some rows failed", "models:/<name>/<version>", "corrected_gap",
                   "uncertainty", "OUTPUT.partial", "--devices", "not for diagnosis"):
        assert needle in text, needle

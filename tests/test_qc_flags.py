"""Every command reads its inputs through `brainage.data.inputs.read_inputs`, so a scan that `brainage prepare` flagged
is left out (with its reason) by fit, predict, report and calibrate alike, unless --include-failed."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from brainage.calibrate import main as calibrate_main
from brainage.data.datamodule import BrainAgeDataModule
from brainage.predict import main as predict_main
from brainage.report.command import main as report_main
from tests.helpers.predict import GRID, SPACING, read_rows, save_checkpoint, write_scans

FAILED = "s1"
REASON = "qc_ncc 0.30 < 0.7"


def write_manifest(folder, ages: list[float]):
    """A prepared manifest over real scans; scan s1 failed QC."""
    scans = write_scans(folder, len(ages))
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["subject_id", "session", "path", "age", "sex", "site", "qc_ncc",
                                         "qc_status", "qc_reason"])
        writer.writeheader()
        for i, (scan, age) in enumerate(zip(scans, ages)):
            failed = f"s{i}" == FAILED
            writer.writerow({"subject_id": f"s{i}", "session": "", "path": scan.name, "age": age, "sex": "F",
                             "site": "A", "qc_ncc": 0.3 if failed else 0.95, "qc_status": "fail" if failed else "ok",
                             "qc_reason": REASON if failed else ""})
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("qc-model") / "tiny.ckpt")


@pytest.mark.parametrize("include_failed", [False, True])
def test_fit_leaves_out_flagged_scans(tmp_path, include_failed):
    manifest = write_manifest(tmp_path / "prepared", [30.0 + 5 * i for i in range(8)])
    dm = BrainAgeDataModule(str(manifest), spacing=SPACING, shape=GRID, include_failed=include_failed)
    table = dm.prepare_table()
    assert (FAILED in set(table["subject_id"])) == include_failed and len(table) == 8 - (not include_failed)
    assert any(REASON in d["reason"] for d in dm.dropped) != include_failed


@pytest.mark.parametrize("include_failed", [False, True])
def test_predict_leaves_out_flagged_scans(model, tmp_path, capsys, include_failed):
    manifest = write_manifest(tmp_path / "prepared", [40.0, 41.0, 42.0])
    out = tmp_path / "pred.csv"
    flag = ["--include-failed"] if include_failed else []
    assert predict_main(["--model", str(model), "--input", str(manifest), "--output", str(out), "--workers", "0",
                         *flag]) == 0
    assert [r["subject_id"] for r in read_rows(out)] == (["s0", "s1", "s2"] if include_failed else ["s0", "s2"])
    assert (REASON in capsys.readouterr().err) != include_failed


@pytest.mark.slow  # the report end to end
@pytest.mark.parametrize("include_failed", [False, True])
def test_report_leaves_out_flagged_scans(model, tmp_path, capsys, include_failed):
    manifest = write_manifest(tmp_path / "prepared", [40.0, 50.0, 60.0, 70.0])
    out = tmp_path / "report"
    flag = ["--include-failed"] if include_failed else []
    code = report_main(["--model", str(model), "--input", str(manifest), "--out", str(out), "--no-occlusion",
                        "--shuffles", "5", "--subject-figures", "0", "--workers", "0", *flag])
    assert code == 0, capsys.readouterr().err
    subjects = set(pd.read_csv(out / "tables" / "predictions.csv", dtype=str)["subject_id"])
    assert (FAILED in subjects) == include_failed and len(subjects) == 4 - (not include_failed)
    assert (REASON in capsys.readouterr().err) != include_failed


@pytest.mark.slow  # predict, then calibrate end to end
@pytest.mark.parametrize("include_failed", [False, True])
def test_calibrate_leaves_out_flagged_scans(model, tmp_path, capsys, include_failed):
    # ages = the model's own predictions plus a trend, so the fitted slope is well defined whatever the weights
    scans = tmp_path / "probe"
    write_scans(scans, 5)
    assert predict_main(["--model", str(model), "--input", str(scans), "--output", str(tmp_path / "p.csv"),
                         "--workers", "0"]) == 0
    predicted = [float(r["predicted_age"]) for r in read_rows(tmp_path / "p.csv")]
    ages = [p + 10.0 * i for i, p in enumerate(predicted)]  # write_scans is deterministic: same scans again
    manifest = write_manifest(tmp_path / "prepared", ages)
    out = tmp_path / "calibrated.ckpt"
    flag = ["--include-failed"] if include_failed else []
    assert calibrate_main(["--model", str(model), "--input", str(manifest), "--output", str(out), "--workers", "0",
                           "--min-slope", "1e-6", *flag]) == 0
    fit = json.loads(out.with_suffix(".card.json").read_text())["bias_correction"]
    assert fit["n"] == (5 if include_failed else 4)
    assert (REASON in capsys.readouterr().err) != include_failed

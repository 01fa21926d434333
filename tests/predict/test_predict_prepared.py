"""`brainage predict` on a `brainage prepare` manifest skips QC-flagged scans unless --include-failed."""

from __future__ import annotations

import csv

from tests.helpers.predict import read_rows, write_scans

from brainage.predict import main


def _manifest(tmp_path):
    scans = write_scans(tmp_path / "prepared", 3)
    path = tmp_path / "prepared" / "manifest.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["subject_id", "session", "path", "age", "sex", "site", "qc_ncc",
                                         "qc_status", "qc_reason"])
        writer.writeheader()
        for i, scan in enumerate(scans):
            failed = i == 1
            writer.writerow({"subject_id": f"s{i}", "session": "", "path": scan.name, "age": 40 + i, "sex": "F",
                             "site": "A", "qc_ncc": 0.3 if failed else 0.95, "qc_status": "fail" if failed else "ok",
                             "qc_reason": "qc_ncc 0.30 < 0.7" if failed else ""})
    return path


def test_flagged_scans_are_skipped_with_their_reason(tiny_ckpt, tmp_path, capsys):
    manifest = _manifest(tmp_path)
    out = tmp_path / "pred.csv"
    assert main(["--model", str(tiny_ckpt), "--input", str(manifest), "--output", str(out), "--workers", "0"]) == 0
    assert [r["subject_id"] for r in read_rows(out)] == ["s0", "s2"]
    assert "qc_ncc 0.30 < 0.7" in capsys.readouterr().err


def test_include_failed_predicts_them_too(tiny_ckpt, tmp_path):
    manifest = _manifest(tmp_path)
    out = tmp_path / "pred.csv"
    assert main(["--model", str(tiny_ckpt), "--input", str(manifest), "--output", str(out), "--workers", "0",
                 "--include-failed"]) == 0
    assert [r["subject_id"] for r in read_rows(out)] == ["s0", "s1", "s2"]

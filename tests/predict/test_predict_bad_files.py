"""Every kind of bad input gives its own error row with a clear reason; the good scans still finish."""

from __future__ import annotations

import gzip

import numpy as np
from tests.helpers.predict import brain, read_rows, write_scan

from brainage.predict import main


def test_each_bad_file_is_an_error_row_and_the_rest_finish(tmp_path, tiny_ckpt):
    scans = tmp_path / "scans"
    good = [write_scan(scans / "a_good.nii.gz", seed=1), write_scan(scans / "z_good.nii.gz", seed=2)]
    whole = good[0].read_bytes()
    (scans / "corrupt.nii.gz").write_bytes(whole[:20] + bytes(255 - b for b in whole[20:]))  # gzip header, bad deflate
    (scans / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    raw = write_scan(tmp_path / "raw.nii", seed=3).read_bytes()
    (scans / "truncated_raw.nii").write_bytes(raw[: len(raw) // 2])
    write_scan(scans / "flat2d.nii", brain((20, 20, 1))[..., 0])
    write_scan(scans / "fourd.nii.gz", np.stack([brain(), brain(seed=5)], axis=-1))
    nan = brain()
    nan[10, 10, 10] = np.nan
    write_scan(scans / "nan.nii.gz", nan)
    write_scan(scans / "constant.nii.gz", np.full((20, 20, 20), 7.0, np.float32))
    (scans / "text.nii.gz").write_bytes(gzip.compress(b"subject,age\nx,3\n" * 40))
    (scans / "random.nii").write_bytes(np.random.default_rng(0).bytes(600))
    out = tmp_path / "pred.csv"
    code = main(["--model", str(tiny_ckpt), "--input", str(scans), str(tmp_path / "missing.nii.gz"),
                 "--output", str(out), "--workers", "1", "--batch-size", "3"])
    rows = {r["subject_id"]: r for r in read_rows(out)}
    assert code == 1
    assert len(rows) == 12  # 2 good + 10 bad
    for name in ("a_good", "z_good"):
        assert rows[name]["status"] == "ok" and rows[name]["predicted_age"] != ""
    expected = {
        "corrupt": "corrupt.nii.gz: corrupt gzip data", "truncated": "truncated.nii.gz: truncated file",
        "truncated_raw": "truncated_raw.nii: truncated file",
        "flat2d": "expected a 3D volume", "fourd": "expected a 3D volume (or 4D with one volume)",
        "nan": "1 NaN/inf voxels", "constant": "constant image (every voxel = 7)",
        "text": "text.nii.gz: not a NIfTI image", "random": "random.nii: not a NIfTI image",
        "missing": "missing.nii.gz: file not found",
    }
    for name, needle in expected.items():
        row = rows[name]
        assert row["status"] == "error" and row["predicted_age"] == "", name
        assert needle in row["error"], (name, row["error"])

"""The prepared-manifest readers (pandas only: they must work without the 'prepare' extra)."""

from __future__ import annotations

import pytest

from brainage.prepare.manifest import is_prepared_manifest, load_prepared_manifest, read_prepared_inputs


def _manifest(tmp_path, write_nifti):
    write_nifti("prepared/a_T1w.nii.gz")
    write_nifti("prepared/b_T1w.nii.gz")
    path = tmp_path / "prepared" / "manifest.csv"
    path.write_text(
        "subject_id,session,path,age,sex,site,qc_ncc,qc_coverage,qc_status,qc_reason,source_path,skull_strip,spacing\n"
        "a,,a_T1w.nii.gz,30.5,F,X,0.95,1.0,ok,,/raw/a.nii.gz,deepbet,1.0\n"
        "b,,b_T1w.nii.gz,70,M,X,0.31,0.99,fail,template correlation 0.310 < 0.7,/raw/b.nii.gz,deepbet,1.0\n"
        "c,,c_T1w.nii.gz,50,M,X,,,fail,error: EOFError: truncated,/raw/c.nii.gz,deepbet,1.0\n")
    return path


def test_load_prepared_manifest_skips_flagged_scans(tmp_path, write_nifti):
    path = _manifest(tmp_path, write_nifti)
    assert is_prepared_manifest(path) and not is_prepared_manifest(tmp_path / "missing.csv")
    table = load_prepared_manifest(path)
    assert list(table["subject_id"]) == ["a"] and table.loc[0, "age"] == 30.5
    assert table.loc[0, "path"] == str(tmp_path / "prepared" / "a_T1w.nii.gz")
    assert {d["subject_id"]: d["reason"][:8] for d in table.attrs["dropped"]} == {"b": "QC fail:", "c": "QC fail:"}
    everything = load_prepared_manifest(path, include_failed=True)
    assert list(everything["qc_status"]) == ["ok", "fail", "fail"]
    assert everything["qc_ncc"].isna().tolist() == [False, False, True]


def test_read_prepared_inputs_mixes_manifests_and_plain_inputs(tmp_path, write_nifti):
    path = _manifest(tmp_path, write_nifti)
    other = write_nifti("other/z.nii.gz")
    table = read_prepared_inputs([str(path), str(other)])
    assert list(table["subject_id"]) == ["a", "z"]
    assert len(table.attrs["dropped"]) == 2


def test_load_prepared_manifest_rejects_other_tables(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("subject_id,path\na,a.nii.gz\n")
    with pytest.raises(ValueError, match="qc_status"):
        load_prepared_manifest(plain)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prepared_manifest(tmp_path / "nope.csv")

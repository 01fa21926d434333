"""The `brainage prepare` manifest through the one input entry point (pandas only: no 'prepare' extra needed)."""

from __future__ import annotations

import pandas as pd
import pytest

from brainage.data.inputs import read_inputs
from brainage.data.manifest import apply_qc, is_prepared_manifest

HEADER = "subject_id,session,path,age,sex,site,qc_ncc,qc_coverage,qc_status,qc_reason,source_path,skull_strip,spacing\n"


def write_manifest(folder, write_nifti):
    """A prepared manifest of 3 real scans: a passes QC, b and c failed."""
    for name in "abc":
        write_nifti(f"{folder.name}/{name}_T1w.nii.gz")
    path = folder / "manifest.csv"
    path.write_text(
        HEADER +
        "a,,a_T1w.nii.gz,30.5,F,X,0.95,1.0,ok,,/raw/a.nii.gz,deepbet,1.0\n"
        "b,,b_T1w.nii.gz,70,M,X,0.31,0.99,fail,template correlation 0.310 < 0.7,/raw/b.nii.gz,deepbet,1.0\n"
        "c,,c_T1w.nii.gz,50,M,X,,,fail,error: EOFError: truncated,/raw/c.nii.gz,deepbet,1.0\n")
    return path


def test_read_inputs_skips_flagged_scans_unless_asked(tmp_path, write_nifti):
    path = write_manifest(tmp_path / "prepared", write_nifti)
    assert is_prepared_manifest(path) and not is_prepared_manifest(tmp_path / "missing.csv")
    table = read_inputs(str(path))
    assert list(table["subject_id"]) == ["a"] and table.loc[0, "age"] == 30.5
    assert table.loc[0, "path"] == str(tmp_path / "prepared" / "a_T1w.nii.gz")
    assert {d["subject_id"]: d["reason"][:8] for d in table.attrs["dropped"]} == {"b": "QC fail:", "c": "QC fail:"}
    everything = read_inputs(str(path), include_failed=True)
    assert list(everything["qc_status"]) == ["ok", "fail", "fail"]
    assert everything["qc_ncc"].isna().tolist() == [False, False, True]


def test_manifests_mix_with_plain_inputs(tmp_path, write_nifti):
    path = write_manifest(tmp_path / "prepared", write_nifti)
    other = write_nifti("other/z.nii.gz")
    table = read_inputs([str(path), str(other)])
    assert list(table["subject_id"]) == ["a", "z"]
    assert len(table.attrs["dropped"]) == 2


def test_a_plain_table_is_not_a_prepared_manifest(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("subject_id,path\na,a.nii.gz\n")
    assert not is_prepared_manifest(plain)
    assert list(read_inputs(str(plain))["subject_id"]) == ["a"]
    with pytest.raises(ValueError, match="qc_status"):
        apply_qc(pd.DataFrame({"path": []}), plain)

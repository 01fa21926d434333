from __future__ import annotations

import math

import pytest

from brainage.data.inputs import parse_age, parse_sex, read_bids, read_inputs, read_table


@pytest.mark.parametrize("raw, expected", [("34", 34.0), ("26,9", 26.9), ("89+", 89.0), (" 45.5 ", 45.5)])
def test_parse_age_forms_in_the_wild(raw, expected):
    assert parse_age(raw) == pytest.approx(expected)


@pytest.mark.parametrize("raw", ["n/a", "", None, "NaN"])
def test_parse_age_missing(raw):
    assert math.isnan(parse_age(raw))


def test_parse_age_rejects_nonsense_naming_value():
    with pytest.raises(ValueError, match="'old'"):
        parse_age("old")
    with pytest.raises(ValueError, match="250"):
        parse_age("250")


@pytest.mark.parametrize("raw, expected", [("M", "M"), ("female", "F"), ("1", "M"), ("2", "F"), ("2.0", "F"),
                                           ("n/a", None)])
def test_parse_sex(raw, expected):
    assert parse_sex(raw) == expected


def test_read_bids_with_sessions_and_messy_participants(tmp_path, write_nifti):
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tsex\tsite\nsub-01\t26,9\tmale\tA\nsub-02\t89+\tF\tB\nsub-03\tn/a\tf\tA\n"
        "sub-04\told\tM\tA\nsub-05\t40\tM\tA\n")
    write_nifti("sub-01/anat/sub-01_T1w.nii.gz")
    write_nifti("sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz")
    write_nifti("sub-02/ses-2/anat/sub-02_ses-2_T1w.nii.gz")
    write_nifti("sub-03/anat/sub-03_T1w.nii.gz")
    write_nifti("sub-04/anat/sub-04_T1w.nii.gz")
    table = read_bids(tmp_path)
    assert list(table["subject_id"]) == ["sub-01", "sub-02", "sub-02", "sub-03"]
    assert list(table["session"]) == ["", "ses-1", "ses-2", ""]
    assert table["age"].iloc[0] == pytest.approx(26.9) and table["age"].iloc[1] == 89.0
    assert math.isnan(table["age"].iloc[3])
    assert list(table["sex"]) == ["M", "F", "F", "F"]
    reasons = {d["subject_id"]: d["reason"] for d in table.attrs["dropped"]}
    assert "old" in reasons["sub-04"] and "no sub-*" in reasons["sub-05"]


def test_read_table_configurable_columns_and_relative_paths(tmp_path, write_nifti):
    write_nifti("imgs/a.nii.gz")
    (tmp_path / "list.csv").write_text("ID,file,AGE\nx1,imgs/a.nii.gz,50\nx2,imgs/missing.nii.gz,60\n")
    table = read_table(tmp_path / "list.csv", path_column="file", subject_column="ID", age_column="AGE")
    assert list(table["subject_id"]) == ["x1", "x2"]
    assert table["path"].iloc[0] == str(tmp_path / "imgs/a.nii.gz")
    with pytest.raises(ValueError, match="list.csv.*'path'"):
        read_table(tmp_path / "list.csv")


def test_read_inputs_dispatch_folder_glob_and_missing(tmp_path, write_nifti):
    write_nifti("scans/a.nii.gz")
    write_nifti("scans/deep/b.nii")
    folder = read_inputs([str(tmp_path / "scans")])
    assert list(folder["subject_id"]) == ["a", "b"]
    globbed = read_inputs([str(tmp_path / "scans/**/*.nii*")])
    assert sorted(globbed["subject_id"]) == ["a", "b"]
    missing = read_inputs([str(tmp_path / "nope.nii.gz")])
    assert list(missing["subject_id"]) == ["nope"]

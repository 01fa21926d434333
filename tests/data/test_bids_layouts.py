"""BIDS as it is really written: layouts of the kind found in the official bids-examples (ds001: one session;
ds114: ses-test/ses-retest; several runs; acq- labels; per-session ages in sub-*_sessions.tsv), as real tiny NIfTI
files. Every scan gets its own (subject_id, session) key; all scans of a subject stay in one split."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.data.inputs import read_bids, read_inputs
from brainage.data.splits import split_subjects


def _t1(root: Path, relative: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return path


def _tsv(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_ds001_style_single_session(tmp_path):
    _tsv(tmp_path / "participants.tsv", "participant_id\tsex\tage\nsub-01\tF\t26\nsub-02\tM\t24\nsub-03\tF\t27\n")
    for s in ("01", "02", "03"):
        _t1(tmp_path, f"sub-{s}/anat/sub-{s}_T1w.nii.gz")
    table = read_inputs([str(tmp_path)])
    assert list(table["subject_id"]) == ["sub-01", "sub-02", "sub-03"]
    assert list(table["session"]) == ["", "", ""]
    assert list(table["age"]) == [26.0, 24.0, 27.0] and list(table["sex"]) == ["F", "M", "F"]
    assert table.attrs["dropped"] == []


def test_ds114_style_sessions_with_per_session_ages(tmp_path):
    """Two sessions; sub-01's sessions.tsv gives an age per session, sub-02 has none (participants.tsv age used),
    sub-03's sessions.tsv lists only one of its sessions and has a bad age for it."""
    _tsv(tmp_path / "participants.tsv", "participant_id\tage\tsex\nsub-01\t50\tM\nsub-02\t64\tF\nsub-03\t70\tF\n")
    _tsv(tmp_path / "sub-01/sub-01_sessions.tsv", "session_id\tacq_time\tage\nses-test\t2012-01-01T10:00:00\t50.2\n"
                                                   "ses-retest\t2014-03-01T10:00:00\t52,4\n")
    _tsv(tmp_path / "sub-03/sub-03_sessions.tsv", "session_id\tage\nretest\tseventy\n")  # id without the prefix
    for s in ("01", "02", "03"):
        for ses in ("test", "retest"):
            _t1(tmp_path, f"sub-{s}/ses-{ses}/anat/sub-{s}_ses-{ses}_T1w.nii.gz")
    table = read_bids(tmp_path)
    ages = {(r.subject_id, r.session): r.age for r in table.itertuples()}
    assert ages == {("sub-01", "ses-retest"): 52.4, ("sub-01", "ses-test"): 50.2,
                    ("sub-02", "ses-retest"): 64.0, ("sub-02", "ses-test"): 64.0, ("sub-03", "ses-test"): 70.0}
    (bad,) = table.attrs["dropped"]
    assert bad["subject_id"] == "sub-03" and "ses-retest" in bad["path"]
    assert bad["source"] == f"{tmp_path / 'sub-03/sub-03_sessions.tsv'}:2" and "seventy" in bad["reason"]


def test_runs_and_acquisitions_are_keyed_apart(tmp_path):
    """Two runs of one session and two acquisitions of another: four rows, four keys, one subject."""
    _tsv(tmp_path / "participants.tsv", "participant_id\tage\nsub-01\t33\n")
    _tsv(tmp_path / "sub-01/sub-01_sessions.tsv", "session_id\tage\nses-1\t33\nses-2\t35.5\n")
    files = ["sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz", "sub-01/ses-1/anat/sub-01_ses-1_run-2_T1w.nii.gz",
             "sub-01/ses-2/anat/sub-01_ses-2_acq-mprage_T1w.nii.gz",
             "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_rec-norm_run-01_T1w.nii"]
    for name in files:
        _t1(tmp_path, name)
    table = read_bids(tmp_path)
    assert set(table["subject_id"]) == {"sub-01"}
    assert sorted(table["session"]) == ["ses-1_run-1", "ses-1_run-2", "ses-2_acq-fast_rec-norm_run-01",
                                        "ses-2_acq-mprage"]
    assert not table.duplicated(["subject_id", "session"]).any()
    ages = dict(zip(table["session"], table["age"]))
    assert ages["ses-1_run-2"] == 33.0 and ages["ses-2_acq-mprage"] == 35.5  # the session's age, whatever the run


def test_runs_without_sessions_and_a_duplicate_file(tmp_path):
    """ds002-like runs directly under anat/; the same scan as .nii and .nii.gz is one key: the second is dropped."""
    _tsv(tmp_path / "participants.tsv", "participant_id\tage\nsub-01\t20\n")
    _t1(tmp_path, "sub-01/anat/sub-01_run-1_T1w.nii.gz")
    _t1(tmp_path, "sub-01/anat/sub-01_run-2_T1w.nii.gz")
    _t1(tmp_path, "sub-01/anat/sub-01_run-2_T1w.nii")
    table = read_bids(tmp_path)
    assert list(table["session"]) == ["run-1", "run-2"]
    (dup,) = table.attrs["dropped"]
    assert "same BIDS entities" in dup["reason"] and "run-2" in dup["reason"]


def test_session_folder_without_the_entity_in_the_name(tmp_path):
    """A name that omits ses- inside a ses- folder (seen in the wild) still gets the folder's session."""
    _tsv(tmp_path / "participants.tsv", "participant_id\tage\nsub-01\t20\n")
    _tsv(tmp_path / "sub-01/sub-01_sessions.tsv", "session_id\tage\nses-2\t22\n")
    _t1(tmp_path, "sub-01/ses-2/anat/sub-01_T1w.nii.gz")
    _t1(tmp_path, "sub-01/ses-2/anat/sub-01_run-2_T1w.nii.gz")
    table = read_bids(tmp_path)
    assert list(table["session"]) == ["ses-2", "ses-2_run-2"] and list(table["age"]) == [22.0, 22.0]


def test_all_scans_of_a_subject_land_in_one_split(tmp_path):
    lines = ["participant_id\tage\tsite"]
    for s in range(12):
        lines.append(f"sub-{s:02d}\t{20 + 5 * s}\t{'AB'[s % 2]}")
        for ses in (1, 2):
            for run in (1, 2):
                _t1(tmp_path, f"sub-{s:02d}/ses-{ses}/anat/sub-{s:02d}_ses-{ses}_run-{run}_T1w.nii.gz")
    _tsv(tmp_path / "participants.tsv", "\n".join(lines) + "\n")
    table = read_bids(tmp_path)
    assert len(table) == 48 and not table.duplicated(["subject_id", "session"]).any()
    split = split_subjects(table, val_fraction=0.25, test_fraction=0.25, seed=3)
    per_subject = table.assign(split=split).groupby("subject_id")["split"].nunique()
    assert (per_subject == 1).all() and set(split) == {"train", "val", "test"}


def test_sessions_table_without_participants(tmp_path):
    _tsv(tmp_path / "sub-07/sub-07_sessions.tsv", "session_id\tage\nses-a\t41\n")
    _t1(tmp_path, "sub-07/ses-a/anat/sub-07_ses-a_T1w.nii.gz")
    _t1(tmp_path, "sub-07/ses-b/anat/sub-07_ses-b_T1w.nii.gz")
    table = read_inputs([str(tmp_path)])
    assert list(table["age"][:1]) == [41.0] and math.isnan(table["age"].iloc[1])


def test_sessions_table_without_session_id_names_the_file(tmp_path):
    _tsv(tmp_path / "sub-01/sub-01_sessions.tsv", "session\tage\nses-1\t41\n")
    _t1(tmp_path, "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz")
    with pytest.raises(ValueError, match="sub-01_sessions.tsv.*'session_id'"):
        read_bids(tmp_path)

"""Inputs that used to hang, repeat, misread or silently lose rows (issue 16, point 7), and the row order.

Symlink loops under a `**` glob, non-UTF-8 file names, a manifest with only a `path` column, duplicate manifest
paths and duplicate participants.tsv ids.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from brainage.data.inputs import display_path, read_inputs, read_table, undecodable_name


def _tree_with_loops(root: Path, write_nifti, loops: int) -> Path:
    scan = write_nifti(f"{root.name}/a/b/sub-01_T1w.nii.gz")
    os.symlink(root / "a", root / "a" / "b" / "up")  # a -> a/b/up -> a ...
    if loops == 2:
        os.symlink(root, root / "a" / "root")  # and a second, independent cycle: paths multiply
    return scan


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loops", [1, 2])
def test_recursive_glob_through_symlink_loops_lists_each_file_once(tmp_path, write_nifti, loops):
    scan = _tree_with_loops(tmp_path / "ds", write_nifti, loops)
    for pattern in ("**/*.nii.gz", "**/sub-*_T1w.nii.gz", "a/**/*.nii*"):
        table = read_inputs([str(tmp_path / "ds" / pattern)])
        assert list(table["path"]) == [str(scan)], pattern
        assert table.attrs["dropped"] == []


@pytest.mark.timeout(60)
def test_folder_input_through_symlink_loops_lists_each_file_once(tmp_path, write_nifti):
    scan = _tree_with_loops(tmp_path / "ds", write_nifti, 2)
    assert list(read_inputs([str(tmp_path / "ds")])["path"]) == [str(scan)]


def test_glob_matches_like_the_standard_glob_without_loops(tmp_path, write_nifti):
    import glob

    for name in ("x/sub-1_T1w.nii.gz", "x/y/sub-2_T1w.nii", "x/y/z/sub-3_T1w.nii.gz", "x/.hidden/sub-4_T1w.nii.gz",
                 "x/sub-5_T2w.nii.gz", "sub-6_T1w.nii.gz"):
        write_nifti(name)
    for pattern in ("**/*_T1w.nii*", "x/**/*.nii.gz", "x/*/*.nii", "x/y/**", "**/y/*", "*.nii.gz", "x/sub-?_T1w.nii.gz",
                    "x/**/[sz]/*.nii.gz"):
        expected = sorted(p for p in glob.glob(str(tmp_path / pattern), recursive=True) if p.endswith((".nii", ".gz")))
        assert sorted(read_inputs([str(tmp_path / pattern)])["path"]) == expected, pattern


def test_symlinks_to_one_file_give_one_row_and_name_the_other(tmp_path, write_nifti):
    scan = write_nifti("ds/real/sub-01_T1w.nii.gz")
    os.symlink(tmp_path / "ds" / "real", tmp_path / "ds" / "alias")  # a second way into the folder: entered once
    table = read_inputs([str(tmp_path / "ds" / "**" / "*.nii.gz")])
    assert list(table["path"]) == [str(tmp_path / "ds" / "alias" / "sub-01_T1w.nii.gz")]  # sorted: alias first
    assert table.attrs["dropped"] == []
    os.symlink(scan, tmp_path / "ds" / "real" / "sub-01_link_T1w.nii.gz")  # a symlinked file: one row, named
    table = read_inputs([str(tmp_path / "ds" / "real" / "*.nii.gz")])
    assert list(table["path"]) == [str(tmp_path / "ds" / "real" / "sub-01_T1w.nii.gz")]
    [dropped] = table.attrs["dropped"]
    assert dropped["subject_id"] == "sub-01_link_T1w"
    assert dropped["reason"] == f"same file as {scan}: already listed as sub-01_T1w"


def test_non_utf8_file_name_is_a_named_row_not_a_crash(tmp_path, write_nifti):
    write_nifti("ds/good_T1w.nii.gz")
    folder = os.fsencode(tmp_path / "ds")
    bad = os.fsdecode(folder + b"/caf\xe9_T1w.nii.gz")  # Latin-1 e-acute: not UTF-8
    os.link(tmp_path / "ds" / "good_T1w.nii.gz", bad)
    for inputs in ([str(tmp_path / "ds")], [str(tmp_path / "ds" / "*.nii.gz")], [bad]):
        table = read_inputs(inputs)
        shown = [p for p in table["path"] if "caf" in p]
        assert shown == [str(tmp_path / "ds" / "caf\\xe9_T1w.nii.gz")], inputs
        assert shown[0].encode("utf-8")  # representable: the table, the journal and the CSV can hold it
        assert undecodable_name(shown[0]) == bad  # and it still leads back to the file
    assert display_path(str(tmp_path)) == str(tmp_path)
    assert undecodable_name(str(tmp_path / "ds" / "good_T1w.nii.gz")) is None


def test_manifest_with_only_a_path_column(tmp_path, write_nifti):
    a, b = write_nifti("a.nii.gz"), write_nifti("sub/b.nii.gz")
    (tmp_path / "m.csv").write_text("path\na.nii.gz\nsub/b.nii.gz\n")
    assert list(read_inputs([str(tmp_path / "m.csv")])["path"]) == [str(a), str(b)]
    (tmp_path / "m.tsv").write_text("path\r\na.nii.gz\r\n")
    assert list(read_table(tmp_path / "m.tsv")["path"]) == [str(a)]
    # delimiters still found: semicolons (European spreadsheets) and tabs in a .csv
    (tmp_path / "semi.csv").write_text("path;age\na.nii.gz;34,5\n")
    assert read_table(tmp_path / "semi.csv")["age"].tolist() == [34.5]
    (tmp_path / "tabs.csv").write_text("path\tage\na.nii.gz\t40\n")
    assert read_table(tmp_path / "tabs.csv")["age"].tolist() == [40.0]


def test_manifest_rows_keep_their_order(tmp_path, write_nifti):
    for name in ("z", "a", "m"):
        write_nifti(f"{name}.nii.gz")
    (tmp_path / "m.csv").write_text("subject_id,path\nz,z.nii.gz\na,a.nii.gz\nm,m.nii.gz\n")
    assert list(read_inputs([str(tmp_path / "m.csv")])["subject_id"]) == ["z", "a", "m"]
    # several inputs: in the order given; a folder's files sorted
    table = read_inputs([str(tmp_path / "z.nii.gz"), str(tmp_path / "m.csv")])
    assert list(table["subject_id"]) == ["z", "a", "m"]  # z only once: the manifest's z is a duplicate
    [dropped] = table.attrs["dropped"]
    assert dropped["reason"] == f"duplicate path: already listed as z ({tmp_path / 'z.nii.gz'})"


def test_duplicate_manifest_paths_are_named(tmp_path, write_nifti):
    write_nifti("a.nii.gz")
    write_nifti("b.nii.gz")
    (tmp_path / "m.csv").write_text(
        "subject_id,path,age\nA,a.nii.gz,30\nB,b.nii.gz,40\nA2,./a.nii.gz,31\nB,b.nii.gz,40\n")
    table = read_inputs([str(tmp_path / "m.csv")])
    assert list(table["subject_id"]) == ["A", "B"]
    dropped = table.attrs["dropped"]
    assert [(d["subject_id"], d["source"]) for d in dropped] == [("A2", f"{tmp_path / 'm.csv'}:4"),
                                                                  ("B", f"{tmp_path / 'm.csv'}:5")]
    assert all(d["reason"].startswith("duplicate path: already listed as") for d in dropped)


def test_duplicate_participant_ids_are_named(tmp_path, write_nifti):
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tsex\nsub-01\t30\tM\nsub-02\t40\tF\nsub-01\t30\tM\nsub-02\t41\tF\n")
    write_nifti("sub-01/anat/sub-01_T1w.nii.gz")
    write_nifti("sub-02/anat/sub-02_T1w.nii.gz")
    table = read_inputs([str(tmp_path)])
    ages = dict(zip(table["subject_id"], table["age"]))
    assert ages["sub-01"] == 30.0  # duplicates that agree: the first row is kept
    assert ages["sub-02"] != ages["sub-02"]  # conflicting duplicates: the age is unknown, not a silent pick
    reasons = {d["subject_id"]: d["reason"] for d in table.attrs["dropped"]}
    assert "duplicate participant_id (kept line 2)" in reasons["sub-01"]
    assert "conflicting" in reasons["sub-02"] and "40" in reasons["sub-02"] and "41" in reasons["sub-02"]

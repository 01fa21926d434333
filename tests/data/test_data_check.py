from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from brainage.data.check import main


def _clean_bids(tmp_path, write_nifti):
    (tmp_path / "ds" / "participants.tsv").parent.mkdir(parents=True)
    (tmp_path / "ds" / "participants.tsv").write_text(
        "participant_id\tage\tsex\tsite\nsub-01\t30\tM\tA\nsub-02\t55.5\tF\tB\nsub-03\t71\tF\tB\n")
    for sub in ("01", "02", "03"):
        write_nifti(f"ds/sub-{sub}/anat/sub-{sub}_T1w.nii.gz")
    return tmp_path / "ds"


def test_clean_dataset_exits_0_and_summarises(tmp_path, write_nifti, capsys):
    root = _clean_bids(tmp_path, write_nifti)
    assert main(["check", str(root), "--validate", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "(bids)" in out and "scans: 3" in out and "subjects: 3" in out
    assert "age: 30.0-71.0 y (median 55.5)" in out and "sex: F 2, M 1" in out and "sites: A 1, B 2" in out
    assert "dropped: 0" in out and "bad files: 0" in out


def test_dropped_rows_and_bad_files_are_listed_with_reasons(tmp_path, write_nifti, capsys):
    root = _clean_bids(tmp_path, write_nifti)
    with open(root / "participants.tsv", "a") as handle:
        handle.write("sub-04\told\tM\tA\nsub-05\t40\tM\tA\nsub-06\t44\tF\tA\nsub-07\t50\tM\tA\n")
    write_nifti("ds/sub-04/anat/sub-04_T1w.nii.gz")
    write_nifti("ds/sub-06/anat/sub-06_T1w.nii.gz", np.ones((20, 20, 20), np.float32))  # constant
    (root / "sub-07" / "anat").mkdir(parents=True)
    (root / "sub-07" / "anat" / "sub-07_T1w.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)  # corrupt

    assert main(["check", str(root)]) == 1  # without --validate: dropped rows only
    out = capsys.readouterr().out
    assert "dropped: 2" in out and "sub-04" in out and "'old'" in out and "sub-05" in out and "no sub-*" in out
    assert "bad files: 0 (missing only" in out

    assert main(["check", str(root), "--validate", "--verbose"]) == 1
    out = capsys.readouterr().out
    assert "bad files: 2" in out
    bad = [line for line in out.splitlines() if line.startswith("  ") and "sub-0" in line and "_T1w" in line]
    assert any("sub-06_T1w.nii.gz" in line and "constant image" in line for line in bad)
    assert any("sub-07_T1w.nii.gz" in line for line in bad)
    assert "sub-01 - age=30 sex=M site=A" in out  # --verbose lists the scans


def test_manifest_with_missing_file_and_usage_errors(tmp_path, write_nifti, capsys):
    write_nifti("a.nii.gz")
    (tmp_path / "list.csv").write_text("path,age\na.nii.gz,40\ngone.nii.gz,50\n")
    assert main(["check", str(tmp_path / "list.csv")]) == 1
    out = capsys.readouterr().out
    assert "gone.nii.gz: file not found" in out and "bad files: 1" in out
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


@pytest.mark.slow  # end to end in a subprocess
def test_cli_subprocess_on_ixi_folder(tmp_path, write_nifti):
    write_nifti("ixi/IXI002-Guys-0828-T1.nii.gz")
    write_nifti("ixi/IXI012-HH-1211-T1.nii.gz")
    (tmp_path / "ixi" / "IXI.csv").write_text("IXI_ID,\"SEX_ID (1=m, 2=f)\",AGE\n2,2,35.8\n12,1,38.78\n")
    done = subprocess.run([sys.executable, "-m", "brainage.cli", "data", "check", str(tmp_path / "ixi"), "--validate"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(ixi)" in done.stdout and "sites: Guys 1, HH 1" in done.stdout and "sex: F 1, M 1" in done.stdout


def test_empty_folder_exits_2_with_one_clear_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["check", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"brainage data check: no scans found in {tmp_path / 'empty'}")

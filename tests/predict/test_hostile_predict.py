"""`brainage predict` against hostile models, files and output folders (issue 16, points 4, 5, 7 and 8).

Every case ends either in rows (status=error with a reason naming the file, the rest finish, exit 1) or, for
problems with the command itself, in one clear line and exit 2 before the work starts where that can be known.
"""

from __future__ import annotations

import csv
import fcntl
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from brainage.data.fastpath import accelerate
from brainage.predict import LoadedModel, main
from tests.helpers.bombs import write_claiming
from tests.helpers.filesystem import fill, small_tmpfs
from tests.helpers.predict import read_rows, save_checkpoint, write_scan, write_scans


def _predict(*argv: object) -> int:
    return main([str(a) for a in argv])


# --- 4. non-finite model outputs ---------------------------------------------------------------------------------

def _overflowing_head(state: dict) -> None:
    state["head.weight"].fill_(3e38)  # finite weights (accepted at load) whose output overflows to inf / NaN
    state["head.bias"].fill_(3e38)


@pytest.mark.parametrize("tta", [False, True])
def test_non_finite_prediction_is_an_error_row(tmp_path, capsys, tta):
    ckpt = save_checkpoint(tmp_path / "overflow.ckpt", edit_state=_overflowing_head)
    write_scans(tmp_path / "scans", 2)
    out = tmp_path / "pred.csv"
    code = _predict("--model", ckpt, "--input", tmp_path / "scans", "--output", out, "--workers", 0,
                    *(["--tta"] if tta else []))
    assert code == 1
    rows = read_rows(out)
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "error" and row["predicted_age"] == "" and row["corrected_age"] == ""
        assert "model output is not finite" in row["error"] and row["path"] in row["error"]
    assert "0 of 2 scans predicted, 2 failed" in capsys.readouterr().out


# --- 5. decompression bombs, impossible headers, dying decode workers ---------------------------------------------

def test_bomb_and_impossible_header_are_error_rows_naming_the_claim(tmp_path, tiny_ckpt):
    scans = tmp_path / "scans"
    write_scans(scans, 2)
    write_claiming(scans / "bomb.nii.gz", (600, 600, 600))  # 216 M voxels in a ~0.2 MB file
    write_claiming(scans / "impossible.nii", (32767, 32767, 32767), np.int16, data_bytes=64)
    out = tmp_path / "pred.csv"
    assert _predict("--model", tiny_ckpt, "--input", scans, "--output", out, "--workers", 1) == 1
    rows = {r["subject_id"]: r for r in read_rows(out)}
    assert [rows[f"sub-{i:04d}_T1w"]["status"] for i in range(2)] == ["ok", "ok"]
    assert "bomb.nii.gz: header claims 216,000,000 voxels (216.0 MB); limit 134,217,728 voxels" in rows["bomb"]["error"]
    assert "header claims 35,181,150,961,663 voxels (70,362.30 GB)" in rows["impossible"]["error"]
    assert all(rows[name]["status"] == "error" for name in ("bomb", "impossible"))


def test_max_voxels_option(tmp_path, tiny_ckpt, capsys):
    write_scans(tmp_path / "scans", 1)  # 20^3 = 8,000 voxels
    out = tmp_path / "pred.csv"
    assert _predict("--model", tiny_ckpt, "--input", tmp_path / "scans", "--output", out, "--max-voxels", 7999) == 1
    assert "header claims 8,000 voxels (32.0 kB); limit 7,999 voxels" in read_rows(out)[0]["error"]
    assert _predict("--model", tiny_ckpt, "--input", tmp_path / "scans", "--output", out, "--max-voxels", 8000) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:  # argparse: usage error, exit 2
        _predict("--model", tiny_ckpt, "--input", tmp_path / "scans", "--output", out, "--max-voxels", 0)
    assert stopped.value.code == 2 and "--max-voxels (0) must be >= 1" in capsys.readouterr().err


_MAIN_PID = os.getpid()


class KillOnMarker:
    """The real decode chain, except that a decode worker SIGKILLs itself on a file that has a `<path>.kill` marker
    next to it: what the kernel's out-of-memory killer does to a worker inflating a bomb."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, data: dict) -> dict:
        if os.getpid() != _MAIN_PID and Path(str(data["image"]) + ".kill").exists():
            os.kill(os.getpid(), signal.SIGKILL)
        return self.transform(data)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_decode_worker_gives_an_error_row_and_the_run_goes_on(tmp_path, tiny_ckpt, monkeypatch, workers):
    monkeypatch.setattr(LoadedModel, "transform",
                        property(lambda self: KillOnMarker(accelerate(self.preprocessing.deterministic()))))
    scans = write_scans(tmp_path / "scans", 7)
    for victim in (scans[1], scans[5]):
        Path(str(victim) + ".kill").touch()
    out = tmp_path / "pred.csv"
    assert _predict("--model", tiny_ckpt, "--input", tmp_path / "scans", "--output", out, "--workers", workers,
                    "--batch-size", 2) == 1
    rows = read_rows(out)
    assert [r["path"] for r in rows] == [str(p) for p in scans]
    for i, row in enumerate(rows):
        if i in (1, 5):
            assert row["status"] == "error" and "decode worker died" in row["error"] and "SIGKILL" in row["error"]
            assert row["error"].startswith(row["path"])
        else:
            assert row["status"] == "ok", row


# --- 7. non-UTF-8 file names ------------------------------------------------------------------------------------

def test_non_utf8_file_name_is_an_error_row_naming_it(tmp_path, tiny_ckpt):
    scans = tmp_path / "scans"
    write_scans(scans, 2)
    bad = os.fsdecode(os.fsencode(scans) + b"/caf\xe9_T1w.nii.gz")
    write_scan(Path(bad), seed=7)
    out = tmp_path / "pred.csv"
    assert _predict("--model", tiny_ckpt, "--input", scans, "--output", out, "--workers", 1) == 1
    rows = {r["subject_id"]: r for r in read_rows(out)}  # the CSV is valid UTF-8
    shown = rows["caf\\xe9_T1w"]
    assert shown["status"] == "error" and shown["path"] == str(scans / "caf\\xe9_T1w.nii.gz")
    assert "file name is not valid UTF-8" in shown["error"] and "caf\\xe9_T1w.nii.gz" in shown["error"]
    assert [rows[f"sub-{i:04d}_T1w"]["status"] for i in range(2)] == ["ok", "ok"]


# --- 8. output problems: one clear line, exit 2, before the work -------------------------------------------------

def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("brainage predict: "), err
    return lines[0]


def test_output_that_is_a_folder_or_below_a_file_is_refused_first(tmp_path, tiny_ckpt, capsys):
    write_scans(tmp_path / "scans", 1)
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "file").write_text("x")
    for output, needle in ((tmp_path / "folder.csv", "is a folder"), (tmp_path / "file" / "out.csv", "cannot write")):
        assert _predict("--model", tiny_ckpt, "--input", tmp_path / "scans", "--output", output) == 2
        line = _one_line(capsys.readouterr().err)
        assert needle in line and str(output) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.csv", "scans"]  # no journal, no lock


def test_full_output_disk(tmp_path, tiny_ckpt, capsys, caplog):
    write_scans(tmp_path / "scans", 40)
    with small_tmpfs(tmp_path, "64k") as disk:
        fill(disk)  # full before the run: refused before any prediction
        assert _predict("--model", tiny_ckpt, "--input", tmp_path / "scans", "--output", disk / "p.csv") == 2
        assert "No space left on device" in _one_line(capsys.readouterr().err)
        (disk / "filler").unlink()
        fill(disk, leave_bytes=3 * 4096)  # room for the lock and a short journal: fills up during the run
        code = _predict("--model", tiny_ckpt, "--input", tmp_path / "scans", "--output", disk / "p.csv",
                        "--batch-size", 1, "--workers", 0)
        line = _one_line(capsys.readouterr().err)
        assert code == 2 and "No space left on device" in line and "rerun" in line, line
        assert not (disk / "p.csv").exists() and not (disk / "p.csv.lock").exists()
        (disk / "filler").unlink()  # space again: the rerun resumes from the journal and finishes
        with caplog.at_level("WARNING"):
            assert _predict("--model", tiny_ckpt, "--input", tmp_path / "scans", "--output", disk / "p.csv") == 0
        assert "resuming:" in caplog.text
        assert len(read_rows(disk / "p.csv")) == 40


def test_second_predict_on_the_same_output_is_refused(tmp_path, tiny_ckpt, capsys):
    write_scans(tmp_path / "scans", 1)
    out = tmp_path / "pred.csv"
    with open(tmp_path / "pred.csv.lock", "a") as held:  # another predict holds the output's lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _predict("--model", tiny_ckpt, "--input", tmp_path / "scans", "--output", out) == 2
        assert "another brainage predict" in _one_line(capsys.readouterr().err)
        assert not out.exists()
    assert _predict("--model", tiny_ckpt, "--input", tmp_path / "scans", "--output", out) == 0  # released: runs
    assert not (tmp_path / "pred.csv.lock").exists()  # and leaves no lock file behind


def test_rows_come_back_in_input_order(tmp_path, tiny_ckpt):
    scans = write_scans(tmp_path / "scans", 3)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject_id,path\n" + "".join(f"s{9 - i},{p}\n" for i, p in enumerate(scans)))
    out = tmp_path / "pred.csv"
    assert _predict("--model", tiny_ckpt, "--input", manifest, "--output", out, "--workers", 0) == 0
    assert [r["subject_id"] for r in read_rows(out)] == ["s9", "s8", "s7"]  # the manifest's order
    assert _predict("--model", tiny_ckpt, "--input", scans[2], scans[0], "--output", out, "--workers", 0) == 0
    assert [r["path"] for r in read_rows(out)] == [str(scans[2]), str(scans[0])]  # the order of --input


def test_help_and_docs_say_what_the_code_does():
    from brainage.predict.command import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "in input order" in text and "a manifest's rows in file order" in text
    docs = " ".join((Path(__file__).resolve().parents[2] / "docs" / "predict.md").read_text().split())
    assert "a manifest's rows in file order" in docs
    assert "tests/predict/test_hostile_predict.py" in docs  # the reliability section names its tests


def test_rows_are_plain_csv(tmp_path, tiny_ckpt):
    """A subject id with a newline, quotes and commas survives the journal and the CSV."""
    scan = write_scans(tmp_path / "scans", 1)[0]
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([["subject_id", "path"], ['a "b",\nc', str(scan)]])
    out = tmp_path / "pred.csv"
    assert _predict("--model", tiny_ckpt, "--input", manifest, "--output", out, "--workers", 0) == 0
    assert [r["subject_id"] for r in read_rows(out)] == ['a "b",\nc']
    assert torch.isfinite(torch.tensor(float(read_rows(out)[0]["predicted_age"])))

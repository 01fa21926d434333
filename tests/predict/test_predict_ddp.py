"""Scale-out: `brainage predict --devices 2 --accelerator cpu` runs Lightning DDP (gloo, 2 processes) and the merged
CSV has every input exactly once, with the same rows as a single-process run; an interrupted DDP run resumes from
its shards."""

from __future__ import annotations

import subprocess
import sys

import pytest

from brainage.predict import load_model, main
from brainage.predict.command import build_parser, run_settings
from brainage.predict.output import Journal, journal_path
from tests.helpers.predict import read_rows, write_scan, write_scans

pytestmark = pytest.mark.slow  # 2-process DDP prediction


def test_two_process_ddp_merges_every_row_once(tmp_path, tiny_ckpt):
    scans = tmp_path / "scans"
    write_scans(scans, 7)  # odd: the two ranks get 4 and 3 inputs, nothing padded
    (scans / "broken.nii.gz").write_bytes(b"not a nifti")
    write_scan(scans / "routing_only_on_ok.nii.gz", seed=9)
    single = tmp_path / "single.csv"
    assert main(["--model", str(tiny_ckpt), "--input", str(scans), "--output", str(single), "--workers", "0",
                 "--threads", "1"]) == 1
    out = tmp_path / "ddp" / "pred.csv"
    command = [sys.executable, "-m", "brainage.cli", "predict", "--model", str(tiny_ckpt), "--input", str(scans),
               "--output", str(out), "--devices", "2", "--accelerator", "cpu", "--workers", "0", "--threads", "1",
               "--batch-size", "2", "--save-routing", str(tmp_path / "routing")]
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-3000:]  # one bad file
    assert "8 of 9 scans predicted, 1 failed" in run.stdout
    rows = read_rows(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 9  # no duplicate, no missing row
    expected = read_rows(single)
    assert [r["path"] for r in expected] == paths  # same stable order
    for got, want in zip(rows, expected):
        assert got["status"] == want["status"] and got["error"] == want["error"]
        if got["status"] == "ok":
            assert abs(float(got["predicted_age"]) - float(want["predicted_age"])) <= 0.011
    assert len(list((tmp_path / "routing").glob("*.npz"))) == 8
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred.csv"]  # shards merged and removed


def test_ddp_resumes_from_shards_when_a_process_has_nothing_left(tmp_path, tiny_ckpt):
    """An interrupted DDP run left a shard with one of two rows: one input remains, so rank 1 gets no work."""
    scans = tmp_path / "scans"
    write_scans(scans, 2)
    single = tmp_path / "single.csv"
    assert main(["--model", str(tiny_ckpt), "--input", str(scans), "--output", str(single), "--workers", "0"]) == 0
    expected = read_rows(single)
    out = tmp_path / "ddp" / "pred.csv"
    argv = ["--model", str(tiny_ckpt), "--input", str(scans), "--output", str(out), "--devices", "2",
            "--accelerator", "cpu", "--workers", "0", "--threads", "1"]
    with Journal(journal_path(out, rank=1), run_settings(build_parser().parse_args(argv), load_model(tiny_ckpt))) as j:
        j.write(expected[1:])
    run = subprocess.run([sys.executable, "-m", "brainage.cli", "predict", *argv], check=False, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert read_rows(out) == expected
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred.csv"]

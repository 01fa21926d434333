"""A prediction run killed with SIGKILL and restarted with the same arguments skips the finished files and writes
the same CSV as an uninterrupted run; the journal survives a torn last record."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brainage.predict import load_model, main
from brainage.predict.command import build_parser, run_settings
from brainage.predict.output import Journal, journal_path
from tests.helpers.predict import write_scans

pytestmark = pytest.mark.slow  # kills a prediction run and resumes it

N = 40


def _command(ckpt: Path, scans: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "brainage.cli", "predict", "--model", str(ckpt), "--input", str(scans),
            "--output", str(out), "--batch-size", "1", "--workers", "0", "--threads", "1"]


def _journal_rows(path: Path) -> int:
    return max(0, path.read_bytes().count(b"\n") - 1) if path.exists() else 0  # minus the settings line


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path, tiny_ckpt):
    scans = tmp_path / "scans"
    write_scans(scans, N)
    reference = tmp_path / "reference.csv"  # the uninterrupted run (in this process: same code, saves a start-up)
    assert main(_command(tiny_ckpt, scans, reference)[4:]) == 0

    out = tmp_path / "killed.csv"
    journal = journal_path(out)
    proc = subprocess.Popen(_command(tiny_ckpt, scans, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _journal_rows(journal) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = _journal_rows(journal)
    assert 3 <= done_at_kill < N, done_at_kill  # killed partway
    assert not out.exists()  # nothing half-written where the output belongs

    rerun = subprocess.run(_command(tiny_ckpt, scans, out), check=False, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    skipped = int(rerun.stderr.split("resuming: ")[1].split(" of ")[0])
    assert skipped >= done_at_kill - 1  # at most the torn last record is redone
    assert out.read_bytes() == reference.read_bytes()
    assert not journal.exists()


def test_torn_journal_record_is_redone(tmp_path, tiny_ckpt, caplog):
    scans = tmp_path / "scans"
    write_scans(scans, 3)
    out = tmp_path / "pred.csv"
    argv = ["--model", str(tiny_ckpt), "--input", str(scans), "--output", str(out), "--workers", "0"]
    assert main(argv) == 0
    reference = out.read_bytes()
    assert main([*argv, "--batch-size", "1"]) == 0
    assert out.read_bytes() == reference  # the batch size does not change the rows
    out.unlink()
    # the journal of a killed run: one finished record, then a record torn mid-write
    rows = list(csv.DictReader(io.StringIO(reference.decode())))
    with Journal(journal_path(out), run_settings(build_parser().parse_args(argv), load_model(tiny_ckpt))) as journal:
        journal.write(rows[:1])
    with open(journal_path(out), "a") as handle:
        handle.write(f"{rows[1]['path']},{rows[1]['subject_id']},,{rows[1]['path'][:5]}")
    with caplog.at_level("WARNING"):
        assert main(argv) == 0
    assert "resuming: 1 of 3 inputs already done" in caplog.text
    assert out.read_bytes() == reference
    assert not journal_path(out).exists()

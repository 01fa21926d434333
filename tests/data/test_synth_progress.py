"""`brainage synth` says what it wrote, and --verbose shows its progress bar even when stderr is not a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two synth processes (template context + imports: minutes on a loaded machine)

ROOT = Path(__file__).resolve().parents[2]


def _synth(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brainage.cli", "synth", "--n", "2", "--out", str(out), "--spacing",
                           "8", "--workers", "1", *extra], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_synth_reports_progress_and_what_it_wrote(tmp_path):
    verbose = _synth(tmp_path / "c", "--verbose")  # stderr is a pipe here, not a terminal
    assert verbose.returncode == 0, verbose.stderr
    assert f"wrote 2 subjects to {tmp_path / 'c'}" in verbose.stdout
    assert "synth: 100%" in verbose.stderr and "2/2" in verbose.stderr
    quiet = _synth(tmp_path / "q")
    assert quiet.returncode == 0 and "synth:" not in quiet.stderr  # no terminal, no --verbose: no bar

"""The MoE layer benchmark runs end to end and ends with one JSON line (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # end to end in a subprocess
def test_moe_layer_benchmark_quick() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "moe_layer.py"), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=True,
    )  # fmt: skip
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"moe_vs_dense", "maskall_vs_moe"} <= set(last)
    assert last["moe_vs_dense"] > 0 and last["maskall_vs_moe"] > 0
    assert "ermoe" in proc.stdout and "mask-all" in proc.stdout

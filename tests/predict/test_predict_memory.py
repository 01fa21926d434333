"""Streaming: the prediction process's memory does not grow with the number of files (50 vs 200 real scans)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from brainage.predict import main
from tests.helpers.predict import write_scans

pytestmark = pytest.mark.slow  # predicts 200 files


def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _run(ckpt: Path, inputs: list[Path], out: Path) -> tuple[int, int]:
    """(tracemalloc peak bytes, peak RSS KiB) of one `brainage predict` run in this process (decoding here too)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (Linux)
    tracemalloc.start()
    try:
        assert main(["--model", str(ckpt), "--input", *map(str, inputs), "--output", str(out), "--workers", "0",
                     "--batch-size", "4", "--threads", "1", "--save-routing", str(out.parent / "routing")]) == 0
        return tracemalloc.get_traced_memory()[1], _peak_rss_kib()
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_files(tmp_path, tiny_ckpt):
    first, rest = tmp_path / "first50", tmp_path / "next150"
    write_scans(first, 50)
    for i, path in enumerate(write_scans(rest, 150)):
        path.rename(rest / f"sub-x{i:04d}_T1w.nii.gz")
    _run(tiny_ckpt, [first / "sub-0000_T1w.nii.gz"], tmp_path / "warmup" / "p.csv")  # lazy imports and caches
    small_py, small_rss = _run(tiny_ckpt, [first], tmp_path / "small" / "p.csv")
    large_py, large_rss = _run(tiny_ckpt, [first, rest], tmp_path / "large" / "p.csv")
    per_file = (large_py - small_py) / 150
    print(f"python heap peak {small_py / 2**20:.2f} -> {large_py / 2**20:.2f} MiB ({per_file:.0f} B/file); "
          f"peak RSS {small_rss / 1024:.1f} -> {large_rss / 1024:.1f} MiB")
    # rows, the input table and the journal cost a few KB per file; one decoded scan (20^3 float64) alone is 64 KB
    assert per_file < 16_000, per_file
    assert large_rss - small_rss < 24 * 1024  # KiB; keeping the 150 extra decoded scans would add > 9 MiB heap
    assert len((tmp_path / "large" / "p.csv").read_text().splitlines()) == 201

"""A real small filesystem for disk-full tests: a tmpfs mounted in a temporary folder (needs mount rights, e.g. root
in a container); tests that use it are skipped where it cannot be made."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["fill", "small_tmpfs"]


@contextmanager
def small_tmpfs(parent: Path, size: str = "64k") -> Iterator[Path]:
    """Mount a tmpfs of `size` at a new folder under `parent`; unmounted on exit; pytest.skip when not allowed."""
    mount = parent / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir(parents=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave_bytes: int = 0) -> None:
    """Fill the filesystem at `mount` with one file until at most `leave_bytes` are free."""
    stat = os.statvfs(mount)
    free = stat.f_bavail * stat.f_frsize
    with open(mount / "filler", "wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))

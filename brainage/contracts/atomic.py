"""Atomic file writes: readers never see half a file, and a crash leaves either the old file or the new one.

The new content goes to a uniquely named temporary file in the target's folder (so concurrent writers never share
one), is fsynced, then renamed over the target (`os.replace`, atomic on POSIX); the folder is fsynced so that the
rename itself survives a crash. The temporary file keeps the target's extension (`.nii.gz`, `.npz`, ...), which
writers such as nibabel and numpy read to choose the format.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic"]


def _extension(name: str) -> str:
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` atomically, on error it is removed.

    Example::

        with atomic_path("out/table.csv") as tmp:
            frame.to_csv(tmp, index=False)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp{_extension(path.name)}")
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if fsync:
        _fsync(path.parent, directory=True)


def write_bytes_atomic(path: str | Path, data: bytes, fsync: bool = True) -> Path:
    with atomic_path(path, fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, fsync: bool = True) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), fsync)

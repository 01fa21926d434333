"""NIfTI files whose header lies about their size: decompression bombs and impossible dimensions."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["write_claiming"]


def write_claiming(path: Path, shape: tuple[int, ...], dtype=np.uint8, data_bytes: int | None = None,
                   spacing: float = 1.0) -> Path:
    """A single-file NIfTI-1 (.nii.gz when the name says so) whose header claims `shape` x `dtype`, followed by
    `data_bytes` zero bytes (default: exactly the claimed size, i.e. a real, highly compressible volume)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_zooms((spacing,) * len(shape))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header["magic"] = b"n+1"
    header["vox_offset"] = 352
    size = math.prod(shape) * np.dtype(dtype).itemsize if data_bytes is None else data_bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = bytes(1 << 24)
    with open(path, "wb") as raw, (gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1)
                                   if path.name.endswith(".gz") else raw) as handle:
        handle.write(header.binaryblock)
        handle.write(b"\0" * 4)  # no extensions
        while size > 0:
            handle.write(chunk[: min(size, len(chunk))])
            size -= len(chunk)
    return path

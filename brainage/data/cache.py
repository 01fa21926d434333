"""Persistent on-disk cache of the deterministic preprocessing: decode + resample each scan once, reuse it forever.

MONAI's PersistentDataset idea (Project-MONAI tutorials, "fast model training guide"): everything before the first
random transform is cached. Decoding a .nii.gz is ~90 % zlib inflate (10-20 vol/s per core), so reading a cached
float16 array instead is 10x cheaper (team notes, performance.md section 3).

Layout: `<cache_dir>/<config key>/<ab>/<sha1>.pt`, a `torch.save` of {"image": (1, X, Y, Z) float16 tensor, "affine":
(4, 4) float64 tensor}, read back with `torch.load(weights_only=True, mmap=True)` (no pickled code; about 2x faster
than an .npz here, which checks CRCs and copies).

- Content key: SHA-1 of the whole input file's bytes (not its name or mtime), so renamed or copied files hit and an
  edited file misses. Hashing reads the file once (~1 GB/s), far cheaper than decoding it.
- Config key: SHA-1 of `Preprocessing.cache_config()` plus `CACHE_VERSION` and the MONAI/nibabel versions; a
  different spacing, grid or library version writes to another folder, so stale entries are never read.
- Concurrency: an entry is written to a unique temporary file in its folder and moved into place with `os.replace`
  (atomic on POSIX and Windows), so processes sharing a cache see either no entry or a complete one; two writers of
  the same entry both write valid bytes and the last one wins. No lock is needed.
- float16 storage: z-scored intensities keep ~3 significant digits (relative error <= 2**-11); the image is returned as
  float32. Results are identical whether an entry was just written or read back, since both go through the file.
"""

from __future__ import annotations

import hashlib
import json
import threading
import pickle
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from brainage.contracts.atomic import atomic_path, write_bytes_atomic

__all__ = ["CACHE_VERSION", "VolumeCache", "failure_reason", "file_digest", "load_volume"]

CACHE_VERSION = 1
_CHUNK = 1 << 20


def file_digest(path: str | Path) -> str:
    """SHA-1 hex digest of a file's bytes."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class VolumeCache:
    """Preprocessed volumes on disk, keyed by input content and preprocessing config.

    Args:
        folder: cache root (created on demand; may be shared by several processes and runs).
        config: everything that changes the cached output (`Preprocessing.cache_config()`).
    """

    def __init__(self, folder: str | Path, config: dict) -> None:
        versions = {name: metadata.version(name) for name in ("monai", "nibabel")}
        self.config = {"cache_version": CACHE_VERSION, **config, "versions": versions}
        key = hashlib.sha1(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(folder) / key
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        if not (self.folder / "config.json").exists():  # a human-readable record of what the key stands for
            text = json.dumps(self.config, indent=2, sort_keys=True).encode()
            write_bytes_atomic(self.folder / "config.json", text, fsync=False)

    def entry(self, path: str | Path) -> Path:
        """Where the preprocessed version of `path` lives (hashes the file; FileNotFoundError when missing)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: file not found")
        digest = file_digest(path)
        return self.folder / digest[:2] / f"{digest}.pt"

    def ensure(self, path: str | Path, transform: Callable[[dict], dict]) -> Path:
        """The entry of `path`, running `transform({"image": path})["image"]` (a (1, X, Y, Z) MetaTensor) only when
        the entry does not exist yet. Exceptions of the transform propagate (nothing is cached for a bad file)."""
        target = self.entry(path)
        if target.exists():
            with self._lock:
                self.hits += 1
            return target
        with self._lock:
            self.misses += 1
        image = transform({"image": str(path)})["image"]
        self.write(target, image)
        return target

    def load(self, path: str | Path, transform: Callable[[dict], dict]) -> MetaTensor:
        """The preprocessed (1, X, Y, Z) float32 MetaTensor of `path`, from the cache when present."""
        return self.read(self.ensure(path, transform))

    @staticmethod
    def write(target: Path, image: torch.Tensor) -> None:
        """Store one (1, X, Y, Z) image and its affine atomically."""
        data = torch.as_tensor(image).detach().cpu()
        data = data.as_tensor() if isinstance(data, MetaTensor) else data
        entry = {"image": data.to(torch.float16).contiguous(),  # (1, X, Y, Z)
                 "affine": torch.as_tensor(np.asarray(getattr(image, "affine", np.eye(4)), dtype=np.float64))}  # (4, 4)
        with atomic_path(target, fsync=False) as tmp:  # a lost entry is rebuilt: no fsync on the hot path
            torch.save(entry, tmp)

    @staticmethod
    def read(target: Path) -> MetaTensor:
        """One cached entry as a float32 MetaTensor (1, X, Y, Z) with its affine."""
        try:
            stored = torch.load(target, map_location="cpu", weights_only=True, mmap=True)
            image, affine = stored["image"].float(), stored["affine"].clone()  # copies out of the mapping
        except (OSError, RuntimeError, ValueError, KeyError, EOFError, TypeError, pickle.UnpicklingError) as err:
            raise OSError(f"cache entry {target} is unreadable ({type(err).__name__}: {err}); delete it to rebuild") \
                from err
        return MetaTensor(image, affine=affine)


def failure_reason(path: str, err: Exception) -> str:
    """One line naming the file and the (root) cause of a decode/validation failure."""
    cause = err.__cause__ or err
    return f"{path}: {type(cause).__name__}: {cause}"


def load_volume(transform: Callable[[dict], dict], path: str,
                cache: VolumeCache | None = None) -> tuple[torch.Tensor | None, str | None]:
    """Run the deterministic preprocessing on one file (through `cache` when given):
    (MetaTensor (1, X, Y, Z) with `.affine`, None) or (None, reason)."""
    try:
        return (cache.load(path, transform) if cache is not None else transform({"image": path})["image"]), None
    except Exception as err:  # noqa: BLE001 - any decoder/validation failure becomes a recorded reason
        return None, failure_reason(path, err)

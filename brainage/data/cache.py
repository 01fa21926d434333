"""Persistent on-disk cache of the deterministic preprocessing: decode + resample each scan once, reuse it forever.

MONAI's PersistentDataset idea (Project-MONAI tutorials, "fast model training guide"): everything before the first
random transform is cached. Decoding a .nii.gz is ~90 % zlib inflate (10-20 vol/s per core), so reading a cached
float16 array instead is 10x cheaper (team notes, performance.md section 3).

Layout: `<cache_dir>/<config key>/<ab>/<sha1>.pt`, a `torch.save` of {"image": (1, X, Y, Z) float16 tensor, "affine":
(4, 4) float64 tensor, "key": the entry's content key, "crc32": checksum}, read back with
`torch.load(weights_only=True, mmap=True)` (no pickled code; about 2x faster than an .npz here, which copies).

- Content key: SHA-1 of the whole input file's bytes (not its name or mtime), so renamed or copied files hit and an
  edited file misses. Hashing reads the file once (~1 GB/s), far cheaper than decoding it.
- Config key: SHA-1 of `Preprocessing.cache_config()` plus `CACHE_VERSION` and the versions of every library that
  computes the cached values (`KEYED_PACKAGES`: MONAI, nibabel, NumPy, SciPy, torch, SimpleITK and nilearn, whose
  ICBM152 template the registration aligns to); a different spacing, grid or library version writes to another
  folder, so stale entries are never read. (Until 2026-12-07 only MONAI and nibabel were keyed, and a registered
  cohort gave different regional shares after a fresh install: docs/report.md, "The margin where it matters".)
- Integrity (our choice): every read checks that the entry loads, that its stored key is the key it is filed under
  (an entry of another scan copied or renamed into place is refused) and a CRC-32 over the image, affine and key
  bytes (ISA-L's CRC-32 where `isal` is installed, the same polynomial as zlib's, ~8 GB/s: under 2 ms for a 1 mm
  160 x 192 x 160 entry). A CRC detects every burst of up to 32 flipped bits and other damage with probability
  1 - 2**-32; it is not a signature: whoever can write the cache folder can write any values into it (but never
  code: entries are read weights-only). A damaged, truncated, zeroed or swapped entry is rebuilt from its source
  file, never used. CACHE_VERSION 2 added the check, so entries of the unchecked format are never read.
- Write failures (our choice: fail loudly): a full disk or an unwritable `cache_dir` raises `CacheWriteError` naming
  the folder and the OS error. Falling back to memory would hide the problem and could exhaust RAM on the cohorts the
  cache exists for; treating the failure as a bad scan would silently shrink the training set.
- Concurrency: an entry is written to a unique temporary file in its folder and moved into place with `os.replace`
  (atomic on POSIX and Windows), so processes sharing a cache see either no entry or a complete one; two writers of
  the same entry both write valid bytes and the last one wins. No lock is needed.
- float16 storage: z-scored intensities keep ~3 significant digits (relative error <= 2**-11); the image is returned as
  float32. Results are identical whether an entry was just written or read back (both are the float16 values).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from brainage.contracts.atomic import write_bytes_atomic
from brainage.contracts.card import installed_versions

try:  # ISA-L CRC-32: the same values as zlib.crc32, about 10x faster
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - exercised only where isal is not installed
    _crc32 = zlib.crc32

__all__ = ["CACHE_VERSION", "KEYED_PACKAGES", "CacheEntryError", "CacheWriteError", "VolumeCache", "failure_reason",
           "file_digest", "load_volume"]

log = logging.getLogger(__name__)

# the libraries whose versions can change a cached volume: decoding, reorientation and resampling (MONAI, nibabel,
# NumPy, SciPy, torch), registration (SimpleITK, SciPy) and its template (nilearn's ICBM152)
KEYED_PACKAGES = ("monai", "nibabel", "numpy", "scipy", "torch", "SimpleITK", "nilearn")

CACHE_VERSION = 2
_CHUNK = 1 << 20


class CacheWriteError(OSError):
    """The cache folder cannot take an entry (disk full, read-only, not a folder): a problem of the run, never of a
    scan."""


class CacheEntryError(OSError):
    """A cache entry that is missing, unreadable or fails its integrity check (rebuilt from the source file)."""


def file_digest(path: str | Path) -> str:
    """SHA-1 hex digest of a file's bytes."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum(image: torch.Tensor, affine: torch.Tensor, key: str) -> int:
    """CRC-32 of the image bytes (float16), the affine bytes (float64) and the key."""
    crc = _crc32(image.numpy().reshape(-1).view(np.uint8))
    crc = _crc32(affine.numpy().tobytes(), crc)
    return _crc32(key.encode(), crc)


class VolumeCache:
    """Preprocessed volumes on disk, keyed by input content and preprocessing config.

    Args:
        folder: cache root (created on demand; may be shared by several processes and runs).
        config: everything that changes the cached output (`Preprocessing.cache_config()`).

    Raises:
        CacheWriteError: the folder cannot be created or written.
    """

    def __init__(self, folder: str | Path, config: dict) -> None:
        self.config = {"cache_version": CACHE_VERSION, **config, "versions": installed_versions(KEYED_PACKAGES)}
        key = hashlib.sha1(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:16]
        self.root = Path(folder)
        self.folder = self.root / key
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        if not (self.folder / "config.json").exists():  # a human-readable record of what the key stands for
            text = json.dumps(self.config, indent=2, sort_keys=True).encode()
            self._write(self.folder / "config.json", text)

    def __getstate__(self) -> dict:  # DataLoader workers started by spawn get a copy without the lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def entry(self, path: str | Path) -> Path:
        """Where the preprocessed version of `path` lives (hashes the file; FileNotFoundError when missing)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: file not found")
        digest = file_digest(path)
        return self.folder / digest[:2] / f"{digest}.pt"

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def fetch(self, target: Path, path: str | Path, transform: Callable[[dict], dict]) -> MetaTensor:
        """The (1, X, Y, Z) float32 image of entry `target`, checked; when the entry is missing or damaged, run
        `transform({"image": path})["image"]` (a (1, X, Y, Z) MetaTensor) and store it under `target` first.
        Exceptions of the transform propagate (nothing is cached for a bad file); CacheWriteError when it cannot
        be stored."""
        try:
            image = self.read(target)
        except CacheEntryError as err:
            if target.exists():
                log.warning("rebuilding %s", err)
            self._count(hit=False)
            return self.write(target, transform({"image": str(path)})["image"])
        self._count(hit=True)
        return image

    def ensure(self, path: str | Path, transform: Callable[[dict], dict]) -> Path:
        """The entry of `path`, checked (read in full) or built; see `fetch`."""
        target = self.entry(path)
        self.fetch(target, path, transform)
        return target

    def load(self, path: str | Path, transform: Callable[[dict], dict]) -> MetaTensor:
        """The preprocessed (1, X, Y, Z) float32 MetaTensor of `path`, from the cache when present and intact."""
        return self.fetch(self.entry(path), path, transform)

    def _write(self, target: Path, data: bytes) -> None:
        try:  # a lost entry is rebuilt: no fsync on the hot path
            write_bytes_atomic(target, data, fsync=False)
        except OSError as err:
            reason = err.strerror or str(err)
            raise CacheWriteError(f"cache_dir {self.root}: cannot write {target.name} ({reason}); free "
                                  f"space there, point cache_dir to a writable folder, or set cache_dir: null to keep "
                                  f"the volumes in memory") from err

    def write(self, target: Path, image: torch.Tensor) -> MetaTensor:
        """Store one (1, X, Y, Z) image and its affine atomically under `target` (whose name is the content key);
        returns what a later `read` of the entry gives."""
        data = torch.as_tensor(image).detach().cpu()
        data = data.as_tensor() if isinstance(data, MetaTensor) else data
        stored = data.to(torch.float16).contiguous()  # (1, X, Y, Z)
        affine = torch.as_tensor(np.asarray(getattr(image, "affine", np.eye(4)), dtype=np.float64))  # (4, 4)
        key = target.stem
        buffer = io.BytesIO()  # serialised in memory, so that a full disk is an OSError with its errno
        torch.save({"image": stored, "affine": affine, "key": key, "crc32": _checksum(stored, affine, key)}, buffer)
        self._write(target, buffer.getvalue())
        return MetaTensor(stored.float(), affine=affine.clone())

    @staticmethod
    def read(target: Path) -> MetaTensor:
        """One cached entry as a float32 MetaTensor (1, X, Y, Z) with its affine; CacheEntryError naming the entry
        when it is missing, unreadable, filed under another key or fails its checksum."""
        try:
            stored = torch.load(target, map_location="cpu", weights_only=True, mmap=True)
            image, affine, key, crc = stored["image"], stored["affine"], stored["key"], stored["crc32"]
            if not (isinstance(image, torch.Tensor) and image.dtype == torch.float16
                    and isinstance(affine, torch.Tensor) and affine.dtype == torch.float64
                    and tuple(affine.shape) == (4, 4)):
                raise TypeError("found other types than a float16 image and a (4, 4) float64 affine")
        except FileNotFoundError:
            raise CacheEntryError(f"cache entry {target} does not exist") from None
        except (OSError, RuntimeError, ValueError, KeyError, EOFError, TypeError, AttributeError,
                pickle.UnpicklingError) as err:
            raise CacheEntryError(f"cache entry {target} is unreadable ({type(err).__name__}: {err})") from err
        if key != target.stem:
            raise CacheEntryError(f"cache entry {target} holds the entry of another scan ({key})")
        if _checksum(image, affine, key) != crc:
            raise CacheEntryError(f"cache entry {target} is damaged (checksum mismatch)")
        return MetaTensor(image.float(), affine=affine.clone())  # copies out of the mapping


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
    except CacheWriteError:
        raise  # the cache's problem, not the scan's
    except Exception as err:  # noqa: BLE001 - any decoder/validation failure becomes a recorded reason
        return None, failure_reason(path, err)

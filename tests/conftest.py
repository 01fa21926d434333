"""Shared fixtures: real NIfTI files written with nibabel, and a tiny synthetic cohort."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from brainage.predict.stream import available_cpus

os.environ.setdefault("MLFLOW_TRACKING_URI", "")  # tests pass explicit stores; never the user's server


def _share_cores_between_xdist_workers() -> None:
    """One core share per pytest-xdist worker, for torch here and for the CLI subprocesses (OMP_NUM_THREADS).

    Each worker would otherwise start one OpenMP thread per core: 2 workers x 2 threads on 2 cores spin-wait against
    each other, and a 10 s training test took 528 s in CI next to the demo-training test.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, available_cpus() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_share_cores_between_xdist_workers()


def brain_like(shape=(40, 48, 40), seed=0) -> np.ndarray:
    """An ellipsoid 'brain' with noise and zero background: enough for preprocessing tests."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.8
    return (inside * (100 + 10 * rng.standard_normal(shape))).astype(np.float32)


def mni_affine(spacing: float = 4.0, shape=(40, 48, 40)) -> np.ndarray:
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -np.array(shape) * spacing / 2
    return affine


# the two longest files (each 11-12 min of one core in CI, 2026-12-07): first, one per worker from the start
LONGEST = ("tests/report/test_ground_truth_validation.py", "tests/test_help_examples.py")


def pytest_collection_modifyitems(config, items):
    """The longest files, then the other slow tests, then the rest (stable otherwise): with pytest-xdist (``--dist
    loadfile --no-loadscope-reorder``, which keeps this order) the long ones start early instead of ending the run
    on one worker while the other idles."""
    def key(item: pytest.Item) -> tuple[int, int]:
        path = Path(str(item.path)).relative_to(Path(__file__).parents[1]).as_posix()
        return (LONGEST.index(path) if path in LONGEST else len(LONGEST), item.get_closest_marker("slow") is None)

    items.sort(key=key)


@pytest.fixture(name="brain_like")
def brain_like_fixture():
    """The `brain_like(shape, seed)` volume factory, for tests that write their own files."""
    return brain_like


@pytest.fixture
def write_nifti(tmp_path: Path):
    """write_nifti(name, data=None, affine=None) -> Path of a real .nii.gz written with nibabel."""

    def _write(name: str, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> Path:
        data = brain_like() if data is None else data
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, mni_affine(shape=data.shape[:3]) if affine is None else affine), path)
        return path

    return _write

"""ICBM152 2009a (non-linear, symmetric) templates that ship inside the nilearn wheel.

Fonov et al. 2011, NeuroImage 54:313 ("Unbiased average age-appropriate atlases for pediatric studies") and Fonov et
al. 2009 (ICBM 2009a). nilearn ships the 1 mm T1 (skull-stripped) and the grey / white-matter probability maps
(197x233x189, RAS, origin at MNI (-98, -134, -72)); there is no CSF map. They are read from the installed package, so
nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

__all__ = ["TemplateKind", "icbm152_on_grid", "icbm152_path", "load_icbm152", "mni_grid"]

TemplateKind = Literal["t1", "gm", "wm"]
_KINDS: tuple[str, ...] = ("t1", "gm", "wm")


def icbm152_path(kind: TemplateKind) -> Path:
    """Path of the ICBM152 2009a ``kind`` map inside the installed nilearn package."""
    if kind not in _KINDS:
        raise ValueError(f"template kind {kind!r} is not one of {_KINDS}")
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn is not installed; it ships the ICBM152 templates (pip install nilearn)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    path = path / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"ICBM152 {kind} template not found at {path}; reinstall nilearn (>=0.11)")
    return path


@functools.lru_cache(maxsize=None)
def load_icbm152(kind: TemplateKind) -> tuple[np.ndarray, np.ndarray]:
    """Load one ICBM152 2009a map at 1 mm.

    Returns:
        ``(data, affine)``: data (197, 233, 189) float32 scaled to [0, 1] (probabilities for gm/wm, T1 intensity
        / 255 for t1, zero outside the brain), affine (4, 4) voxel -> MNI mm (RAS). Cached; the arrays are read-only.
    """
    img = nib.load(str(icbm152_path(kind)))
    data = (np.asarray(img.dataobj, dtype=np.float32) / np.float32(255.0)).astype(np.float32)
    data.setflags(write=False)
    affine = img.affine.copy()
    affine.setflags(write=False)
    return data, affine


def mni_grid(spacing: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """The ICBM152 field of view resampled to an isotropic ``spacing`` (mm) grid with the same MNI origin.

    ``spacing=2`` gives (99, 117, 95), the grid of ``nilearn.datasets.load_mni152_template(resolution=2)``.
    """
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0 mm, got {spacing!r}")
    data, affine = load_icbm152("t1")
    shape = tuple(int(np.floor((n - 1) / spacing)) + 1 for n in data.shape)
    out = affine.copy()
    out[:3, :3] = np.diag([float(spacing)] * 3)
    return (shape[0], shape[1], shape[2]), out


@functools.lru_cache(maxsize=4)
def icbm152_on_grid(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """(t1, affine): the ICBM152 T1 ([0, 1], 0 outside the brain) on :func:`mni_grid` ``(spacing)``, anti-aliased."""
    t1, affine = load_icbm152("t1")
    shape, grid = mni_grid(spacing)
    sigma = np.sqrt(max(spacing**2 - 1.0, 0.0)) / 2.355  # FWHM^2 = spacing^2 - 1 mm^2 (1 mm source)
    source = ndi.gaussian_filter(t1, sigma) if sigma > 0 else t1
    to_source = np.linalg.inv(affine) @ grid  # output voxel -> template voxel
    out = ndi.affine_transform(source, to_source[:3, :3], to_source[:3, 3], output_shape=shape, order=1, cval=0.0)
    out = out.astype(np.float32)
    out.setflags(write=False)
    return out, grid

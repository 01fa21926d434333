"""Synthetic *raw* T1 heads with a known pose, for testing ``brainage prepare`` on real geometry.

The ICBM152 2009a T1 (Fonov et al. 2011, shipped by nilearn; :func:`brainage.reference.templates.load_icbm152`) is moved
by a known similarity transform (rotation, translation, isotropic scale), wrapped in a skull-like shell (CSF rim,
dark bone, bright scalp), multiplied by a smooth bias field (as N4 models it: Tustison et al. 2010, IEEE TMI 29:1310)
and written on a scanner-like grid that is not the MNI grid. The ground truth is the 4x4 map from MNI mm to the raw
image's world mm, so a registration can be scored by the RMS displacement over the template brain.

For research and software testing only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from brainage.reference.templates import load_icbm152

__all__ = ["RawHead", "pose_matrix", "rms_displacement", "synthetic_raw_head"]

# Shell layers outside the brain (mm of distance to the template brain) and their T1 intensity (template scale).
_SHELL = ((0.0, 3.0, 0.12), (3.0, 8.0, 0.04), (8.0, 13.0, 0.85))
_PAD_MM = 20  # the template grid is padded by this much so that the shell fits


@dataclass(frozen=True)
class RawHead:
    """A synthetic raw head: ``data`` (X, Y, Z) float32, ``affine`` voxel -> world mm (RAS) and the true pose."""

    data: np.ndarray
    affine: np.ndarray
    mni_to_world: np.ndarray  # (4, 4): MNI mm -> this image's world mm (the transform a registration must recover)


def pose_matrix(rotation_deg: tuple[float, float, float], translation_mm: tuple[float, float, float], scale: float,
                centre_mm: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) similarity ``x -> c + scale * R (x - c) + t``, R from xyz Euler angles (degrees), c = ``centre_mm``."""
    centre = np.zeros(3) if centre_mm is None else np.asarray(centre_mm, dtype=np.float64)
    linear = float(scale) * Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = centre - linear @ centre + np.asarray(translation_mm, dtype=np.float64)
    return out


@functools.lru_cache(maxsize=1)
def _padded_head() -> tuple[np.ndarray, np.ndarray]:
    """(head, affine): the template T1 with the skull-like shell on the 1 mm template grid padded by _PAD_MM."""
    t1, affine = load_icbm152("t1")
    brain = np.pad(t1 > 0, _PAD_MM)
    head = np.pad(t1, _PAD_MM).astype(np.float32)
    distance = ndi.distance_transform_edt(~brain)  # mm (1 mm grid)
    for lo, hi, level in _SHELL:
        head[(distance > lo) & (distance <= hi)] = level
    out = affine.copy()
    out[:3, 3] -= affine[:3, :3] @ np.full(3, _PAD_MM)
    return head, out


def _bias_field(shape: tuple[int, int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """exp(smooth random quadratic) over the grid, log-amplitude about ``strength`` at the grid corners."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")  # (X, Y, Z) each
    terms = (x, y, z, x * y, y * z, x * z, x * x - 0.5, y * y - 0.5, z * z - 0.5)
    coef = rng.normal(0.0, strength / 2.0, size=len(terms)).astype(np.float32)
    return np.exp(sum(c * t for c, t in zip(coef, terms))).astype(np.float32)


def synthetic_raw_head(rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
                       translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0), scale: float = 1.0,
                       spacing: float = 2.0, bias_strength: float = 0.3, noise: float = 0.01, seed: int = 0,
                       fov_mm: tuple[float, float, float] = (230.0, 270.0, 240.0)) -> RawHead:
    """Render the template head moved by a known pose onto a ``spacing`` mm grid of ``fov_mm`` (RAS, centred at 0).

    The subject's anatomy is the template mapped by ``mni_to_world = pose_matrix(rotation, translation, scale,
    centre=template brain centroid)``; the image stores ``head(mni_to_world^-1 x) * bias(x) + noise``.
    """
    if not 0.5 <= spacing <= 6.0:
        raise ValueError(f"spacing must be between 0.5 and 6 mm, got {spacing!r}")
    if not 0.5 <= scale <= 2.0:
        raise ValueError(f"scale must be between 0.5 and 2, got {scale!r}")
    head, head_affine = _padded_head()
    t1, t1_affine = load_icbm152("t1")
    centre = t1_affine[:3, :3] @ np.argwhere(t1 > 0).mean(axis=0) + t1_affine[:3, 3]
    mni_to_world = pose_matrix(rotation_deg, translation_mm, scale, centre)

    shape = tuple(int(round(f / spacing)) for f in fov_mm)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -0.5 * spacing * (np.asarray(shape) - 1)
    # Output voxel -> world -> MNI -> padded-template voxel: one (4, 4) matrix.
    to_head = np.linalg.inv(head_affine) @ np.linalg.inv(mni_to_world) @ affine
    sigma = np.sqrt(max((spacing / scale) ** 2 - 1.0, 0.0)) / 2.355  # anti-alias: FWHM^2 = spacing^2 - 1 mm^2
    source = ndi.gaussian_filter(head, sigma) if sigma > 0 else head
    data = ndi.affine_transform(source, to_head[:3, :3], to_head[:3, 3], output_shape=shape, order=1, cval=0.0)
    rng = np.random.default_rng(seed)
    data = data * _bias_field(shape, bias_strength, rng) + noise * np.abs(rng.standard_normal(shape))
    return RawHead(data=(1000.0 * data).astype(np.float32), affine=affine, mni_to_world=mni_to_world)


def rms_displacement(a: np.ndarray, b: np.ndarray, points_mm: np.ndarray) -> float:
    """RMS over ``points_mm`` (n, 3) of ``|a(p) - b(p)|`` for two (4, 4) affine maps, in mm."""
    pts = np.c_[points_mm, np.ones(len(points_mm))]  # (n, 4)
    diff = pts @ (a - b).T  # (n, 4)
    return float(np.sqrt((diff[:, :3] ** 2).sum(axis=1).mean()))

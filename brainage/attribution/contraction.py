"""Own contraction or displacement: which small motion each region's age-slope map follows.

Moving tissue by a small displacement u changes an image by about -grad(M) . u, M the cohort's mean image (the
brightness-constancy linearisation of optical flow: Horn & Schunck 1981, Artif Intell 17:185). Across scans, each
voxel's slope of intensity on age is fitted inside each atlas region on three patterns:

- a uniform change (a darkening or brightening of the whole region);
- *away*: tissue moving away from the lateral ventricles, u along the gradient of the distance to them (what growing
  ventricles do to the structures beside them);
- *contraction*: the region's own tissue moving inwards, u along minus the gradient of its signed distance.

A region's *contraction share* is the contraction pattern's partial R^2: the fraction of its slope map's variance that
only its own contraction explains. A structure that growing ventricles push aside follows the away pattern and keeps a
small share; one that contracts keeps a large one whatever the ventricles do (docs/report.md, "Contraction beside
growing ventricles"). Its *darkening* is the mean of its slope map over the map's root mean square: -1 when the whole
region darkens alike (a T1 contrast loss), near 0 or positive when tissue moves through it (docs/report.md, "A
displacement zone beside the ventricles").

Letter legend: s subjects, r atlas regions, v voxels of one region, (X, Y, Z) model grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["MIN_VOXELS", "SlopeMaps", "contraction_shares", "darkening"]

MIN_VOXELS = 5  # fewer voxels in a region cannot fit three patterns: its share is NaN
PAD = 2  # voxels around a region's box: its signed distance and gradient are exact inside the crop


class SlopeMaps:
    """Streaming sums of scans and their ages on one grid: the cohort's mean image and each voxel's slope on age."""

    def __init__(self) -> None:
        self.n, self.age, self.age2 = 0, 0.0, 0.0
        self.image: np.ndarray | None = None  # (X, Y, Z) sum of images
        self.image_age: np.ndarray | None = None  # (X, Y, Z) sum of age x image

    def add(self, image: np.ndarray, age: float) -> None:
        """Add one scan (X, Y, Z) with its age (years)."""
        image = np.asarray(image, dtype=np.float64)
        if self.image is None:
            self.image, self.image_age = np.zeros_like(image), np.zeros_like(image)
        elif image.shape != self.image.shape:
            raise ValueError(f"slope maps need one grid: got a scan of shape {image.shape} after {self.image.shape}")
        self.n, self.age, self.age2 = self.n + 1, self.age + age, self.age2 + age * age
        self.image += image
        self.image_age += age * image

    @property
    def spread(self) -> float:
        """Sum of squared age deviations of the scans added (0 without two different ages)."""
        return self.age2 - self.age * self.age / max(self.n, 1)

    @property
    def usable(self) -> bool:
        """At least 3 scans with different ages: :meth:`maps` can fit a slope."""
        return self.image is not None and self.n >= 3 and self.spread > 0

    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean (X, Y, Z), slope (X, Y, Z) per year of age), by least squares over the scans added."""
        if not self.usable:
            raise ValueError(f"slope maps need at least 3 scans with different ages; got {self.n}")
        mean = self.image / self.n
        return mean, (self.image_age - self.age * mean) / self.spread


def _unit(vectors: list[np.ndarray]) -> list[np.ndarray]:
    norm = np.sqrt(sum(v * v for v in vectors)) + 1e-9
    return [v / norm for v in vectors]


def contraction_shares(mean: np.ndarray, slope: np.ndarray, regions: np.ndarray, affine: np.ndarray, r: int,
                       ventricles: Sequence[int]) -> np.ndarray:
    """(r,) each region's contraction share (partial R^2 of its own contraction in its slope map, module docstring).

    ``mean``, ``slope``: (X, Y, Z) from :class:`SlopeMaps`; ``regions``: (X, Y, Z) region rows, -1 = background;
    ``affine``: voxel -> mm; ``ventricles``: rows of the lateral ventricles (their own share, and every share without
    them, is NaN: no away pattern to tell apart); regions under ``MIN_VOXELS`` voxels: NaN.
    """
    spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))  # (3,) mm per voxel
    out = np.full(r, np.nan)
    grows = np.isin(regions, list(ventricles))
    if not grows.any():
        return out
    grad = np.gradient(np.asarray(mean, dtype=np.float64), *spacing)  # 3 x (X, Y, Z)
    normal = _unit(np.gradient(ndi.distance_transform_edt(~grows, sampling=spacing), *spacing))
    away = -sum(g * n for g, n in zip(grad, normal))  # (X, Y, Z) slope pattern of tissue moving off the ventricles
    for row in np.unique(regions[regions >= 0]):
        found = np.argwhere(regions == row)  # (v, 3)
        if row in ventricles or len(found) < MIN_VOXELS:
            continue
        box = tuple(slice(max(lo - PAD, 0), hi + PAD + 1) for lo, hi in zip(found.min(0), found.max(0)))
        inside = regions[box] == row
        signed = (ndi.distance_transform_edt(~inside, sampling=spacing)
                  - ndi.distance_transform_edt(inside, sampling=spacing))  # outward-increasing signed distance
        outward = _unit(np.gradient(signed, *spacing))
        shrink = sum(g[box] * n for g, n in zip(grad, outward))[inside]  # (v,) pattern of tissue moving inwards
        y = slope[box][inside]  # (v,)
        x = np.column_stack([np.ones_like(y), away[box][inside], shrink])  # (v, 3)
        total = ((y - y.mean()) ** 2).sum()
        if total <= 0:
            continue
        resid_full = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        resid_less = y - x[:, :2] @ np.linalg.lstsq(x[:, :2], y, rcond=None)[0]
        out[row] = ((resid_less ** 2).sum() - (resid_full ** 2).sum()) / total
    return out


def darkening(slope: np.ndarray, regions: np.ndarray, r: int) -> np.ndarray:
    """(r,) each region's mean slope over the root mean square of its slopes (module docstring), in [-1, 1].

    ``slope``: (X, Y, Z) from :class:`SlopeMaps`; ``regions``: (X, Y, Z) region rows, -1 = background; regions under
    ``MIN_VOXELS`` voxels or with a flat slope map: NaN.
    """
    rows = regions[regions >= 0]  # (n,)
    values = np.asarray(slope, dtype=np.float64)[regions >= 0]  # (n,)
    count = np.bincount(rows, minlength=r)[:r].astype(np.float64)  # (r,)
    total = np.bincount(rows, weights=values, minlength=r)[:r]
    squares = np.bincount(rows, weights=values * values, minlength=r)[:r]
    out = np.full(r, np.nan)
    ok = (count >= MIN_VOXELS) & (squares > 0)
    out[ok] = total[ok] / np.sqrt(squares[ok] * count[ok])  # mean / rms = sum / sqrt(n * sum of squares)
    return out

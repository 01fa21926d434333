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

A lateral ventricle that no growth of its own enlarges can still change with age: a neighbour that contracts pulls its
wall along (a contracting cingulate or thalamus). Its *expansion share* is the part of its slope map that its own
boundary motion explains (the contraction pattern, opposite sign), its *pull share* the largest part that tissue moving
towards one neighbour explains beside it (u along minus the gradient of the distance to that neighbour). Ventricles
that grow keep a large expansion share; ventricles enlarged by a neighbour's contraction a pull share above it
(docs/report.md, "Ventricles enlarged by a neighbour").

*Contraction evidence.* The share says how much of a region's slope map its contraction explains, not whether the
contraction is there at all: a thin region whose change is too small to predict age from can still follow the pattern
(docs/report.md, "Contraction evidence: a matched filter"). Each scan's *contraction score* projects the region's
voxels on the contraction column of the same least-squares fit, so the slope of the scores on age is the contraction
coefficient of the slope map, and the t of their correlation with age tests it with one known pattern (a matched
filter: North 1963, Proc IEEE 51:1016; one regressor of a general linear model: Friston et al. 1995, Hum Brain Mapp
2:189).

*Beside a push.* Growing ventricles push their neighbours less the farther they are, so a thin region beside them is
compressed as it moves, and its voxels follow its own contraction pattern as well. A fourth pattern, the away pattern
times the distance to the ventricles (centred within the region: the push's linear falloff), takes that compression
up; the contraction score beside it keeps what only an inward motion of the region explains (docs/report.md,
"Contraction evidence beside a push").

*Beside a uniform change.* A neighbour that darkens or brightens throughout (a T1 contrast change) changes the
region's border voxels too: at the grid's resolution each border voxel holds part of the neighbour's tissue. Its
change is then the neighbour's slope map seen through the voxel's blur, which follows a contraction's pattern at
that border. A fifth pattern, the slope map of the uniformly changing neighbours (``|darkening|`` at least
``UNIFORM``) smoothed by a Gaussian of ``BLEED_SIGMA_MM``, takes that bleed up; the scores keep what only the
region's own inward motion explains (partial-volume effect: Hoffman et al. 1979, J Comput Assist Tomogr 3:299;
docs/report.md, "Contraction evidence beside a neighbour's contrast change").

*Spill-over.* A contraction drags the tissue beside it along, so any region's slope map can follow a neighbour's pull
too: a region's *pull share* is the largest part of its map that tissue moving towards one neighbour explains beside
a uniform change, the away pattern and its own contraction (its twin in the other hemisphere left out: a structure
ageing in both hemispheres pulls its twin across the midline). ``brainage.attribution.regional.with_spill_checks``
then asks whether the region tells age away from that neighbour (docs/report.md, "Spill-over beside a contraction").

Letter legend: s subjects, r atlas regions, v voxels of one region, n labelled voxels, B bootstrap resamples, (X, Y, Z)
model grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi

__all__ = ["BLEED_SIGMA_MM", "MIN_VOXELS", "PULL_REACH_MM", "SlopeMaps", "UNIFORM", "age_t", "contraction_scores",
           "contraction_shares", "darkening", "region_pulls", "ventricle_pulls"]

MIN_VOXELS = 5  # fewer voxels in a region cannot fit three patterns: its share is NaN
PAD = 2  # voxels around a region's box: its signed distance and gradient are exact inside the crop
PULL_REACH_MM = 6.0  # a ventricle's neighbours: the regions with a voxel within this of it (centre to centre)
UNIFORM = 0.85  # a slope map changes uniformly (a contrast change) from this |darkening| on (regional.DARKENING_MAX)
# the bleed pattern's Gaussian: one voxel of the 3 mm grid (chosen over 6 mm on 12 seen cohorts, seeds 0-2; declared
# before fresh25: docs/report.md, "Contraction evidence beside a neighbour's contrast change")
BLEED_SIGMA_MM = 3.0


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


def _box(inside: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``inside`` (X, Y, Z) bool, ``PAD`` voxels wider on each side (clipped to the grid)."""
    found = np.argwhere(inside)  # (v, 3)
    return tuple(slice(max(lo - PAD, 0), hi + PAD + 1) for lo, hi in zip(found.min(0), found.max(0)))


def _along(grad: list[np.ndarray], field: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """(X, Y, Z) grad(M) . the unit gradient of ``field``: the slope pattern of tissue moving against that gradient
    (a distance's gradient points away from where it is measured from). ``grad``: 3 x the mean image's gradient."""
    return sum(g * n for g, n in zip(grad, _unit(np.gradient(field, *spacing))))


def _inwards(grad: list[np.ndarray], inside: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """(v,) slope pattern of a region's own tissue moving inwards (grad(M) . outward normal) at its voxels.

    ``grad``: 3 x the crop's mean-image gradient; ``inside``: the region in the crop (``PAD`` voxels of margin)."""
    signed = (ndi.distance_transform_edt(~inside, sampling=spacing)
              - ndi.distance_transform_edt(inside, sampling=spacing))  # outward-increasing signed distance
    return _along(grad, signed, spacing)[inside]


def _sse(x: np.ndarray, y: np.ndarray) -> float:
    """Residual sum of squares of ``y`` (v,) on the columns of ``x`` (v, p)."""
    return float(((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2).sum())


def _displacement(mean: np.ndarray, regions: np.ndarray, affine: np.ndarray, ventricles: Sequence[int]
                  ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray] | None:
    """(spacing (3,) mm, 3 x the mean image's gradient (X, Y, Z), the away pattern (X, Y, Z): tissue moving off the
    lateral ventricles, the distance to them (X, Y, Z) mm), or None without a ventricle voxel on the grid."""
    spacing = voxel_sizes(np.asarray(affine, dtype=np.float64))  # (3,) mm per voxel
    grows = np.isin(regions, list(ventricles))
    if not grows.any():
        return None
    grad = np.gradient(np.asarray(mean, dtype=np.float64), *spacing)  # 3 x (X, Y, Z)
    distance = ndi.distance_transform_edt(~grows, sampling=spacing)  # (X, Y, Z) mm
    return spacing, grad, -_along(grad, distance, spacing), distance


def _own_columns(grad: list[np.ndarray], away: np.ndarray, regions: np.ndarray, row: int, box: tuple[slice, ...],
                 spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A region's voxels in the crop ``box`` (bool, crop shape) and its (v, 3) slope patterns there: a uniform
    change, tissue moving off the ventricles, its own contraction (``grad``, ``away``: full grid)."""
    inside = regions[box] == row
    return inside, np.column_stack([np.ones(int(inside.sum())), away[box][inside],
                                    _inwards([g[box] for g in grad], inside, spacing)])


def _largest_pull(grad: list[np.ndarray], regions: np.ndarray, inside: np.ndarray, x: np.ndarray, y: np.ndarray,
                  neighbours: Sequence[int], spacing: np.ndarray) -> tuple[float, int]:
    """The largest partial R^2 in ``y`` (v,) of tissue moving towards one of ``neighbours`` beside the columns of
    ``x`` (v, p), and that neighbour's row; (NaN, -1) for a flat map or no neighbour. ``grad``, ``regions``,
    ``inside``: the crop's mean-image gradient, region rows and the region's voxels (every neighbour voxel inside)."""
    total = ((y - y.mean()) ** 2).sum()
    best, by = np.nan, -1
    if total <= 0:
        return best, by
    base = _sse(x, y)
    for other in neighbours:  # tissue moving towards it: against the gradient of the distance to it
        towards = _along(grad, ndi.distance_transform_edt(regions != other, sampling=spacing), spacing)
        share = (base - _sse(np.column_stack([x, towards[inside]]), y)) / total
        if np.isnan(best) or share > best:
            best, by = share, int(other)
    return best, by


def _neighbours(regions: np.ndarray, own: np.ndarray, spacing: np.ndarray, leave_out: Sequence[int]) -> np.ndarray:
    """Rows with a voxel within ``PULL_REACH_MM`` of ``own`` (X, Y, Z) bool, ``leave_out`` left out."""
    near = ndi.distance_transform_edt(~own, sampling=spacing) <= PULL_REACH_MM
    return np.setdiff1d(regions[near & (regions >= 0)], list(leave_out))


def contraction_shares(mean: np.ndarray, slope: np.ndarray, regions: np.ndarray, affine: np.ndarray, r: int,
                       ventricles: Sequence[int]) -> np.ndarray:
    """(r,) each region's contraction share (partial R^2 of its own contraction in its slope map, module docstring).

    ``mean``, ``slope``: (X, Y, Z) from :class:`SlopeMaps`; ``regions``: (X, Y, Z) region rows, -1 = background;
    ``affine``: voxel -> mm; ``ventricles``: rows of the lateral ventricles (their own share, and every share without
    them, is NaN: no away pattern to tell apart); regions under ``MIN_VOXELS`` voxels: NaN.
    """
    out = np.full(r, np.nan)
    fields = _displacement(mean, regions, affine, ventricles)
    if fields is None:
        return out
    spacing, grad, away, _ = fields
    for row in np.unique(regions[regions >= 0]):
        own = regions == row  # (X, Y, Z)
        if row in ventricles or own.sum() < MIN_VOXELS:
            continue
        box = _box(own)
        inside, x = _own_columns(grad, away, regions, row, box, spacing)
        y = slope[box][inside]  # (v,)
        total = ((y - y.mean()) ** 2).sum()
        if total > 0:
            out[row] = (_sse(x[:, :2], y) - _sse(x, y)) / total
    return out


def contraction_scores(voxels: np.ndarray, mean: np.ndarray, slope: np.ndarray, regions: np.ndarray,
                       affine: np.ndarray, r: int, ventricles: Sequence[int], bleed_mm: float | None = BLEED_SIGMA_MM
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(s, r) each scan's contraction score per region (module docstring, *Contraction evidence*) and (s, r) the same
    beside the push's falloff (*Beside a push*), both beside the uniformly changing neighbours' bleed (*Beside a
    uniform change*, Gaussian sigma ``bleed_mm``; None: without it) and from one pass over the regions.

    ``voxels``: (s, n) the scans' values at the n labelled voxels of ``regions`` (``regions >= 0``, C order);
    ``mean``, ``slope``: (X, Y, Z) the same scans' :class:`SlopeMaps`; other arguments as :func:`contraction_shares`.
    NaN columns where the share is NaN (the ventricles, regions under ``MIN_VOXELS`` voxels, every region without the
    ventricles).
    """
    voxels = np.asarray(voxels)
    plain, falloff = np.full((2, len(voxels), r), np.nan)
    fields = _displacement(mean, regions, affine, ventricles)
    if fields is None:
        return plain, falloff
    spacing, grad, away, distance = fields
    labelled = regions[regions >= 0]  # (n,) the columns' rows, in the grid's C order
    uniform = _uniform_slopes(slope, regions, r, ventricles)  # (X, Y, Z): 0 outside uniformly changing regions
    for row in np.unique(labelled):
        own = regions == row  # (X, Y, Z)
        if row in ventricles or own.sum() < MIN_VOXELS:
            continue
        box = _box(own)
        inside, x = _own_columns(grad, away, regions, row, box, spacing)  # the crop keeps the grid's C order
        mm = distance[box][inside]  # (v,) mm to the ventricles
        x = np.column_stack([x, x[:, 1] * (mm - mm.mean())])  # (v, 4): + away times the centred distance
        if bleed_mm is not None:  # (v, 5): + the neighbours' blurred uniform change, where it reaches the region
            seen = ndi.gaussian_filter(np.where(own, 0.0, uniform), bleed_mm / spacing)[own]  # (v,)
            x = np.column_stack([x, seen]) if seen.any() else x
        values = voxels[:, labelled == row].astype(np.float64)  # (s, v)
        for out, patterns in ((plain, np.delete(x, 3, axis=1)), (falloff, x)):
            out[:, row] = values @ np.linalg.pinv(patterns)[2]  # the contraction coefficient's least-squares weights
    return plain, falloff


def _uniform_slopes(slope: np.ndarray, regions: np.ndarray, r: int, ventricles: Sequence[int]) -> np.ndarray:
    """(X, Y, Z) ``slope`` inside the regions whose slope map changes uniformly (``|darkening|`` at least ``UNIFORM``;
    the lateral ventricles left out: the away pattern is theirs), 0 elsewhere."""
    dark = darkening(slope, regions, r)  # (r,)
    rows = [row for row in range(r) if abs(dark[row]) >= UNIFORM and row not in ventricles]  # NaN: not uniform
    return np.where(np.isin(regions, rows), np.asarray(slope, dtype=np.float64), 0.0)


def age_t(scores: np.ndarray, ages: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """t of the Pearson correlation between each column of ``scores`` (s, r) and ``ages`` (s,): r sqrt(s - 2) /
    sqrt(1 - r^2), positive when the scores grow with age; with bootstrap ``weights`` (B, s) (times each scan is drawn)
    one row per resample -> (B, r). NaN columns stay NaN; a column that does not vary gives 0."""
    scores, ages = np.asarray(scores, dtype=np.float64), np.asarray(ages, dtype=np.float64)
    s = len(ages)
    w = np.ones((1, s)) if weights is None else np.asarray(weights, dtype=np.float64)  # (B, s)
    ages = ages - ages.mean()  # centred: the weighted moments below stay accurate
    valid = ~np.isnan(scores).any(axis=0)  # (r,)
    centred = np.where(valid, scores, 0.0)
    centred = centred - centred.mean(axis=0)  # (s, r)
    m_x, m_a = w @ centred / s, w @ ages / s  # (B, r), (B,)
    cov = w @ (centred * ages[:, None]) / s - m_x * m_a[:, None]  # (B, r)
    var_x = np.maximum(w @ centred**2 / s - m_x**2, 0.0)
    var_a = np.maximum(w @ ages**2 / s - m_a**2, 0.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.clip(cov / np.sqrt(var_x * var_a), -1.0, 1.0)
        t = rho * np.sqrt((s - 2) / np.maximum(1.0 - rho**2, 1e-12))
    t = np.where((var_x == 0) | (var_a == 0), 0.0, t)
    t[:, ~valid] = np.nan
    return t[0] if weights is None else t


def region_pulls(mean: np.ndarray, slope: np.ndarray, regions: np.ndarray, affine: np.ndarray, r: int,
                 ventricles: Sequence[int], twins: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each region's largest pull share and the neighbour that pulls (module docstring, *Spill-over*).

    Returns (r,) the largest partial R^2 of tissue moving towards one neighbour in a region's slope map beside a
    uniform change, tissue moving off the ventricles and its own contraction (neighbours: the regions with a voxel
    within ``PULL_REACH_MM``, the ``ventricles`` and the region's ``twins[row]`` in the other hemisphere (-1: none)
    left out) and (r,) that neighbour's row; NaN (-1) for the ventricles, regions under ``MIN_VOXELS`` voxels, flat
    maps, regions without a neighbour, and every row without the ventricles on the grid. Arguments as
    :func:`contraction_shares`.
    """
    pull, by = np.full(r, np.nan), np.full(r, -1)
    fields = _displacement(mean, regions, affine, ventricles)
    if fields is None:
        return pull, by
    spacing, grad, away, _ = fields
    for row in np.unique(regions[regions >= 0]):
        own = regions == row  # (X, Y, Z)
        if row in ventricles or own.sum() < MIN_VOXELS:
            continue
        neighbours = _neighbours(regions, own, spacing, [row, *ventricles, twins[row]])
        if not len(neighbours):
            continue
        box = _box(np.isin(regions, [row, *neighbours]))  # every neighbour voxel inside: exact distances to them
        inside, x = _own_columns(grad, away, regions, row, box, spacing)
        pull[row], by[row] = _largest_pull([g[box] for g in grad], regions[box], inside, x, slope[box][inside],
                                           neighbours, spacing)
    return pull, by


def ventricle_pulls(mean: np.ndarray, slope: np.ndarray, regions: np.ndarray, affine: np.ndarray, r: int,
                    ventricles: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each lateral ventricle's expansion share, largest pull share and the neighbour that pulls (module docstring).

    Returns (r,) expansion (partial R^2 of its own boundary motion beside a uniform change), (r,) pull (the largest
    partial R^2 of tissue moving towards one neighbour beside both; neighbours: the regions with a voxel within
    ``PULL_REACH_MM``, the ``ventricles`` left out) and (r,) that neighbour's row; NaN (row -1) for every other row, a
    ventricle under ``MIN_VOXELS`` voxels or with a flat map, and a pull without a neighbour. ``mean``, ``slope``,
    ``regions``, ``affine``: as :func:`contraction_shares`.
    """
    spacing = voxel_sizes(np.asarray(affine, dtype=np.float64))  # (3,) mm per voxel
    expansion, pull, by = np.full(r, np.nan), np.full(r, np.nan), np.full(r, -1)
    for row in ventricles:
        own = regions == row  # (X, Y, Z)
        if own.sum() < MIN_VOXELS:
            continue
        neighbours = _neighbours(regions, own, spacing, ventricles)
        box = _box(np.isin(regions, [row, *neighbours]))  # every neighbour voxel inside: exact distances to them
        grad = np.gradient(np.asarray(mean, dtype=np.float64)[box], *spacing)  # 3 x crop
        inside = regions[box] == row
        y = slope[box][inside]  # (v,)
        total = ((y - y.mean()) ** 2).sum()
        if total <= 0:
            continue
        x = np.column_stack([np.ones_like(y), _inwards(grad, inside, spacing)])  # (v, 2)
        expansion[row] = (_sse(x[:, :1], y) - _sse(x, y)) / total  # uniform change and own expansion
        pull[row], by[row] = _largest_pull(grad, regions[box], inside, x, y, neighbours, spacing)
    return expansion, pull, by


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

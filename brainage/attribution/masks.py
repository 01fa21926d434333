"""Voxel sets that region attribution aggregates over or occludes, on the model grid.

- Region masks: the atlas resampled onto the model grid (``RegionIndex.columns``), one set per region.
- Bands (deformation-aware, our choice): a region plus the shell of brain voxels within ``band_mm`` of it. An atrophy
  moves boundaries, so much of its intensity change lies just outside the atlas label (a growing ventricle darkens the
  caudate and thalamus edge; a shrinking structure lets its neighbours move in). A band credits that change to the
  region; the shell alone (band minus region) is reported as the part the region shares with its neighbours. The
  shell includes unlabelled brain voxels (DK has no white-matter label).
- Size- and shape-matched nulls: a region's own mask moved by a random whole-voxel shift to another place in the brain
  (at least ``MIN_INSIDE`` of it inside the brain, clipped to it). What a null set contributes estimates what any voxel
  set of that size contributes (e.g. through per-subject intensity normalisation), see ``brainage.attribution.ranking``.
- Colour classes: overlapping sets (bands, nulls) cannot share one Captum ``feature_mask`` (a partition), so they are
  split greedily into classes of pairwise disjoint sets, each ablated with one mask.

Letter legend: q voxel sets, V voxels of the model grid (X * Y * Z), (X, Y, Z) model-grid shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse

__all__ = ["MIN_INSIDE", "VoxelSets", "band_sets", "colour_classes", "null_sets", "region_sets"]

MIN_INSIDE = 0.9  # share of a shifted null mask that must fall inside the brain


@dataclass(frozen=True)
class VoxelSets:
    """q voxel sets on one (X, Y, Z) grid as a sparse (q, V) 0/1 matrix; ``sizes`` (q,) voxels per set."""

    matrix: sparse.csr_matrix  # (q, V)
    shape: tuple[int, int, int]

    @classmethod
    def from_masks(cls, masks: Sequence[np.ndarray], shape: Sequence[int]) -> VoxelSets:
        shape = tuple(int(s) for s in shape)
        rows = [np.flatnonzero(np.asarray(m).reshape(-1)) for m in masks]
        if any(np.asarray(m).shape != shape for m in masks):
            raise ValueError(f"every mask must have the grid shape {shape}")
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        matrix = sparse.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(rows), int(np.prod(shape))))
        return cls(matrix, shape)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.matrix.shape[0]

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.matrix.indptr)

    def mask(self, i: int) -> np.ndarray:
        """(X, Y, Z) bool mask of set ``i``."""
        out = np.zeros(int(np.prod(self.shape)), dtype=bool)
        out[self.matrix.indices[self.matrix.indptr[i] : self.matrix.indptr[i + 1]]] = True
        return out.reshape(self.shape)

    def sums(self, volume: np.ndarray) -> np.ndarray:
        """Sum of a voxel map (X, Y, Z) or a stack (s, X, Y, Z) over each set -> (q,) or (s, q)."""
        volume = np.asarray(volume, dtype=np.float64)
        flat = volume.reshape(-1, int(np.prod(self.shape)))  # (s, V)
        out = np.asarray(self.matrix @ flat.T).T  # (s, q)
        return out[0] if volume.ndim == 3 else out


def region_sets(regions: np.ndarray, num_regions: int) -> VoxelSets:
    """One set per region row 0..r-1 of a region-row volume (X, Y, Z), -1 = background; absent regions are empty."""
    regions = np.asarray(regions)
    return VoxelSets.from_masks([regions == r for r in range(num_regions)], regions.shape)


def band_sets(regions: np.ndarray, num_regions: int, brain: np.ndarray, band_mm: float, spacing: float
              ) -> tuple[VoxelSets, VoxelSets]:
    """(bands, shells): each region plus brain voxels within ``band_mm`` of it, and that shell alone."""
    if band_mm <= 0 or spacing <= 0:
        raise ValueError(f"band_mm and spacing must be positive, got band_mm={band_mm}, spacing={spacing}")
    regions, brain = np.asarray(regions), np.asarray(brain, dtype=bool)
    bands, shells = [], []
    for r in range(num_regions):
        own = regions == r
        if not own.any():
            bands.append(own)
            shells.append(own)
            continue
        near = ndi.distance_transform_edt(~own, sampling=spacing) <= band_mm
        bands.append(own | (near & brain))
        shells.append(near & brain & ~own)
    return VoxelSets.from_masks(bands, regions.shape), VoxelSets.from_masks(shells, regions.shape)


def null_sets(sets: VoxelSets, brain: np.ndarray, count: int, seed: int = 0, max_tries: int = 200
              ) -> tuple[VoxelSets, np.ndarray]:
    """``count`` shape-matched nulls: random non-empty sets of ``sets`` shifted by a random whole-voxel offset
    (up to a third of the grid per axis) so that >= MIN_INSIDE of it lies in ``brain``; clipped to the brain.

    Returns:
        (null sets, source (count,) index of the set each null copies).
    """
    brain = np.asarray(brain, dtype=bool)
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(sets.sizes > 0)
    if len(candidates) == 0:
        raise ValueError("no non-empty set to copy as a null")
    shape = np.array(sets.shape)
    masks, source = [], []
    for _ in range(count):
        for _ in range(max_tries):
            i = int(rng.choice(candidates))
            ijk = np.stack(np.unravel_index(sets.matrix.indices[sets.matrix.indptr[i] : sets.matrix.indptr[i + 1]],
                                            sets.shape), axis=1)  # (n, 3)
            shifted = ijk + rng.integers(-(shape // 3), shape // 3 + 1)  # (n, 3)
            ok = np.all((shifted >= 0) & (shifted < shape), axis=1)
            ok[ok] = brain[tuple(shifted[ok].T)]
            if ok.mean() >= MIN_INSIDE:
                mask = np.zeros(sets.shape, dtype=bool)
                mask[tuple(shifted[ok].T)] = True
                masks.append(mask)
                source.append(i)
                break
        else:
            raise ValueError(f"could not place a null set inside the brain in {max_tries} tries; is the brain mask "
                             "(non-zero voxels) on the same grid as the regions?")
    return VoxelSets.from_masks(masks, sets.shape), np.asarray(source)


def colour_classes(sets: VoxelSets) -> list[list[int]]:
    """Greedy partition of the non-empty sets into classes of pairwise disjoint sets (largest first)."""
    overlap = (sets.matrix @ sets.matrix.T).tocsr()  # (q, q) shared voxels
    order = sorted(np.flatnonzero(sets.sizes > 0), key=lambda i: -sets.sizes[i])
    classes: list[list[int]] = []
    members: list[set[int]] = []
    for i in order:
        clashes = set(overlap.indices[overlap.indptr[i] : overlap.indptr[i + 1]])
        for cls, mem in zip(classes, members):
            if not clashes & mem:
                cls.append(int(i))
                mem.add(int(i))
                break
        else:
            classes.append([int(i)])
            members.append({int(i)})
    return classes

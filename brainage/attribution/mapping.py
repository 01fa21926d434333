"""Geometry of expert attribution: MoE token grid -> model-grid voxels -> atlas regions.

A 3D ViT cuts its input (X, Y, Z) into a (gx, gy, gz) grid of non-overlapping patches; token
n = (i * gy + j) * gz + l covers voxels [i*px:(i+1)*px, j*py:(j+1)*py, l*pz:(l+1)*pz] with p = shape // grid per
axis. Mapping a per-token quantity back to voxels is therefore nearest-neighbour upsampling (as MONAI's
``default_upsampler`` does for CAM maps). The model grid is tied to MNI space by the preprocessed image's affine, so an
atlas resampled onto that grid (nearest neighbour, ``Atlas.resample_to``) gives every voxel, and so every token, its
regions. Expert routing follows ERMoE (Cheng et al., arXiv 2511.10971): top-k experts per token with renormalised
gates; we report the top-1 expert and the gate-weighted top-k. Region names follow the atlas (Desikan et al. 2006 by
default).

Letter legend: n tokens, k chosen experts per token, e experts, r atlas regions, (X, Y, Z) model-grid voxels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "patch_shape",
    "token_grid_to_voxels",
    "top1_expert",
    "gated_expert_weights",
    "one_hot",
    "RegionIndex",
    "token_region_counts",
]


def patch_shape(shape: Sequence[int], grid: Sequence[int]) -> tuple[int, int, int]:
    """Voxels per token along each axis, ``shape // grid``; the grid must tile the volume exactly."""
    shape, grid = tuple(int(s) for s in shape), tuple(int(g) for g in grid)
    if len(shape) != 3 or len(grid) != 3:
        raise ValueError(f"expected a 3D volume shape and a 3D token grid, got shape={shape} and grid={grid}")
    if any(g <= 0 or s % g for s, g in zip(shape, grid)):
        raise ValueError(f"token grid {grid} does not tile the model input {shape}: every axis must be a multiple")
    return tuple(s // g for s, g in zip(shape, grid))  # type: ignore[return-value]


def token_grid_to_voxels(values: np.ndarray, grid: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling of per-token values (n, ...) to model-grid voxels (X, Y, Z, ...)."""
    values = np.asarray(values)
    px, py, pz = patch_shape(shape, grid)
    n = int(np.prod(grid))
    if values.shape[0] != n:
        raise ValueError(f"expected {n} token values for grid {tuple(grid)}, got leading dimension {values.shape[0]}")
    out = values.reshape(*grid, *values.shape[1:])  # (n, ...) -> (gx, gy, gz, ...): n = (i*gy + j)*gz + l
    for axis, repeat in enumerate((px, py, pz)):
        out = np.repeat(out, repeat, axis=axis)  # (gx, gy, gz, ...) -> (X, Y, Z, ...)
    return out


def top1_expert(expert_index: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """The expert with the largest gate of each token: (n, k), (n, k) -> (n,) int64."""
    expert_index, gates = np.asarray(expert_index), np.asarray(gates)
    if expert_index.shape != gates.shape or expert_index.ndim != 2:
        raise ValueError(f"expert_index {expert_index.shape} and gates {gates.shape} must both be (n, k)")
    best = np.argmax(gates, axis=1)  # (n,) slot of the largest gate (top-k output need not be sorted)
    return expert_index[np.arange(len(best)), best].astype(np.int64)


def gated_expert_weights(expert_index: np.ndarray, gates: np.ndarray, num_experts: int) -> np.ndarray:
    """Gate-weighted expert use per token: w[n, e] = sum_k gates[n, k] * [expert_index[n, k] == e] -> (n, e)."""
    expert_index, gates = np.asarray(expert_index), np.asarray(gates, dtype=np.float64)
    if expert_index.shape != gates.shape or expert_index.ndim != 2:
        raise ValueError(f"expert_index {expert_index.shape} and gates {gates.shape} must both be (n, k)")
    _check_experts(expert_index, num_experts)
    weights = np.zeros((expert_index.shape[0], num_experts))  # (n, e)
    np.add.at(weights, (np.arange(expert_index.shape[0])[:, None], expert_index), gates)
    return weights


def one_hot(expert: np.ndarray, num_experts: int) -> np.ndarray:
    """(n,) expert ids -> (n, e) float64 indicator."""
    expert = np.asarray(expert)
    _check_experts(expert, num_experts)
    return np.eye(num_experts)[expert]


def _check_experts(index: np.ndarray, num_experts: int) -> None:
    if index.size and (index.min() < 0 or index.max() >= num_experts):
        raise ValueError(f"expert ids must lie in [0, {num_experts}), found range [{index.min()}, {index.max()}]")


@dataclass(frozen=True)
class RegionIndex:
    """Rows of every region table: atlas label values (background 0 excluded) in ascending order, with names."""

    labels: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def from_names(cls, names: Mapping[int, str]) -> RegionIndex:
        labels = tuple(sorted(int(k) for k in names if int(k) != 0))
        if not labels:
            raise ValueError("the atlas names no region with a non-zero label")
        return cls(labels, tuple(str(names[k]) for k in labels))

    def __len__(self) -> int:
        return len(self.labels)

    def columns(self, label_volume: np.ndarray) -> np.ndarray:
        """Label volume (X, Y, Z) -> region row index per voxel (X, Y, Z) int64; -1 for background/unnamed labels."""
        label_volume = np.asarray(label_volume).astype(np.int64)
        lookup = np.full(max(int(label_volume.max(initial=0)), max(self.labels)) + 1, -1, dtype=np.int64)
        lookup[list(self.labels)] = np.arange(len(self.labels))
        return np.where(label_volume >= 0, lookup[np.clip(label_volume, 0, None)], -1)


def token_region_counts(region_volume: np.ndarray, grid: Sequence[int], num_regions: int) -> np.ndarray:
    """Voxels of each region inside each token: region rows per voxel (X, Y, Z), -1 = none -> (n, r) float64."""
    region_volume = np.asarray(region_volume)
    n = int(np.prod(grid))
    token_id = token_grid_to_voxels(np.arange(n), grid, region_volume.shape)  # (X, Y, Z) token of each voxel
    inside = region_volume >= 0
    flat = token_id[inside] * num_regions + region_volume[inside]  # (m,) joint (token, region) index
    return np.bincount(flat, minlength=n * num_regions).reshape(n, num_regions).astype(np.float64)  # (n, r)

"""Cohort aggregation of MoE routing into region x expert tables and per-expert voxel frequency maps.

For every subject and MoE layer, the top-1 expert and the gate-weighted top-k (ERMoE routing, arXiv 2511.10971) of
each token are spread over the voxels the token covers and summed per atlas region (Desikan et al. 2006 by default).
The atlas is resampled onto the model grid once per distinct (shape, affine) and the per-token region voxel counts
are cached, so a subject costs one (n, r)^T (n, e) product per layer instead of a pass over its voxels.

Units: a table cell counts voxel-subjects (a voxel of one subject's model grid); gated cells weight each voxel by
its token's gate for that expert, so both tables share their row totals when gates sum to 1.

Letter legend: n tokens, k chosen experts, e experts, r atlas regions, (X, Y, Z) model-grid voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from brainage.attribution.mapping import (
    RegionIndex,
    gated_expert_weights,
    one_hot,
    patch_shape,
    token_grid_to_voxels,
    token_region_counts,
    top1_expert,
)

__all__ = ["RoutingLike", "AtlasLike", "Geometry", "SubjectRouting", "RoutingAggregator", "region_expert_frame"]

TableKind = Literal["top1", "gated"]


class RoutingLike(Protocol):
    """What the aggregator reads from a routing record (``brainage.contracts.routing.LayerRecord``)."""

    layer: int
    expert_index: np.ndarray  # (n, k)
    gates: np.ndarray  # (n, k)
    grid: tuple[int, int, int]


class AtlasLike(Protocol):
    names: dict[int, str]

    def resample_to(self, shape: Sequence[int], affine: np.ndarray) -> np.ndarray: ...


@dataclass
class Geometry:
    """One model grid in MNI space, with the atlas on it."""

    shape: tuple[int, int, int]
    affine: np.ndarray  # (4, 4) voxel -> MNI mm
    regions: np.ndarray  # (X, Y, Z) region row per voxel, -1 = background
    token_regions: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict)  # grid -> (n, r)
    subjects: int = 0

    def regions_per_token(self, grid: tuple[int, int, int], num_regions: int) -> np.ndarray:
        if grid not in self.token_regions:
            self.token_regions[grid] = token_region_counts(self.regions, grid, num_regions)
        return self.token_regions[grid]


@dataclass
class SubjectRouting:
    """One subject's routing, reduced to what the report needs: top-1 expert per token and layer."""

    subject_id: str
    geometry: int
    top1: dict[int, np.ndarray]  # layer -> (n,)


@dataclass
class _LayerTotals:
    grid: tuple[int, int, int]
    top1: np.ndarray  # (r, e)
    gated: np.ndarray  # (r, e)
    frequency: dict[int, np.ndarray] = field(default_factory=dict)  # geometry -> (n, e) summed top-1 indicators


class RoutingAggregator:
    """Accumulate region x expert tables and expert frequency maps over a cohort, per MoE layer.

    Args:
        atlas: an ``Atlas`` (labels, affine, names) with ``resample_to(shape, affine)``.
        num_experts: experts per MoE layer.
    """

    def __init__(self, atlas: AtlasLike, num_experts: int) -> None:
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1 for an attribution report, got {num_experts}")
        self.atlas = atlas
        self.num_experts = int(num_experts)
        self.regions = RegionIndex.from_names(atlas.names)
        self.geometries: list[Geometry] = []
        self.subjects: list[SubjectRouting] = []
        self._layers: dict[int, _LayerTotals] = {}
        self._geometry_keys: dict[tuple, int] = {}

    @property
    def layers(self) -> list[int]:
        return sorted(self._layers)

    def geometry(self, shape: Sequence[int], affine: np.ndarray) -> int:
        """Index of the geometry for this model grid, resampling the atlas the first time it is seen."""
        shape = tuple(int(s) for s in shape)
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"expected a finite (4, 4) voxel-to-MNI affine, got {affine.shape}")
        key = (shape, np.round(affine, 4).tobytes())
        if key not in self._geometry_keys:
            labels = np.asarray(self.atlas.resample_to(shape, affine))
            if labels.shape != shape:
                raise ValueError(f"atlas resampled to {labels.shape}, expected the model grid {shape}")
            self._geometry_keys[key] = len(self.geometries)
            self.geometries.append(Geometry(shape, affine, self.regions.columns(labels)))
        return self._geometry_keys[key]

    def add(
        self, subject_id: str, shape: Sequence[int], affine: np.ndarray, routing: Sequence[RoutingLike]
    ) -> SubjectRouting:
        """Add one subject's routing (every MoE layer) on the model grid ``shape`` with voxel->MNI ``affine``."""
        g = self.geometry(shape, affine)
        geometry = self.geometries[g]
        geometry.subjects += 1
        subject = SubjectRouting(str(subject_id), g, {})
        r, e = len(self.regions), self.num_experts
        for layer_routing in routing:
            layer, grid = int(layer_routing.layer), tuple(int(x) for x in layer_routing.grid)
            patch_shape(geometry.shape, grid)  # validates that the grid tiles the volume
            top1 = top1_expert(layer_routing.expert_index, layer_routing.gates)  # (n,)
            top1_hot = one_hot(top1, e)  # (n, e)
            gated = gated_expert_weights(layer_routing.expert_index, layer_routing.gates, e)  # (n, e)
            per_token = geometry.regions_per_token(grid, r)  # (n, r)
            totals = self._layers.setdefault(layer, _LayerTotals(grid, np.zeros((r, e)), np.zeros((r, e))))
            if totals.grid != grid:
                raise ValueError(f"layer {layer} of subject {subject_id!r} has token grid {grid}, others {totals.grid}")
            totals.top1 += per_token.T @ top1_hot  # (r, n) @ (n, e) -> (r, e)
            totals.gated += per_token.T @ gated
            if g in totals.frequency:
                totals.frequency[g] += top1_hot
            else:
                totals.frequency[g] = top1_hot.copy()
            subject.top1[layer] = top1
        self.subjects.append(subject)
        return subject

    def grid(self, layer: int) -> tuple[int, int, int]:
        """The token grid of an MoE layer."""
        self.counts(layer)  # validates the layer
        return self._layers[layer].grid

    def counts(self, layer: int, kind: TableKind = "top1") -> np.ndarray:
        """Cohort region x expert counts (r, e) in voxel-subjects."""
        if layer not in self._layers:
            raise ValueError(f"no routing recorded for MoE layer {layer}; layers seen: {self.layers}")
        if kind not in ("top1", "gated"):
            raise ValueError(f"table kind must be 'top1' or 'gated', got {kind!r}")
        return getattr(self._layers[layer], kind)

    def table(self, layer: int, kind: TableKind = "top1") -> pd.DataFrame:
        return region_expert_frame(self.counts(layer, kind), self.regions)

    def subject_counts(self, subject: SubjectRouting, layer: int) -> np.ndarray:
        """One subject's top-1 region x expert counts (r, e) in voxels."""
        return self.token_regions(subject, layer).T @ one_hot(subject.top1[layer], self.num_experts)  # (r, e)

    def main_geometry(self) -> int:
        """The geometry shared by most subjects (maps and figures are drawn on it)."""
        if not self.geometries:
            raise ValueError("no subject has been added to the aggregator")
        return int(np.argmax([geo.subjects for geo in self.geometries]))

    def frequency_maps(self, layer: int, geometry: int | None = None) -> np.ndarray:
        """Per-expert top-1 frequency per voxel over the geometry's subjects: (X, Y, Z, e) float32 in [0, 1]."""
        g = self.main_geometry() if geometry is None else geometry
        self.counts(layer)  # validates the layer
        totals, geo = self._layers[layer], self.geometries[g]
        frequency = totals.frequency[g] / geo.subjects  # (n, e)
        return token_grid_to_voxels(frequency, totals.grid, geo.shape).astype(np.float32)  # (X, Y, Z, e)

    def token_regions(self, subject: SubjectRouting, layer: int) -> np.ndarray:
        """The (n, r) region voxel counts of the tokens of ``subject`` at ``layer``."""
        self.counts(layer)  # validates the layer
        return self.geometries[subject.geometry].regions_per_token(self._layers[layer].grid, len(self.regions))


def region_expert_frame(counts: np.ndarray, regions: RegionIndex) -> pd.DataFrame:
    """Region x expert counts (r, e) -> table with label, region, voxels, expert_<e> counts, fraction_<e> per row.

    Regions with no voxel on the model grid (outside the field of view) are left out.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=1)  # (r,)
    keep = total > 0
    experts = range(counts.shape[1])
    frame = pd.DataFrame({"label": np.asarray(regions.labels)[keep], "region": np.asarray(regions.names)[keep]})
    frame["voxels"] = total[keep]
    fractions = counts[keep] / total[keep, None]  # (r', e) row-normalised
    for e in experts:
        frame[f"expert_{e}"] = counts[keep, e]
    for e in experts:
        frame[f"fraction_{e}"] = fractions[:, e]
    return frame

"""Per-region age sensitivity by occlusion: the change in predicted age when one atlas region of a scan is replaced
by a reference image.

Occlusion (Zeiler & Fergus 2014) with an anatomical mask instead of a sliding cube, as brain-age work does to rank
regions (e.g. the Triamese-ViT occlusion maps; Bintsi et al. for patch-wise relevance). Replacing a region by a
reference image rather than zeros keeps the input on the data manifold.

Reference (our choice, documented in the report): by default the voxel-wise mean of the **youngest third** of the
occluded scans ("young reference"), the same idea as the baseline input of integrated gradients (Sundararajan et al.
2017): ``-delta`` is then the number of years the region's deviation from a young brain adds to the prediction, and it
has the sign of ageing. Regions are ranked by its mean, ``age_contribution``. With the whole-cohort mean as reference
("cohort"), old and young scans move in opposite directions and only the mean absolute change ranks regions; that
measure also picks up regions the model is merely unstable to (a perturbation with no age direction), which is why it
is kept as a secondary column (``mean_abs_delta``). On the 400-subject demo model (60 held-out scans) the young
reference with the signed ranking puts both planted lateral ventricles at ranks 3-4 (behind the thalami they displace;
cohort mean with |delta|: ranks 7 and 10 on 16 scans) and gives precision@16 = 0.31 (0.25 before). Occluding each
planted effect at once (:func:`set_occlusion_deltas`) shows why precision stays low there: the model reads the
ventricle enlargement (+0.49 y) but not the hippocampal (+0.01 y) or thin cortical effects (-0.10 y; null regions
+0.03 y), so a faithful ranking cannot put 12 of the 16 planted regions on top. A per-voxel normalised column is
reported too; it is not used for ranking because it favours tiny regions with a few boundary voxels.

The model is reached only through ``predict``: (m, X, Y, Z) float32 images -> (m,) predicted ages in years (numpy),
and never touched otherwise; the occlusion itself is Captum's ``FeatureAblation``
(:func:`brainage.attribution.methods.ablation_contributions`). The newer methods (band occlusion, integrated gradients,
intensity-matched reference, size-matched nulls, bootstrap ranks) are in :mod:`brainage.attribution.methods` and
:mod:`brainage.attribution.ranking`; this module keeps the report's original region occlusion and its table.

Letter legend: s subjects, m images per model call, r atlas regions, (X, Y, Z) model-grid voxels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from brainage.attribution.mapping import RegionIndex
from brainage.attribution.masks import VoxelSets
from brainage.attribution.methods import AblationPlan, ablation_contributions
from brainage.attribution.reference import Reference, reference_image

__all__ = ["Reference", "occlusion_deltas", "rank_sensitivity", "reference_image", "set_occlusion_deltas"]

def occlusion_deltas(
    predict: Callable[[np.ndarray, int], np.ndarray],
    images: Sequence[np.ndarray],
    regions: np.ndarray,
    num_regions: int,
    batch_size: int = 8,
    progress: bool = True,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Predicted-age change (s, r) when each region of each image is replaced by the reference image.

    Args:
        predict: ``predict(batch, s)``: (m, X, Y, Z) float32 copies of image s -> (m,) predicted ages in years
            (``s`` lets the caller pass per-subject covariates such as sex).
        images: s preprocessed model inputs (X, Y, Z) on one shared grid.
        regions: (X, Y, Z) region row per voxel, -1 = background (``RegionIndex.columns`` of the resampled atlas).
        num_regions: r; regions without voxels get NaN.
        batch_size: occluded copies per model call.
        progress: show a tqdm bar (it hides itself when stderr is not a terminal).
        reference: (X, Y, Z) replacement image (:func:`reference_image`); default the mean of ``images``.
    """
    present = [r for r in range(num_regions) if np.any(regions == r)]
    deltas = np.full((len(images), num_regions), np.nan)
    deltas[:, present] = set_occlusion_deltas(predict, images, regions, [[r] for r in present], batch_size, progress,
                                              reference)
    return deltas


def set_occlusion_deltas(
    predict: Callable[[np.ndarray, int], np.ndarray],
    images: Sequence[np.ndarray],
    regions: np.ndarray,
    region_sets: Sequence[Sequence[int]],
    batch_size: int = 8,
    progress: bool = True,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Predicted-age change (s, q) when all regions of each of q region sets are replaced together (e.g. every
    region of one planted effect); arguments as in :func:`occlusion_deltas`."""
    if len(images) == 0:
        raise ValueError("occlusion needs at least one image")
    stack = np.stack([np.asarray(im, dtype=np.float32) for im in images])  # (s, X, Y, Z)
    if stack.shape[1:] != regions.shape:
        raise ValueError(f"images of shape {stack.shape[1:]} do not match the region grid {regions.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mean = stack.mean(axis=0) if reference is None else np.asarray(reference, dtype=np.float32)  # (X, Y, Z)
    if mean.shape != regions.shape:
        raise ValueError(f"reference image of shape {mean.shape} does not match the region grid {regions.shape}")
    plan = AblationPlan.of(VoxelSets.from_masks([np.isin(regions, list(s)) for s in region_sets], regions.shape))

    def forward(x: torch.Tensor, s: int) -> torch.Tensor:  # Captum's (m, 1, X, Y, Z) -> the caller's numpy predict
        return torch.as_tensor(np.asarray(predict(x[:, 0].numpy(), s), dtype=np.float32))

    deltas = np.full((len(stack), len(region_sets)), np.nan)
    for s in tqdm(range(len(stack)), desc="occlusion", unit="subject", disable=None if progress else True):
        deltas[s] = -ablation_contributions(forward, stack[s], plan, mean, s, batch_size)
    return deltas


def rank_sensitivity(deltas: np.ndarray, regions: RegionIndex, voxels: np.ndarray) -> pd.DataFrame:
    """Rank regions by age contribution, the mean of ``-delta`` (years the region adds relative to the reference).

    Columns: rank, label, region, voxels, age_contribution, contribution_per_1000_voxels, mean_abs_delta, mean_delta,
    sd_delta, rank_abs (rank by mean |delta|).

    Args:
        deltas: (s, r) from :func:`occlusion_deltas`; NaN columns (regions off the grid) are dropped.
        regions: the region index of the table rows.
        voxels: (r,) voxels of each region on the model grid.
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    if deltas.ndim != 2 or deltas.shape[1] != len(regions):
        raise ValueError(f"expected deltas (subjects, {len(regions)}), got {deltas.shape}")
    keep = ~np.all(np.isnan(deltas), axis=0)
    voxels = np.asarray(voxels, dtype=np.float64)[keep]
    contribution = -np.nanmean(deltas[:, keep], axis=0)
    frame = pd.DataFrame(
        {
            "label": np.asarray(regions.labels)[keep],
            "region": np.asarray(regions.names)[keep],
            "voxels": voxels,
            "age_contribution": contribution,
            "contribution_per_1000_voxels": 1000.0 * contribution / np.maximum(voxels, 1.0),
            "mean_abs_delta": np.nanmean(np.abs(deltas[:, keep]), axis=0),
            "mean_delta": np.nanmean(deltas[:, keep], axis=0),
            "sd_delta": np.nanstd(deltas[:, keep], axis=0),
        }
    )
    frame["rank_abs"] = frame["mean_abs_delta"].rank(ascending=False, method="first").astype(int)
    frame = frame.sort_values("age_contribution", ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame

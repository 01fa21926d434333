"""Per-region age sensitivity by occlusion: the change in predicted age when one atlas region of a scan is replaced
by the voxel-wise cohort mean image.

Occlusion (Zeiler & Fergus 2014) with an anatomical mask instead of a sliding cube, as brain-age work does to rank
regions (e.g. the Triamese-ViT occlusion maps; Bintsi et al. for patch-wise relevance). Replacing a region by the
cohort mean, rather than zeros, keeps the input on the data manifold and removes only the subject's deviation from
the average anatomy there. Regions are ranked by the mean absolute change (an age-carrying region moves old and young
subjects in opposite directions, so the signed mean can cancel); the signed mean is reported too.

The model is reached only through ``predict``: (m, X, Y, Z) float32 images -> (m,) predicted ages in years, so this
module computes without importing torch and never touches the model's weights.

Letter legend: s subjects, m images per model call, r atlas regions, (X, Y, Z) model-grid voxels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainage.attribution.mapping import RegionIndex

__all__ = ["occlusion_deltas", "rank_sensitivity"]


def occlusion_deltas(
    predict: Callable[[np.ndarray, int], np.ndarray],
    images: Sequence[np.ndarray],
    regions: np.ndarray,
    num_regions: int,
    batch_size: int = 8,
    progress: bool = True,
) -> np.ndarray:
    """Predicted-age change (s, r) when each region of each image is replaced by the cohort mean image.

    Args:
        predict: ``predict(batch, s)``: (m, X, Y, Z) float32 copies of image s -> (m,) predicted ages in years
            (``s`` lets the caller pass per-subject covariates such as sex).
        images: s preprocessed model inputs (X, Y, Z) on one shared grid.
        regions: (X, Y, Z) region row per voxel, -1 = background (``RegionIndex.columns`` of the resampled atlas).
        num_regions: r; regions without voxels get NaN.
        batch_size: occluded copies per model call.
        progress: show a tqdm bar (it hides itself when stderr is not a terminal).
    """
    if not images:
        raise ValueError("occlusion needs at least one image")
    stack = np.stack([np.asarray(im, dtype=np.float32) for im in images])  # (s, X, Y, Z)
    if stack.shape[1:] != regions.shape:
        raise ValueError(f"images of shape {stack.shape[1:]} do not match the region grid {regions.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mean = stack.mean(axis=0)  # (X, Y, Z) cohort reference
    present = [r for r in range(num_regions) if np.any(regions == r)]
    deltas = np.full((len(stack), num_regions), np.nan)
    for s, image in enumerate(tqdm(stack, desc="occlusion", unit="subject", disable=None if progress else True)):
        base = float(np.asarray(predict(image[None], s))[0])
        for start in range(0, len(present), batch_size):
            chunk = present[start : start + batch_size]
            batch = np.repeat(image[None], len(chunk), axis=0)  # (m, X, Y, Z)
            for i, r in enumerate(chunk):
                mask = regions == r
                batch[i][mask] = mean[mask]
            deltas[s, chunk] = np.asarray(predict(batch, s), dtype=np.float64) - base
    return deltas


def rank_sensitivity(deltas: np.ndarray, regions: RegionIndex, voxels: np.ndarray) -> pd.DataFrame:
    """Rank regions by mean |age change|: columns rank, label, region, voxels, mean_abs_delta, mean_delta, sd_delta.

    Args:
        deltas: (s, r) from :func:`occlusion_deltas`; NaN columns (regions off the grid) are dropped.
        regions: the region index of the table rows.
        voxels: (r,) voxels of each region on the model grid.
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    if deltas.ndim != 2 or deltas.shape[1] != len(regions):
        raise ValueError(f"expected deltas (subjects, {len(regions)}), got {deltas.shape}")
    keep = ~np.all(np.isnan(deltas), axis=0)
    frame = pd.DataFrame(
        {
            "label": np.asarray(regions.labels)[keep],
            "region": np.asarray(regions.names)[keep],
            "voxels": np.asarray(voxels)[keep],
            "mean_abs_delta": np.nanmean(np.abs(deltas[:, keep]), axis=0),
            "mean_delta": np.nanmean(deltas[:, keep], axis=0),
            "sd_delta": np.nanstd(deltas[:, keep], axis=0),
        }
    )
    frame = frame.sort_values("mean_abs_delta", ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame

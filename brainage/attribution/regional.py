"""Regional age models: how much age each atlas region's own voxels tell, without the brain-age model.

For each region, a ridge regression maps the region's voxels (each standardised on the training fold) to age, the
penalty chosen by efficient leave-one-out inside the training fold (scikit-learn ``RidgeCV``). K-fold
cross-validation gives every subject a held-out prediction per region; the median-age predictor of the same folds is
the baseline. A region's *gain* is the baseline's mean absolute error minus the region's (years): the age its voxels
alone tell. This is regional brain age (Kaufmann et al. 2019, Nat Neurosci 22:1617; local brain age: Popescu et al.
2021, Hum Brain Mapp 42:3937), one region-wise searchlight (Kriegeskorte et al. 2006, PNAS 103:3863).

It answers a different question from region occlusion: *where these scans change with age*, not *what the brain-age
model reads*. A region that ages but that the model leaves unread (a small contraction beside a strong darkening)
shows here and not in the occlusion ranking; a region whose neighbour moves into it (a growing ventricle) shows here
too, since its voxels change. Uncertainty: the per-subject paired gains (baseline error minus region error) are
bootstrapped over subjects (:func:`brainage.attribution.ranking.bootstrap_intervals`).

Letter legend: s subjects, r atlas regions, v voxels of one region, (X, Y, Z) model grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainage.attribution.mapping import RegionIndex
from brainage.attribution.ranking import bootstrap_intervals, region_columns

__all__ = ["ALPHAS", "MIN_SUBJECTS", "RegionalAgeModels", "fit_regional_models", "rank_regional"]

ALPHAS = np.logspace(-1, 5, 13)  # ridge penalties searched inside each training fold (standardised voxels)
MIN_SUBJECTS = 20  # fewer scans with a known age cannot hold out a fold worth scoring


@dataclass(frozen=True)
class RegionalAgeModels:
    """Cross-validated errors of one ridge model per region (NaN columns: regions not on the grid)."""

    errors: np.ndarray  # (s, r) absolute held-out error, years
    baseline_errors: np.ndarray  # (s,) absolute held-out error of the training folds' median age
    voxels: np.ndarray  # (r,) voxels of each region on the grid
    regions: RegionIndex
    folds: int

    @property
    def gains(self) -> np.ndarray:
        """(s, r) per-subject paired gain: the baseline's error minus the region model's (years)."""
        return self.baseline_errors[:, None] - self.errors


def _folds(s: int, folds: int, seed: int) -> np.ndarray:
    """(s,) fold of each subject: a seeded permutation dealt round-robin."""
    order = np.random.default_rng(seed).permutation(s)
    fold = np.empty(s, dtype=np.int64)
    fold[order] = np.arange(s) % folds
    return fold


def fit_regional_models(voxels: np.ndarray, ages: Sequence[float], rows: np.ndarray, index: RegionIndex,
                        folds: int = 5, seed: int = 0) -> RegionalAgeModels:
    """Fit and cross-validate one ridge model per region.

    Args:
        voxels: (s, n) values of the atlas-labelled voxels of s preprocessed scans on one grid (``image[regions >=
            0]`` per scan, any float dtype).
        ages: (s,) known ages in years.
        rows: (n,) region row of each voxel column (``RegionIndex.columns`` of the grid).
        index: the atlas regions (r rows).
        folds: cross-validation folds (subjects dealt at random with ``seed``).
    """
    from sklearn.linear_model import RidgeCV

    voxels, ages, rows = np.asarray(voxels), np.asarray(ages, dtype=np.float64), np.asarray(rows)
    if voxels.ndim != 2 or len(voxels) != len(ages) or rows.shape != voxels.shape[1:]:
        raise ValueError(f"expected voxels (s, n), s ages and n region rows; got {voxels.shape}, {ages.shape} and "
                         f"{rows.shape}")
    if not np.all(np.isfinite(ages)):
        raise ValueError("regional age models need every age known; leave out scans without one")
    if len(ages) < max(MIN_SUBJECTS, 2 * folds):
        raise ValueError(f"regional age models need at least {max(MIN_SUBJECTS, 2 * folds)} scans with a known age, "
                         f"got {len(ages)}")
    if not 2 <= folds <= len(ages):
        raise ValueError(f"folds={folds} must be in [2, {len(ages)}]")
    s, r = len(ages), len(index)
    fold = _folds(s, folds, seed)
    baseline = np.empty(s)
    for k in range(folds):
        baseline[fold == k] = np.abs(ages[fold == k] - np.median(ages[fold != k]))
    errors = np.full((s, r), np.nan)
    sizes = np.bincount(rows[rows >= 0], minlength=r)[:r]
    for region in np.flatnonzero(sizes):
        x = voxels[:, rows == region].astype(np.float64)  # (s, v)
        for k in range(folds):
            train, test = fold != k, fold == k
            mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
            model = RidgeCV(alphas=ALPHAS).fit((x[train] - mean) / std, ages[train])
            errors[test, region] = np.abs(model.predict((x[test] - mean) / std) - ages[test])
    return RegionalAgeModels(errors, baseline, sizes, index, folds)


def rank_regional(models: RegionalAgeModels, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Regions by decreasing gain. Columns: rank, region, structure, hemisphere, gain, ci_low, ci_high, mae,
    rank_low, rank_high, n_voxels (years; ``level`` bootstrap intervals over subjects)."""
    keep = models.voxels > 0
    gains = models.gains[:, keep]  # (s, r')
    low, high, rank_low, rank_high = bootstrap_intervals(gains, n_boot, level, seed)
    frame = pd.DataFrame({
        **region_columns(np.asarray(models.regions.names)[keep]),
        "gain": gains.mean(axis=0),
        "ci_low": low,
        "ci_high": high,
        "mae": models.errors[:, keep].mean(axis=0),
        "rank_low": rank_low,
        "rank_high": rank_high,
        "n_voxels": models.voxels[keep].astype(int),
    })
    frame = frame.sort_values("gain", ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame

"""Region ranking with uncertainty: a size-matched-null-corrected statistic, bootstrap intervals over subjects and rank
intervals, as tidy tables (one row per region) for the report.

- Null-corrected contribution (our choice): per subject s, ``c[s, r] - rate[s] * n[r]`` with ``rate[s]`` the median
  over the subject's null sets of contribution per voxel (``brainage.attribution.masks.null_sets``: region masks
  shifted elsewhere in the brain) and ``n[r]`` the voxels attributed to region r. It removes what any voxel set of
  that size contributes, e.g. through per-subject z-scoring inside the brain, which spreads a regional change into
  every voxel. The median keeps a null set that lands on a truly age-related region from inflating the rate.
- Ranking statistic: the null-corrected mean (years; default), or its one-sample t statistic, mean / (sd / sqrt(s)),
  which ranks a small effect that every subject shows above a large one that few show (the t-map convention of
  voxel-based morphometry, Ashburner & Friston 2000).
- Intervals: nonparametric bootstrap over subjects (Efron & Tibshirani 1993), percentile intervals of the mean; each
  replicate also ranks the regions by the ranking statistic, and the percentile interval of a region's rank is its
  rank interval. Both signs are kept: a negative contribution (the region makes the scan look younger than the
  reference) is a result, not noise to drop.

Letter legend: s subjects, r regions, q null sets or named sets, B bootstrap replicates, (X, Y, Z) model grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

from brainage.attribution.mapping import RegionIndex

__all__ = ["RANK_STATISTICS", "RankStatistic", "RegionContributions", "bootstrap_intervals", "bootstrap_means",
           "bootstrap_weights", "hemisphere", "interval_table", "null_corrected", "null_rate", "rank_intervals",
           "rank_regions", "region_columns", "t_statistic"]

RankStatistic = Literal["null_corrected", "t"]  # rank_regions(by=...)
RANK_STATISTICS: tuple[str, ...] = get_args(RankStatistic)


@dataclass
class RegionContributions:
    """Per-subject region contributions of one attribution method (years; ``brainage.report.attribute`` computes
    them), with what ranking and reporting need."""

    method: str
    regions: RegionIndex
    values: np.ndarray  # (s, r) contribution of each region (its band for band methods); NaN = not on the grid
    own: np.ndarray  # (s, r) the region alone (equals values for non-band methods)
    shell: np.ndarray  # (s, r) band minus region (0 for non-band methods)
    sizes: np.ndarray  # (r,) voxels attributed (band or region)
    region_voxels: np.ndarray  # (r,) voxels of the region itself
    null_values: np.ndarray  # (s, q) contributions of the size-matched null sets
    null_sizes: np.ndarray  # (q,) voxels of each null set
    null_source: np.ndarray  # (q,) region row each null set copies
    reference: str  # sentence describing the reference
    seconds_per_subject: float
    band_mm: float | None = None
    maps: np.ndarray | None = None  # (s, X, Y, Z) voxel attributions (gradient methods with keep_maps=True)

    @property
    def is_band(self) -> bool:
        return self.band_mm is not None


def null_rate(null_values: np.ndarray, null_sizes: np.ndarray) -> np.ndarray:
    """Per-subject median contribution per voxel of the null sets: (s, q), (q,) -> (s,)."""
    null_values, null_sizes = np.asarray(null_values, dtype=np.float64), np.asarray(null_sizes, dtype=np.float64)
    if null_values.ndim != 2 or null_values.shape[1] != len(null_sizes) or len(null_sizes) == 0:
        raise ValueError(f"null values (subjects, q) and sizes (q,) must match with q >= 1, got {null_values.shape} "
                         f"and {null_sizes.shape}")
    if np.any(null_sizes <= 0):
        raise ValueError("null sets must be non-empty")
    return np.median(null_values / null_sizes[None, :], axis=1)


def null_corrected(values: np.ndarray, sizes: np.ndarray, null_values: np.ndarray, null_sizes: np.ndarray
                   ) -> np.ndarray:
    """``values[s, r] - rate[s] * sizes[r]`` (see the module docstring) -> (s, r)."""
    values = np.asarray(values, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(sizes):
        raise ValueError(f"values (subjects, r) and sizes (r,) must match, got {values.shape} and {sizes.shape}")
    return values - null_rate(null_values, null_sizes)[:, None] * sizes[None, :]


def t_statistic(mean: np.ndarray, mean_of_squares: np.ndarray, s: int) -> np.ndarray:
    """One-sample t of ``s`` values from their mean and mean of squares (any matching shapes); 0 where the values do
    not vary (sd = 0 and mean = 0), +-inf where they all equal a non-zero mean."""
    variance = np.maximum(mean_of_squares - mean**2, 0.0) * s / (s - 1)  # unbiased sample variance
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(variance / s)
    return np.where(np.isnan(t), 0.0, t)


def bootstrap_weights(s: int, n_boot: int, seed: int) -> np.ndarray:
    """(B, s) times each of ``s`` subjects is drawn in each of ``n_boot`` resamples with replacement."""
    if s < 2:
        raise ValueError(f"bootstrap needs subjects >= 2, got {s}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, s))
    np.add.at(weights, (np.repeat(np.arange(n_boot), s), rng.integers(0, s, size=n_boot * s)), 1.0)
    return weights


def bootstrap_means(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Means over resampled subjects: (s, r) -> (B, r) (subjects drawn with replacement, B = ``n_boot``)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"bootstrap needs values (subjects >= 2, r), got shape {values.shape}")
    return bootstrap_weights(len(values), n_boot, seed) @ values / len(values)  # (B, r)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Descending ranks (1 = largest) along the last axis, ties broken by position: (..., r) -> (..., r)."""
    return np.argsort(np.argsort(-values, axis=-1, kind="stable"), axis=-1, kind="stable") + 1


def bootstrap_intervals(values: np.ndarray, n_boot: int, level: float, seed: int, by: RankStatistic = "null_corrected"
               ) -> np.ndarray:
    """``level`` percentile intervals of the bootstrap means of (s, r) values and of their descending ranks by mean
    (``by="null_corrected"``) or t (``by="t"``) -> (4, r): mean low, mean high, rank low, rank high; NaN with fewer
    than 2 subjects (no interval from one scan)."""
    s = len(values)
    if s < 2:
        return np.full((4, values.shape[1]), np.nan)
    weights = bootstrap_weights(s, n_boot, seed)  # (B, s)
    boot = weights @ values / s  # (B, r)
    tail = 100 * (1 - level) / 2
    return np.concatenate([np.percentile(boot, [tail, 100 - tail], axis=0),
                           rank_intervals(boot if by == "null_corrected"
                                          else t_statistic(boot, weights @ values**2 / s, s), level)])


def rank_intervals(boot: np.ndarray, level: float) -> np.ndarray:
    """``level`` percentile intervals of the descending ranks of (B, r) bootstrap statistics -> (2, r): low, high."""
    ranks = _ranks(boot)  # (B, r)
    tail = 100 * (1 - level) / 2
    return np.stack([np.floor(np.percentile(ranks, tail, axis=0)), np.ceil(np.percentile(ranks, 100 - tail, axis=0))])


def hemisphere(name: str) -> tuple[str, str]:
    side, _, rest = name.partition("-")
    return ({"L": "left", "R": "right", "B": "both"}[side], rest) if side in ("L", "R", "B") and rest else ("", name)


def region_columns(names: Sequence[str]) -> dict[str, list[str]]:
    """The naming columns of a region table: region, structure, hemisphere ("L-putamen" -> putamen, left)."""
    sides = [hemisphere(str(n)) for n in names]
    return {"region": [str(n) for n in names], "structure": [s[1] for s in sides], "hemisphere": [s[0] for s in sides]}


def rank_regions(contrib: RegionContributions, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                 by: RankStatistic = "null_corrected") -> pd.DataFrame:
    """Tidy ranking of the regions on the grid, by decreasing ``by``: the null-corrected contribution or its t.

    Columns: rank, region, structure, hemisphere, contribution, ci_low, ci_high, null_corrected, null_ci_low,
    null_ci_high, t, rank_low, rank_high, own, shell, n_voxels (region), n_attributed (region or band), method.
    Years (t unitless); means over subjects; intervals are ``level`` bootstrap percentile intervals (NaN from a
    single subject); ranks and rank intervals follow ``by``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if by not in RANK_STATISTICS:
        raise ValueError(f"ranking statistic {by!r}; expected one of {RANK_STATISTICS}")
    keep = ~np.all(np.isnan(contrib.values), axis=0)  # regions on the grid
    values = contrib.values[:, keep]
    corrected = null_corrected(values, contrib.sizes[keep], contrib.null_values, contrib.null_sizes)
    raw = bootstrap_intervals(values, n_boot, level, seed)  # (4, r')
    null = bootstrap_intervals(corrected, n_boot, level, seed, by)  # same resamples (same seed): paired intervals
    s = len(corrected)  # (r',) t of the null-corrected values; NaN from a single subject
    t = t_statistic(corrected.mean(axis=0), (corrected**2).mean(axis=0), s) if s > 1 else np.full(len(raw[0]), np.nan)
    frame = pd.DataFrame({
        **region_columns(np.asarray(contrib.regions.names)[keep]),
        "contribution": values.mean(axis=0),
        "ci_low": raw[0],
        "ci_high": raw[1],
        "null_corrected": corrected.mean(axis=0),
        "null_ci_low": null[0],
        "null_ci_high": null[1],
        "t": t,
        "rank_low": null[2],
        "rank_high": null[3],
        "own": np.nanmean(contrib.own[:, keep], axis=0),
        "shell": np.nanmean(contrib.shell[:, keep], axis=0),
        "n_voxels": contrib.region_voxels[keep].astype(int),
        "n_attributed": contrib.sizes[keep].astype(int),
        "method": contrib.method,
    })
    frame = frame.sort_values(by, ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame


def interval_table(values: np.ndarray, names: Sequence[str], n_boot: int = 2000, level: float = 0.95, seed: int = 0
                   ) -> pd.DataFrame:
    """Mean and bootstrap interval of named per-subject values (s, q): columns name, contribution, ci_low, ci_high,
    share_positive (fraction of subjects above 0), covers_zero."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"values (subjects, {len(names)}) expected, got {values.shape}")
    low, high = bootstrap_intervals(values, n_boot, level, seed)[:2]
    return pd.DataFrame({"name": list(names), "contribution": values.mean(axis=0), "ci_low": low, "ci_high": high,
                         "share_positive": (values > 0).mean(axis=0), "covers_zero": (low <= 0) & (high >= 0)})

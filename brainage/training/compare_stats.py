"""Paired statistics of the cross-validated comparison (pipelines/compare.sh): pure functions on per-subject errors.

Every model predicts every subject exactly once (outer k-fold), so the absolute errors of two models are paired by
subject. Our choices, as a reviewer of an MoE paper would ask for them:
- MAE with a subject-bootstrap 95% CI (percentile method, Efron & Tibshirani 1993);
- ΔMAE = mean(|e_a| - |e_b|) over subjects (negative: model a is better), with a subject-bootstrap 95% CI that
  resamples subjects, keeping each subject's pair together; relative ΔMAE = ΔMAE / MAE_b;
- the two-sided Wilcoxon signed-rank test of the paired differences (Wilcoxon 1945; scipy's default zero handling);
- the sign of ΔMAE in every outer fold, so that one lucky fold cannot carry the mean unseen.
The bootstrap is seeded, so the same errors give the same CI.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import wilcoxon

__all__ = ["bootstrap_mean_ci", "mae_with_ci", "paired_delta"]


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) subject indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 10000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper): the mean of `values` and its percentile-bootstrap CI over the entries."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"expected a non-empty 1-D array of finite values; found shape {values.shape} with "
                         f"{int((~np.isfinite(values)).sum()) if values.size else 0} non-finite entries")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot={n_boot} must be >= 1 and level={level} in (0, 1)")
    means = values[_bootstrap_indices(values.size, n_boot, seed)].mean(axis=1)  # (n_boot,)
    tail = (1 - level) / 2
    return float(values.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def mae_with_ci(abs_errors: np.ndarray, n_boot: int = 10000, seed: int = 0) -> dict:
    """{"mae", "ci_low", "ci_high", "n"} of per-subject absolute errors."""
    mae, low, high = bootstrap_mean_ci(abs_errors, n_boot, seed)
    return {"mae": mae, "ci_low": low, "ci_high": high, "n": int(np.asarray(abs_errors).size)}


def paired_delta(abs_a: np.ndarray, abs_b: np.ndarray, folds: np.ndarray | None = None, n_boot: int = 10000,
                 seed: int = 0) -> dict:
    """Paired comparison of two models' per-subject absolute errors (same subjects, same order).

    Returns {"delta_mae", "ci_low", "ci_high", "relative" (ΔMAE / MAE_b), "wilcoxon_p", "n", "a_better" (subjects
    with |e_a| < |e_b|), "fold_delta" ({fold: ΔMAE}), "fold_signs" ("-" a better, "+" b better, "0" tie, in fold
    order)}. The Wilcoxon p is 1.0 when every difference is zero (no evidence of a difference).
    """
    abs_a, abs_b = np.asarray(abs_a, dtype=float), np.asarray(abs_b, dtype=float)
    if abs_a.shape != abs_b.shape or abs_a.ndim != 1:
        raise ValueError(f"paired errors need two 1-D arrays of the same length; found {abs_a.shape} and "
                         f"{abs_b.shape}")
    if (abs_a < 0).any() or (abs_b < 0).any():
        raise ValueError("expected absolute errors (>= 0); found negative values")
    diff = abs_a - abs_b  # (n,) per-subject paired difference
    delta, low, high = bootstrap_mean_ci(diff, n_boot, seed)
    p = 1.0 if not diff.any() else float(wilcoxon(diff).pvalue)
    mae_b = float(abs_b.mean())
    result = {"delta_mae": delta, "ci_low": low, "ci_high": high,
              "relative": delta / mae_b if mae_b > 0 else math.nan, "wilcoxon_p": p, "n": int(diff.size),
              "a_better": int((diff < 0).sum())}
    if folds is not None:
        folds = np.asarray(folds)
        if folds.shape != diff.shape:
            raise ValueError(f"folds has shape {folds.shape}; expected one fold per subject, {diff.shape}")
        fold_delta = {int(f): float(diff[folds == f].mean()) for f in sorted(set(folds.tolist()))}
        result["fold_delta"] = fold_delta
        result["fold_signs"] = "".join("-" if d < 0 else "+" if d > 0 else "0" for d in fold_delta.values())
    return result

"""Null-corrected region statistic and bootstrap intervals on toys whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainage.attribution.mapping import RegionIndex
from brainage.attribution.ranking import (
    RegionContributions,
    bootstrap_means,
    interval_table,
    null_corrected,
    null_rate,
    rank_regions,
    t_statistic,
)


def _contributions(seed: int = 0, subjects: int = 40) -> tuple[RegionContributions, np.ndarray]:
    """Regions whose contribution = a true regional effect + a per-subject rate x size (the normalisation shift)."""
    rng = np.random.default_rng(seed)
    sizes = np.array([50.0, 400.0, 100.0, 800.0, 200.0])
    truth = np.array([1.0, 0.0, -0.5, 0.0, 0.3])  # years
    rate = rng.normal(0.004, 0.001, size=subjects)  # years per voxel, differs between subjects
    values = truth + rate[:, None] * sizes + rng.normal(0, 0.2, size=(subjects, 5))
    null_sizes = rng.uniform(50, 800, size=12)
    null_values = rate[:, None] * null_sizes + rng.normal(0, 0.02, size=(subjects, 12))
    null_values[:, 0] += 5.0  # one null set lands on an age-related region: the median must ignore it
    index = RegionIndex((1, 2, 3, 4, 5), ("L-a", "R-a", "L-b", "R-b", "B-c"))
    contrib = RegionContributions("occlusion", index, values, values, np.zeros_like(values), sizes, sizes,
                                  null_values, null_sizes, np.zeros(12, dtype=int), "toy", 0.1)
    return contrib, truth


def test_null_correction_recovers_the_regional_effect():
    contrib, truth = _contributions()
    corrected = null_corrected(contrib.values, contrib.sizes, contrib.null_values, contrib.null_sizes)
    np.testing.assert_allclose(corrected.mean(axis=0), truth, atol=0.1)
    raw_order = np.argsort(-contrib.values.mean(axis=0))
    assert raw_order[0] == 3  # the largest region wins before correction (size, not effect)
    table = rank_regions(contrib, n_boot=500)
    assert table["region"].tolist()[:2] == ["L-a", "B-c"] and table["region"].iloc[-1] == "L-b"
    assert (table["null_corrected"].iloc[-1] < 0) and (table["null_ci_high"].iloc[-1] < 0)  # negative kept
    assert table.loc[table["region"] == "L-a", "rank_high"].item() == 1
    assert set(table.columns) >= {"rank", "region", "hemisphere", "contribution", "ci_low", "ci_high", "rank_low",
                                  "rank_high", "null_corrected", "n_voxels", "method"}
    assert table.loc[table["region"] == "B-c", "hemisphere"].item() == "both"


def test_null_rate_is_robust_and_checks_shapes():
    assert null_rate(np.array([[1.0, 2.0, 300.0]]), np.array([100.0, 200.0, 300.0]))[0] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="must match"):
        null_rate(np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match="non-empty"):
        null_rate(np.ones((2, 2)), np.array([1.0, 0.0]))


def test_bootstrap_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered, trials = 0, 300
    for t in range(trials):
        values = rng.exponential(1.0, size=(40, 1)) - 1.0 + 0.3  # skewed, true mean 0.3
        table = interval_table(values, ["x"], n_boot=400, seed=t)
        covered += bool(table["ci_low"].item() <= 0.3 <= table["ci_high"].item())
    assert 0.88 <= covered / trials <= 0.99, covered / trials  # percentile bootstrap, n = 40: slightly liberal


def test_rank_intervals_widen_with_noise():
    contrib, _ = _contributions(subjects=40)
    quiet = rank_regions(contrib, n_boot=300)
    noisy = contrib
    noisy.values = noisy.values + np.random.default_rng(3).normal(0, 3.0, size=noisy.values.shape)
    loud = rank_regions(noisy, n_boot=300)
    width = lambda t: (t["rank_high"] - t["rank_low"]).sum()
    assert width(loud) > width(quiet)


def test_bootstrap_means_shape_and_errors():
    boot = bootstrap_means(np.arange(10.0).reshape(5, 2), n_boot=7, seed=1)
    assert boot.shape == (7, 2) and np.all((boot >= 0) & (boot <= 9))
    with pytest.raises(ValueError, match="subjects >= 2"):
        bootstrap_means(np.ones((1, 3)))
    assert isinstance(interval_table(np.ones((3, 1)), ["a"]), pd.DataFrame)


def test_one_subject_gives_values_without_intervals():
    contrib, _ = _contributions(subjects=1)
    table = rank_regions(contrib, n_boot=50)
    assert table["contribution"].notna().all() and table[["ci_low", "ci_high", "rank_low", "rank_high"]].isna().all(
        axis=None)
    named = interval_table(contrib.values, list("abcde"), n_boot=50)
    assert named[["ci_low", "ci_high"]].isna().all(axis=None) and not named["covers_zero"].any()


def test_t_statistic_matches_scipy_and_handles_constant_values():
    from scipy.stats import ttest_1samp

    values = np.random.default_rng(5).normal(0.2, 1.0, size=(12, 4))
    np.testing.assert_allclose(t_statistic(values.mean(0), (values**2).mean(0), 12),
                               ttest_1samp(values, 0.0).statistic, rtol=1e-9)
    assert t_statistic(np.array([0.0, 2.0]), np.array([0.0, 4.0]), 5).tolist() == [0.0, np.inf]


def test_ranking_by_t_puts_a_consistent_small_effect_above_a_large_erratic_one():
    rng = np.random.default_rng(11)
    contrib, _ = _contributions(subjects=30)
    shift = null_rate(contrib.null_values, contrib.null_sizes)[:, None] * contrib.sizes  # (s, r) normalisation
    contrib.values[:, 2] = 0.3 + rng.normal(0, 0.05, size=30) + shift[:, 2]  # L-b: small, in every subject
    contrib.values[:, 4] = rng.choice([0.0, 3.0], size=30, p=[0.8, 0.2]) + shift[:, 4]  # B-c: large in a fifth
    corrected = null_corrected(contrib.values, contrib.sizes, contrib.null_values, contrib.null_sizes)
    assert corrected[:, 4].mean() > corrected[:, 2].mean()
    by_mean, by_t = rank_regions(contrib, n_boot=200), rank_regions(contrib, n_boot=200, by="t")
    order = lambda t: t["region"].tolist()
    assert order(by_mean).index("B-c") < order(by_mean).index("L-b")
    assert order(by_t).index("L-b") < order(by_t).index("B-c")
    assert by_t["t"].is_monotonic_decreasing and by_t["rank"].tolist() == [1, 2, 3, 4, 5]
    # rank intervals follow t: a plain loop over the same resamples (same seed) gives the same interval
    rng_boot = np.random.default_rng(0)
    draws = rng_boot.integers(0, 30, size=200 * 30).reshape(200, 30)
    ranks = []
    for rows in draws:
        sample = corrected[rows]
        with np.errstate(invalid="ignore"):  # a resample of B-c's zeros only: 0 / 0, which t_statistic calls 0
            t = np.nan_to_num(sample.mean(0) / (sample.std(0, ddof=1) / np.sqrt(30)), nan=0.0)
        ranks.append(np.argsort(np.argsort(-t, kind="stable"), kind="stable") + 1)
    ranks = np.array(ranks)
    low, high = np.floor(np.percentile(ranks, 2.5, axis=0)), np.ceil(np.percentile(ranks, 97.5, axis=0))
    names = list(contrib.regions.names)
    for _, row in by_t.iterrows():
        i = names.index(row["region"])
        assert (row["rank_low"], row["rank_high"]) == (low[i], high[i])
    with pytest.raises(ValueError, match="ranking statistic"):
        rank_regions(contrib, by="median")

"""Paired statistics of the comparison on hand-made errors (no training)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from brainage.training.compare_stats import bootstrap_mean_ci, mae_with_ci, paired_delta


def test_bootstrap_ci_of_a_constant_is_the_constant_and_is_seeded():
    assert bootstrap_mean_ci(np.full(7, 2.5), n_boot=200) == (2.5, 2.5, 2.5)
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    assert bootstrap_mean_ci(values, seed=3) == bootstrap_mean_ci(values, seed=3)
    mean, low, high = bootstrap_mean_ci(values, n_boot=5000)
    assert mean == 4.0 and 1.0 <= low < 4.0 < high <= 10.0


def test_bootstrap_ci_matches_the_normal_interval_on_a_large_sample():
    values = np.random.default_rng(0).normal(5.0, 2.0, size=400)
    mean, low, high = bootstrap_mean_ci(values, n_boot=4000)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)  # 0.196
    assert abs((high - low) / 2 - half_width) < 0.15 * half_width
    assert abs((high + low) / 2 - mean) < 0.2 * half_width


def test_mae_with_ci():
    out = mae_with_ci(np.array([1.0, 2.0, 3.0, 6.0]), n_boot=2000)
    assert out["mae"] == 3.0 and out["n"] == 4 and out["ci_low"] < 3.0 < out["ci_high"]


def test_paired_delta_by_hand():
    out = paired_delta(np.array([1.0, 1.0, 1.0, 1.0]), np.array([2.0, 2.0, 2.0, 2.0]), n_boot=100)
    assert out["delta_mae"] == -1.0 and (out["ci_low"], out["ci_high"]) == (-1.0, -1.0)
    assert out["relative"] == -0.5 and out["a_better"] == 4 and out["n"] == 4
    assert out["wilcoxon_p"] == pytest.approx(2 / 16)  # exact: all 4 signs negative, two-sided, 2 of 2^4 outcomes


def test_paired_delta_fold_signs_and_no_difference():
    a, b = np.array([1.0, 1.0, 3.0, 3.0, 2.0, 2.0]), np.full(6, 2.0)
    out = paired_delta(a, b, folds=np.array([0, 0, 1, 1, 2, 2]), n_boot=100)
    assert out["fold_delta"] == {0: -1.0, 1: 1.0, 2: 0.0} and out["fold_signs"] == "-+0"
    assert out["delta_mae"] == 0.0
    same = paired_delta(b, b, n_boot=10)
    assert same["wilcoxon_p"] == 1.0 and same["delta_mae"] == 0.0 and same["a_better"] == 0


def test_wilcoxon_p_matches_exact_enumeration():
    diff = np.array([0.3, -1.1, 0.7, 2.2, -0.4, 1.5, 0.9, -2.9, 1.2, 0.6])  # no ties, no zeros
    ranks = np.argsort(np.argsort(np.abs(diff))) + 1
    observed = ranks[diff > 0].sum()
    expected = ranks.sum() / 2
    # reference: every one of the 2^10 sign assignments is equally likely under H0
    stats = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=10)])
    p_exact = np.mean(np.abs(stats - expected) >= abs(observed - expected))
    b = np.full(10, 3.0)
    out = paired_delta(b + diff, b, n_boot=10)
    assert out["wilcoxon_p"] == pytest.approx(p_exact, rel=1e-9)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_mean_ci(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="same length"):
        paired_delta(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="absolute errors"):
        paired_delta(np.array([-1.0, 1.0]), np.ones(2))
    with pytest.raises(ValueError, match="one fold per subject"):
        paired_delta(np.ones(3), np.ones(3), folds=np.array([0, 1]))

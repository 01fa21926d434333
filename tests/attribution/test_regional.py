"""Regional age models: held-out errors match a scikit-learn pipeline on the same folds, an ageing region ranks first
with an interval above 0, a noise region's interval covers 0, and bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brainage.attribution.mapping import RegionIndex
from brainage.attribution.regional import ALPHAS, _folds, fit_regional_models, rank_regional

INDEX = RegionIndex.from_names({1: "L-ageing", 2: "R-noise", 3: "L-weak", 4: "R-absent"})


def _cohort(s: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelled voxels (s, n), ages, their region rows (n,)) of scans (s, 6, 6, 6): rows 0 and 2 carry age
    (strongly, weakly), row 1 noise, row 3 absent."""
    rng = np.random.default_rng(seed)
    ages = rng.uniform(20, 80, s)
    regions = np.full((6, 6, 6), -1)
    regions[:2], regions[2:4], regions[4:, :3] = 0, 1, 2
    images = rng.normal(size=(s, 6, 6, 6)).astype(np.float32)
    images[:, regions == 0] += (ages[:, None] - 50) / 10
    images[:, regions == 2] += (ages[:, None] - 50) / 60
    return images[:, regions >= 0], ages, regions[regions >= 0]


def test_errors_match_a_scikit_learn_pipeline_on_the_same_folds():
    images, ages, regions = _cohort()
    images = images.astype(np.float16)  # as the report keeps them
    models = fit_regional_models(images, ages, regions, INDEX, folds=4, seed=3)
    fold = _folds(len(ages), 4, 3)
    split = PredefinedSplit(fold)
    for row in (0, 1, 2):
        reference = cross_val_predict(make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)),
                                      images[:, regions == row].astype(np.float64), ages, cv=split)
        np.testing.assert_allclose(models.errors[:, row], np.abs(reference - ages), rtol=1e-4, atol=1e-4)
    medians = {k: np.median(ages[fold != k]) for k in range(4)}
    np.testing.assert_allclose(models.baseline_errors, [abs(a - medians[k]) for a, k in zip(ages, fold)])
    assert np.all(np.isnan(models.errors[:, 3])) and models.voxels.tolist() == [72, 72, 36, 0]
    assert sorted(np.bincount(fold).tolist()) == [20, 20, 20, 20]


def test_ageing_region_ranks_first_and_noise_covers_zero():
    images, ages, regions = _cohort()
    table = rank_regional(fit_regional_models(images, ages, regions, INDEX), n_boot=500)
    assert list(table["region"]) == ["L-ageing", "L-weak", "R-noise"]  # the absent region is left out
    assert list(table["rank"]) == [1, 2, 3] and list(table["hemisphere"]) == ["left", "left", "right"]
    first, noise = table.iloc[0], table.set_index("region").loc["R-noise"]
    assert first.ci_low > 5 and first.rank_low == first.rank_high == 1  # tells most of the age, surely first
    assert noise.ci_low < 0 and noise.gain < 1.0  # no better than the median age
    assert np.all((table.ci_low <= table.gain) & (table.gain <= table.ci_high))


def test_bad_input_is_refused():
    images, ages, regions = _cohort(s=30)
    with pytest.raises(ValueError, match="every age known"):
        fit_regional_models(images, np.where(np.arange(30) == 4, np.nan, ages), regions, INDEX)
    with pytest.raises(ValueError, match="at least 20 scans"):
        fit_regional_models(images[:12], ages[:12], regions, INDEX)
    with pytest.raises(ValueError, match="expected voxels"):
        fit_regional_models(images, ages, regions[:5], INDEX)
    with pytest.raises(ValueError, match="folds=1"):
        fit_regional_models(images, ages, regions, INDEX, folds=1)

"""BrainAgeMetrics against numpy/scipy references: overall, per site, bias-corrected, DDP-padding duplicates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from brainage.contracts.bias import apply_bias_correction, fit_bias_correction
from brainage.training.metrics import BrainAgeMetrics, brain_age_metrics, site_key


def _reference(pred: np.ndarray, age: np.ndarray) -> dict[str, float]:
    gap = pred - age
    return {"mae": np.abs(gap).mean(), "rmse": np.sqrt((gap ** 2).mean()), "r": stats.pearsonr(pred, age)[0],
            "r2": 1 - (gap ** 2).sum() / ((age - age.mean()) ** 2).sum(), "bag_mean": gap.mean(),
            "r_bag_age": stats.pearsonr(gap, age)[0]}


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 80, 40)
    pred = 0.7 * age + 15 + rng.normal(0, 4, 40)  # regression to the mean, as brain-age models show
    sites = np.array(["site-A", "site-B", "Guys"])[rng.integers(0, 3, 40)]
    return pred, age, sites


def test_metrics_match_reference_overall_and_per_site(sample):
    pred, age, sites = sample
    metric = BrainAgeMetrics(sites=sorted(set(sites)))
    for chunk in np.array_split(np.arange(40), 7):  # batches of uneven size
        metric.update(torch.tensor(pred[chunk]), torch.tensor(age[chunk]), list(sites[chunk]))
    out = metric.compute()
    assert out["n"] == 40
    for name, value in _reference(pred, age).items():
        assert out[name] == pytest.approx(value, rel=1e-9), name
    for site in ("site-A", "site-B", "Guys"):
        mask = sites == site
        for name, value in _reference(pred[mask], age[mask]).items():
            assert out[f"{site_key(site)}/{name}"] == pytest.approx(value, rel=1e-9), (site, name)
    assert "site-Guys/mae" in out and not any(k.startswith("corrected/") for k in out)


def test_corrected_metrics_remove_the_age_bias_on_the_fit_set(sample):
    pred, age, _ = sample
    correction = fit_bias_correction(age, pred, fit_on="test sample")
    metric = BrainAgeMetrics()
    metric.update(torch.tensor(pred), torch.tensor(age))
    metric.correction = correction
    out = metric.compute()
    corrected = apply_bias_correction(pred, correction)
    assert out["corrected/mae"] == pytest.approx(np.abs(corrected - age).mean(), rel=1e-9)
    # the OLS line passes through the means: corrected mean BAG is 0 on the fit set
    assert abs(out["corrected/bag_mean"]) < 1e-9
    assert out["r_bag_age"] < -0.5  # uncorrected: the usual negative bias
    assert out["corrected/r_bag_age"] > out["r_bag_age"]


def test_deduplicate_drops_padding_repeats_only(sample):
    pred, age, _ = sample
    keys = torch.arange(40)
    metric = BrainAgeMetrics(deduplicate=True)
    metric.update(torch.tensor(pred), torch.tensor(age), keys=keys)
    metric.update(torch.tensor(pred[:3]), torch.tensor(age[:3]), keys=keys[:3])  # what DistributedSampler pads
    out = metric.compute()
    assert out["n"] == 40 and out["mae"] == pytest.approx(np.abs(pred - age).mean(), rel=1e-12)
    plain = BrainAgeMetrics()
    plain.update(torch.tensor(pred), torch.tensor(age), keys=keys)
    plain.update(torch.tensor(pred[:3]), torch.tensor(age[:3]), keys=keys[:3])
    assert plain.compute()["n"] == 43


def test_undefined_metrics_are_nan_not_errors():
    out = brain_age_metrics(torch.tensor([50.0], dtype=torch.float64), torch.tensor([40.0], dtype=torch.float64))
    assert out["mae"] == 10.0 and np.isnan(out["r"]) and np.isnan(out["r2"])


def test_bias_fit_rejects_flat_predictions():
    age = np.linspace(20, 80, 10)
    with pytest.raises(ValueError, match="min_slope"):
        fit_bias_correction(age, np.full(10, 50.0) + 0.001 * age, fit_on="x")
    assert fit_bias_correction(age, 50 + 0.01 * age, fit_on="x", min_slope=0.001)["slope"] == pytest.approx(0.01)

"""Brain-age metrics as the field reports them (de Lange & Cole 2020; Butler et al. 2021, PMC8357007).

For predictions p and chronological ages y, with the brain-age gap BAG = p - y:
MAE = mean|BAG|, RMSE = sqrt(mean BAG^2), Pearson r(p, y), R^2 = 1 - SS_res/SS_tot (coefficient of determination
of p as a prediction of y), mean BAG, and r(BAG, age) (the regression-to-the-mean bias; ~0 after correction).
Every metric is reported uncorrected and, when a bias correction is given, after `(p - intercept)/slope`
(`<stage>/corrected/<metric>`; corrected R^2 is inflated, Butler 2021), overall and per site (`<stage>/site-A/mae`).

`BrainAgeMetrics` is a torchmetrics `Metric` whose states are the per-sample predictions, ages, site codes and
sample keys (`dist_reduce_fx="cat"`), so under DDP every metric is computed from all samples of all ranks. Lightning's
DistributedSampler pads a split to a multiple of the world size by repeating samples; with `deduplicate` the
repeats (same sample key, age and prediction) are dropped before computing, so the numbers equal a single-process
evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics import Metric

from brainage.contracts.bias import apply_bias_correction

__all__ = ["METRIC_NAMES", "BrainAgeMetrics", "brain_age_metrics", "site_key"]

METRIC_NAMES = ("mae", "rmse", "r", "r2", "bag_mean", "r_bag_age")


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else math.nan


def brain_age_metrics(predicted: torch.Tensor, age: torch.Tensor) -> dict[str, float]:
    """The six field metrics of one set of predictions (years), both (n,) float64; NaN where undefined (n < 2)."""
    gap = predicted - age  # (n,) brain-age gap
    n = age.numel()
    if n == 0:
        return {name: math.nan for name in METRIC_NAMES}
    ss_tot = float(((age - age.mean()) ** 2).sum())
    return {
        "mae": float(gap.abs().mean()),
        "rmse": float((gap ** 2).mean().sqrt()),
        "r": _pearson(predicted, age) if n > 1 else math.nan,
        "r2": 1.0 - float((gap ** 2).sum()) / ss_tot if ss_tot > 0 else math.nan,
        "bag_mean": float(gap.mean()),
        "r_bag_age": _pearson(gap, age) if n > 1 else math.nan,
    }


def site_key(site: str) -> str:
    """Metric-name segment of a site: "site-A" stays, "Guys" becomes "site-Guys"."""
    return site if site.startswith("site-") else f"site-{site}"


class BrainAgeMetrics(Metric):
    """Accumulate (prediction, age, site, sample key) over a stage; `compute()` returns a flat dict of metrics.

    Args:
        sites: the site names of the dataset (same list on every rank); batches give their sites as strings.
        deduplicate: drop samples repeated by a padding DistributedSampler (set when world_size > 1).
    """

    full_state_update = False

    def __init__(self, sites: Sequence[str] = (), deduplicate: bool = False) -> None:
        super().__init__()
        self.sites = sorted({s for s in sites if s})
        self._site_code = {s: i for i, s in enumerate(self.sites)}
        self.deduplicate = deduplicate
        self.correction: dict | None = None
        for name in ("predicted", "age", "site", "key"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, predicted: torch.Tensor, age: torch.Tensor, sites: Sequence[str] = (),
               keys: torch.Tensor | None = None) -> None:
        """predicted, age: (b,) years; sites: b strings ("" = unknown); keys: (b,) int64 sample ids or None."""
        b = age.shape[0]
        codes = [self._site_code.get(s, -1) for s in sites] if len(sites) else [-1] * b
        self.predicted.append(predicted.detach().double().reshape(b))
        self.age.append(age.detach().double().reshape(b))
        self.site.append(torch.tensor(codes, dtype=torch.long, device=age.device))
        self.key.append(torch.full((b,), -1, dtype=torch.long, device=age.device) if keys is None else keys.long())

    def _samples(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def cat(state: list | torch.Tensor) -> torch.Tensor:
            return torch.cat(state) if isinstance(state, list) else state  # list before sync, tensor after

        if isinstance(self.age, list) and not self.age:
            empty = torch.zeros(0, dtype=torch.float64)
            return empty, empty, torch.zeros(0, dtype=torch.long)
        predicted, age, site, key = (cat(s).cpu() for s in (self.predicted, self.age, self.site, self.key))
        if self.deduplicate:
            rows = torch.stack([key.double(), age, predicted, site.double()], dim=1)  # (n, 4)
            _, first = _unique_rows(rows)
            predicted, age, site = predicted[first], age[first], site[first]
        return predicted, age, site

    def compute(self) -> dict[str, float]:
        predicted, age, site = self._samples()
        groups: dict[str, torch.Tensor] = {"": torch.ones_like(age, dtype=torch.bool)}
        if len(self.sites) > 1:  # one site = the overall numbers again
            groups.update({f"{site_key(s)}/": site == i for i, s in enumerate(self.sites)})
        out: dict[str, float] = {"n": float(age.numel())}
        for prefix, mask in groups.items():
            if not bool(mask.any()):
                continue
            out.update({f"{prefix}{k}": v for k, v in brain_age_metrics(predicted[mask], age[mask]).items()})
            if self.correction:
                corrected = torch.as_tensor(apply_bias_correction(predicted[mask].numpy(), self.correction))
                out.update({f"{prefix}corrected/{k}": v
                            for k, v in brain_age_metrics(corrected, age[mask]).items()})
        return out


def _unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique rows of (n, c) and the index of each one's first occurrence, in original order."""
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((unique.shape[0],), rows.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(rows.shape[0]), reduce="amin")
    return unique, first.sort().values

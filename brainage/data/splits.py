"""Subject-level train/val/test splits, stratified by age bin (and site when known), reproducible by seed.

All sessions of one subject always land in the same split, so no subject leaks between training and evaluation.
Variants: stratified k-fold cross-validation over the non-test subjects (fold k is the validation split, the test
split stays fixed across folds); outer k-fold cross-validation (`test_fold`: fold k is the test split, so over the k
folds every subject is tested exactly once, and the validation split is drawn from the other folds only); and
leave-site-out (one site is the test split, as in site-generalisation studies
such as OpenBHB's internal/external test split, Dufumier et al. 2022).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["split_subjects"]


def split_subjects(table: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
                   age_bins: int = 5, fold: int | None = None, num_folds: int = 5,
                   leave_site_out: str | None = None, test_fold: int | None = None) -> pd.Series:
    """Return a Series aligned with `table` whose values are "train", "val" or "test".

    Subjects are grouped into strata (age quantile bin x site) and shuffled within them with `seed`; the splits are
    taken at evenly spaced positions of that order, so each gets its share of every stratum.

    Args:
        fold: when set, the non-test subjects are dealt round-robin along that order into `num_folds` folds
            (stratified, sizes differ by at most one) and fold `fold` is "val"; `val_fraction` is then unused.
        leave_site_out: every subject with a scan at this site is "test" (`test_fraction` is then unused).
        test_fold: when set, all subjects are dealt round-robin along that order into `num_folds` folds and fold
            `test_fold` is "test" (`test_fraction` is then unused); "val" is `val_fraction` of the OTHER subjects,
            evenly spread along the order. Excludes `fold` and `leave_site_out`.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be in [0, 1) and "
                         "their sum below 1")
    for name, value in (("fold", fold), ("test_fold", test_fold)):
        if value is not None and not (num_folds >= 2 and 0 <= value < num_folds):
            raise ValueError(f"{name}={value}, num_folds={num_folds}: expected num_folds >= 2 and "
                             f"0 <= {name} < num_folds")
    if test_fold is not None and (fold is not None or leave_site_out is not None):
        raise ValueError(f"test_fold={test_fold} chooses the test split; it cannot be combined with fold={fold} or "
                         f"leave_site_out={leave_site_out!r}")
    subjects = table.groupby("subject_id", sort=True).agg(age=("age", "mean"), site=("site", "first"))
    ages = subjects["age"].fillna(subjects["age"].median() if subjects["age"].notna().any() else 0.0)
    bins = pd.qcut(ages.rank(method="first"), q=min(age_bins, max(len(subjects), 1)), labels=False)
    strata = bins.astype(str) + "|" + subjects["site"].fillna("").astype(str)
    rng = np.random.default_rng(seed)
    # order subjects by stratum (shuffled within), then deal the splits out at evenly spaced positions of that
    # order (systematic sampling): every split samples every stratum, and the totals are exact
    order = sorted(subjects.index, key=lambda sid: (strata[sid], rng.random()))
    n = len(order)
    labels = np.array(["train"] * n, dtype=object)
    if test_fold is not None:
        labels[np.arange(n) % num_folds == test_fold] = "test"
    elif leave_site_out is None:
        labels[_spread(n, round(n * test_fraction))] = "test"
    else:
        sites = table["site"].fillna("").astype(str)
        held = set(table.loc[sites == str(leave_site_out), "subject_id"])
        if not held:
            raise ValueError(f"leave_site_out={leave_site_out!r}: no scans from that site; found sites "
                             f"{sorted(set(sites) - {''})}")
        if len(held) == n:
            raise ValueError(f"leave_site_out={leave_site_out!r}: every subject is from that site; nothing to train on")
        labels[[i for i, sid in enumerate(order) if sid in held]] = "test"
    rest = np.flatnonzero(labels == "train")
    if test_fold is not None:
        labels[rest[_spread(len(rest), round(len(rest) * val_fraction))]] = "val"
    elif fold is None:
        labels[rest[_spread(len(rest), round(n * val_fraction))]] = "val"
    else:
        labels[rest[np.arange(len(rest)) % num_folds == fold]] = "val"
    assignment = dict(zip(order, labels))
    return table["subject_id"].map(assignment).rename("split")


def _spread(n: int, k: int) -> np.ndarray:
    """k evenly spaced positions in range(n)."""
    return np.floor((np.arange(k) + 0.5) * n / max(k, 1)).astype(int)

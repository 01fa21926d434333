"""Subject-level train/val/test splits, stratified by age bin (and site when known), reproducible by seed.

All sessions of one subject always land in the same split, so no subject leaks between training and evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["split_subjects"]


def split_subjects(table: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
                   age_bins: int = 5) -> pd.Series:
    """Return a Series aligned with `table` whose values are "train", "val" or "test".

    Subjects are grouped into strata (age quantile bin x site) and shuffled within them with `seed`; the splits are
    taken at evenly spaced positions of that order, so each gets its share of every stratum.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be in [0, 1) and "
                         "their sum below 1")
    subjects = table.groupby("subject_id", sort=True).agg(age=("age", "mean"), site=("site", "first"))
    ages = subjects["age"].fillna(subjects["age"].median() if subjects["age"].notna().any() else 0.0)
    bins = pd.qcut(ages.rank(method="first"), q=min(age_bins, max(len(subjects), 1)), labels=False)
    strata = bins.astype(str) + "|" + subjects["site"].fillna("").astype(str)
    rng = np.random.default_rng(seed)
    # order subjects by stratum (shuffled within), then deal the splits out at evenly spaced positions of that
    # order (systematic sampling): every split samples every stratum, and the totals are exact
    order = sorted(subjects.index, key=lambda sid: (strata[sid], rng.random()))
    n = len(order)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    labels = np.array(["train"] * n, dtype=object)
    labels[_spread(n, n_test)] = "test"
    rest = np.flatnonzero(labels == "train")
    labels[rest[_spread(len(rest), n_val)]] = "val"
    assignment = dict(zip(order, labels))
    return table["subject_id"].map(assignment).rename("split")


def _spread(n: int, k: int) -> np.ndarray:
    """k evenly spaced positions in range(n)."""
    return np.floor((np.arange(k) + 0.5) * n / max(k, 1)).astype(int)

from __future__ import annotations

import numpy as np
import pandas as pd

from brainage.data.splits import split_subjects


def _table(n_subjects=60, sessions=2, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        age, site = float(rng.uniform(20, 85)), f"site-{s % 3}"
        rows += [{"subject_id": f"sub-{s:03d}", "session": f"ses-{k}", "path": f"{s}-{k}.nii.gz", "age": age + k,
                  "sex": "M", "site": site} for k in range(sessions)]
    return pd.DataFrame(rows)


def test_no_subject_in_two_splits_and_fractions():
    table = _table()
    split = split_subjects(table, 0.2, 0.2, seed=3)
    per_subject = table.assign(split=split).groupby("subject_id")["split"].nunique()
    assert (per_subject == 1).all()
    counts = table.assign(split=split).drop_duplicates("subject_id")["split"].value_counts()
    assert counts["val"] == 12 and counts["test"] == 12 and counts["train"] == 36


def test_reproducible_by_seed_and_seed_matters():
    table = _table()
    assert split_subjects(table, seed=1).equals(split_subjects(table, seed=1))
    assert not split_subjects(table, seed=1).equals(split_subjects(table, seed=2))


def test_stratified_by_age():
    table = _table(n_subjects=100, sessions=1)
    split = split_subjects(table, 0.2, 0.2, seed=0)
    medians = table.assign(split=split).groupby("split")["age"].median()
    assert (medians - table["age"].median()).abs().max() < 10


def test_tiny_cohort_still_gets_every_split():
    table = _table(n_subjects=4, sessions=1)
    split = split_subjects(table, 0.25, 0.25, seed=0)
    assert sorted(split) == ["test", "train", "train", "val"]

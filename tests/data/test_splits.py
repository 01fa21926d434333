from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


def test_k_fold_partitions_non_test_subjects_and_keeps_test_fixed():
    table = _table(n_subjects=53, sessions=2)
    splits = [split_subjects(table, 0.2, 0.2, seed=5, fold=k, num_folds=5) for k in range(5)]
    tests = [set(table.loc[s == "test", "subject_id"]) for s in splits]
    assert all(t == tests[0] for t in tests) and len(tests[0]) == round(53 * 0.2)
    vals = [set(table.loc[s == "val", "subject_id"]) for s in splits]
    assert set().union(*vals) == set(table["subject_id"]) - tests[0]  # every non-test subject validates once
    assert sum(len(v) for v in vals) == len(set().union(*vals))  # ... and only once
    assert max(len(v) for v in vals) - min(len(v) for v in vals) <= 1
    for split in splits:
        assert (table.assign(split=split).groupby("subject_id")["split"].nunique() == 1).all()
    ages = [table.loc[s == "val", "age"].median() for s in splits]
    assert max(ages) - min(ages) < 15  # stratified by age


def test_leave_site_out_is_the_test_split():
    table = _table(n_subjects=30, sessions=2)
    split = split_subjects(table, 0.2, 0.2, seed=0, leave_site_out="site-1")
    assert set(table.loc[split == "test", "site"]) == {"site-1"}
    assert "site-1" not in set(table.loc[split != "test", "site"])
    assert (table.assign(split=split).groupby("subject_id")["split"].nunique() == 1).all()
    combined = split_subjects(table, seed=0, leave_site_out="site-1", fold=2, num_folds=4)
    assert combined[split == "test"].eq("test").all() and (combined == "val").any()


def test_split_options_are_checked_naming_values():
    table = _table(n_subjects=10, sessions=1)
    with pytest.raises(ValueError, match="'site-9'.*site-0"):
        split_subjects(table, leave_site_out="site-9")
    with pytest.raises(ValueError, match="fold=5, num_folds=5"):
        split_subjects(table, fold=5, num_folds=5)


@pytest.mark.parametrize("num_folds", [3, 5])
def test_outer_folds_test_every_subject_once_and_validate_inside_the_training_part(num_folds):
    table = _table(n_subjects=47, sessions=2)
    splits = [split_subjects(table, val_fraction=0.2, seed=4, test_fold=k, num_folds=num_folds)
              for k in range(num_folds)]
    subjects = set(table["subject_id"])
    tests = [set(table.loc[s == "test", "subject_id"]) for s in splits]
    assert set().union(*tests) == subjects and sum(map(len, tests)) == len(subjects)  # tested exactly once
    assert max(map(len, tests)) - min(map(len, tests)) <= 1
    for split, test in zip(splits, tests):
        assert (table.assign(split=split).groupby("subject_id")["split"].nunique() == 1).all()  # one role each
        val = set(table.loc[split == "val", "subject_id"])
        train = set(table.loc[split == "train", "subject_id"])
        assert not (val & test) and not (train & test) and not (val & train)
        assert train | val | test == subjects and len(val) == round(0.2 * (len(subjects) - len(test)))
    ages = [table.loc[s == "test", "age"].median() for s in splits]
    assert max(ages) - min(ages) < 15  # stratified by age
    assert split_subjects(table, val_fraction=0.2, seed=4, test_fold=0, num_folds=num_folds).equals(splits[0])


def test_outer_fold_options_are_checked():
    table = _table(n_subjects=10, sessions=1)
    with pytest.raises(ValueError, match="test_fold=3, num_folds=3"):
        split_subjects(table, test_fold=3, num_folds=3)
    with pytest.raises(ValueError, match="cannot be combined"):
        split_subjects(table, test_fold=0, fold=1, num_folds=3)
    with pytest.raises(ValueError, match="cannot be combined"):
        split_subjects(table, test_fold=0, num_folds=3, leave_site_out="site-1")

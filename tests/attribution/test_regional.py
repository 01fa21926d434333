"""Regional age models: held-out errors match a scikit-learn pipeline on the same folds, an ageing region ranks first
with an interval above 0, a noise region's interval covers 0, interiors match a brute-force distance check and leave
a neighbour's spill-over out, size-matched gains put a thin strongly ageing region above a large weakly ageing one
(which outgains it on all its voxels) and equal the plain ones under a cap no region reaches, screened voxels match a
scikit-learn selection pipeline, find a sparse change that random draws dilute and choose nothing from the held-out
fold, and bad input is refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_selection import SelectKBest, f_regression
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brainage.attribution.contraction import age_t
from brainage.attribution.mapping import RegionIndex
from brainage.attribution.regional import (ALPHAS, BRIGHTENING_GAIN_SHARE, BRIGHTENING_MIN, CONTRACTION_MIN,
                                           DARKENING_MAX, GROWTH_MARGIN, MAX_VOXELS, NEAR_MIN_GAIN, NEAR_MM,
                                           SPILL_RATIO, RegionalAgeModels, _folds, fit_regional_models, interior_rows,
                                           rank_regional, sort_regional, twin_rows, ventricle_distances,
                                           with_spill_checks)

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


def _interior_reference(regions: np.ndarray, affine: np.ndarray, margin: float, growing: tuple[int, ...] = (),
                        growing_margin: float = 0.0) -> np.ndarray:
    """Every labelled voxel against every voxel of another region (and of a growing one), by brute force."""
    ijk = np.argwhere(regions >= 0)  # (n, 3)
    mm = ijk @ affine[:3, :3].T  # (n, 3)
    rows = regions[tuple(ijk.T)]
    grows = np.isin(rows, growing)  # (n,)
    out = regions.copy()
    for (i, j, k), point, row in zip(ijk, mm, rows):
        if np.any(np.linalg.norm(mm[rows != row] - point, axis=1) <= margin) or (
                row not in growing and np.any(np.linalg.norm(mm[grows] - point, axis=1) <= growing_margin)):
            out[i, j, k] = -1
    return out


@pytest.mark.parametrize("zooms", [(3.0, 3.0, 3.0), (1.0, 2.0, 1.5)])
def test_interiors_match_a_brute_force_distance_check(zooms):
    rng = np.random.default_rng(1)
    regions = np.full((12, 10, 11), -1)
    regions[1:11, 1:9, 1:10] = rng.integers(0, 3, size=(5, 4, 3)).repeat(2, 0).repeat(2, 1).repeat(3, 2)[:10, :8, :9]
    regions[regions == 1] = np.where(rng.random((regions == 1).sum()) < 0.2, -1, 1)  # holes: background inside
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [-20, 7, 3]  # the offset must not matter
    for margin in (0.5, 1.5, 3.5, 4.5, 6.5):
        np.testing.assert_array_equal(interior_rows(regions, affine, margin), _interior_reference(regions, affine,
                                                                                                 margin))
    assert np.array_equal(interior_rows(regions, affine, 0.5), regions)  # nothing that close: all kept
    for growing, wide in (((2,), 7.5), ((0, 2), 6.5), ((1,), 0.0)):  # a wider margin around the growing rows only
        found = interior_rows(regions, affine, 1.5, growing, wide)
        np.testing.assert_array_equal(found, _interior_reference(regions, affine, 1.5, growing, wide))
        assert not wide or (found >= 0).sum() < (interior_rows(regions, affine, 1.5) >= 0).sum()


def test_interiors_leave_a_neighbours_spill_over_out():
    """Row 0 ages; its change leaks into the first slab of row 1 (as blur and misregistration would), whose interior
    holds noise only; row 2 is one voxel thick beside row 1, so it has no interior and gains exactly 0."""
    rng = np.random.default_rng(2)
    s = 60
    ages = rng.uniform(20, 80, s)
    regions = np.full((10, 6, 6), -1)
    regions[:4], regions[4:9], regions[9] = 0, 1, 2
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    images = rng.normal(size=(s, 10, 6, 6)).astype(np.float32)
    images[:, :5] += ((ages - 50) / 10)[:, None, None, None]  # row 0 and the leak into row 1's border slab
    interior = interior_rows(regions, affine)  # 4.5 mm: the slab next to another region is left out
    assert np.all(interior[3] == -1) and np.all(interior[4] == -1) and np.all(interior[5:8] == 1)
    labelled = regions >= 0
    models = fit_regional_models(images[:, labelled], ages, regions[labelled], INDEX, interior=interior[labelled])
    table = rank_regional(models, n_boot=500).set_index("region")
    ageing, leaky, thin = table.loc["L-ageing"], table.loc["R-noise"], table.loc["L-weak"]
    assert ageing["rank"] == 1 and ageing.ci_low > 5
    assert leaky.gain_all_low > 5 and leaky.ci_low < 0 < leaky.ci_high  # all voxels: ages; interior: noise
    assert leaky.n_voxels == 3 * 36 and leaky.n_voxels_all == 5 * 36
    assert thin.n_voxels == 0 and thin.gain == 0 and thin.ci_low == thin.ci_high == 0  # the median age: gain 0
    alone = fit_regional_models(images[:, labelled], ages, regions[labelled], INDEX, interior=interior[labelled],
                                all_voxels=False)  # the interior ranking without the all-voxel models: the same
    assert alone.whole is None and np.array_equal(alone.errors, models.errors, equal_nan=True)
    plain = rank_regional(alone, n_boot=500)
    pd.testing.assert_frame_equal(plain, rank_regional(models, n_boot=500)[plain.columns])
    np.testing.assert_array_equal(models.errors[:, 2], models.baseline_errors)
    assert "R-absent" not in table.index and len(table) == 3
    whole = fit_regional_models(images[:, labelled], ages, regions[labelled], INDEX)
    np.testing.assert_array_equal(models.whole.errors, whole.errors)  # the all-voxel models are the plain ones


def _two_regions(names: tuple[str, str], sizes: tuple[int, int], changes: list[tuple[slice, float]], seed: int,
                 s: int = 120) -> tuple[RegionIndex, np.ndarray, np.ndarray, np.ndarray]:
    """(index, ages (s,), region rows (n,), voxels (s, n)): two regions of ``sizes`` noise voxels; each (columns,
    slope) of ``changes`` adds slope * (age - 50) to those columns."""
    rng = np.random.default_rng(seed)
    ages = rng.uniform(20, 80, s)
    voxels = rng.normal(size=(s, sum(sizes)))
    for columns, slope in changes:
        voxels[:, columns] += slope * (ages[:, None] - 50)
    return RegionIndex.from_names({1: names[0], 2: names[1]}), ages, np.repeat([0, 1], sizes), voxels


def test_bilateral_order_ranks_a_structure_by_both_hemispheres_and_keeps_its_rows_together():
    """Both hemispheres of ``both`` change by 0.04 per year, only the left ``one`` by 0.06: per region, L-one leads
    and its unchanged twin is last; by structure, both rows of ``both`` lead. The bilateral gain is the per-subject
    mean of the two hemispheres' gains, its intervals the bootstrap of that mean."""
    rng = np.random.default_rng(5)
    s, v = 150, 30
    ages = rng.uniform(20, 80, s)
    index = RegionIndex.from_names({1: "L-both", 2: "R-both", 3: "L-one", 4: "R-one"})
    rows = np.repeat(np.arange(4), v)
    voxels = rng.normal(size=(s, 4 * v))
    for row, slope in ((0, 0.04), (1, 0.04), (2, 0.06)):
        voxels[:, rows == row] += slope * (ages[:, None] - 50)
    models = fit_regional_models(voxels, ages, rows, index)
    by_region = rank_regional(models, n_boot=500)
    assert by_region.region[0] == "L-one" and by_region.region.iloc[-1] == "R-one"
    table = sort_regional(by_region, "bilateral").reset_index(drop=True)
    assert list(table.structure) == ["both", "both", "one", "one"]
    assert table.gain[0] >= table.gain[1] and table.gain[2] > table.gain[3]  # within a structure: own gain
    reference = models.gains[:, [0, 2]] / 2 + models.gains[:, [1, 3]] / 2  # (s, 2) both, one
    np.testing.assert_allclose(table.bilateral_gain, np.repeat(reference.mean(axis=0), 2))
    assert table.bilateral_rank_low[0] == table.bilateral_rank_high[0] == 1 and table.bilateral_rank_low[3] == 2
    low, high = np.percentile(reference[rng.integers(0, s, (2000, s))].mean(axis=1), [2.5, 97.5], axis=0)
    np.testing.assert_allclose(table.bilateral_low[::2], low, atol=0.15)  # another bootstrap draw: close, not equal
    np.testing.assert_allclose(table.bilateral_high[::2], high, atol=0.15)
    assert sorted(table["rank"]) == [1, 2, 3, 4] and table["rank"][0] > 1  # the rows keep their per-region ranks


def test_size_matched_gains_rank_a_thin_strong_change_above_a_large_weak_one():
    """16 voxels change by 0.03 per year each, 600 by 0.012: on all voxels the large region adds up more age, with
    each model capped at 16 voxels the thin one tells more. A cap no region reaches changes nothing."""
    index, ages, rows, voxels = _two_regions(("L-thin", "R-large"), (16, 600), [(slice(0, 16), 0.03),
                                                                              (slice(16, None), 0.012)], seed=0)
    rng = np.random.default_rng(1)
    plain = rank_regional(fit_regional_models(voxels, ages, rows, index), n_boot=500)
    assert list(plain["region"]) == ["R-large", "L-thin"] and plain.gain[0] > plain.gain[1] + 1.5
    interior = rows.copy()  # every voxel is interior: the capped models replace the plain ones, whole keeps them
    capped = fit_regional_models(voxels, ages, rows, index, interior=interior, max_voxels=16, draws=3)
    table = rank_regional(capped, n_boot=500)
    assert list(table["region"]) == ["L-thin", "R-large"] and table.ci_low[0] > table.ci_high[1]
    np.testing.assert_array_equal(capped.errors[:, 0], capped.whole.errors[:, 0])  # 16 voxels: fitted as before
    np.testing.assert_array_equal(capped.whole.errors, fit_regional_models(voxels, ages, rows, index).errors)
    # the capped region's errors are the mean of three fits on 16 of its voxels, each a plain ridge model
    draws = [fit_regional_models(voxels[:, np.r_[np.arange(16), 16 + rng.choice(600, 16, replace=False)]], ages,
                                 rows[:32], index).errors[:, 1] for _ in range(3)]
    assert abs(capped.errors[:, 1].mean() - np.mean(draws)) < 1.0  # other draws, the same size: close on average
    roomy = fit_regional_models(voxels, ages, rows, index, max_voxels=600)
    np.testing.assert_array_equal(roomy.errors, fit_regional_models(voxels, ages, rows, index).errors)


def test_screened_voxels_match_a_selection_pipeline_and_find_a_sparse_change():
    """A large region whose change sits in 20 of its 600 voxels (as a darkening of the outer cortex only): random
    draws of 40 voxels catch about one of them, screening inside each training fold catches them all; the errors
    equal scikit-learn's scaler -> SelectKBest(f_regression) -> RidgeCV on the same folds."""
    index, ages, rows, voxels = _two_regions(("L-sparse", "R-noise"), (600, 600), [(slice(0, 20), 0.04)], seed=4)
    s = len(ages)
    screened = fit_regional_models(voxels, ages, rows, index, folds=4, seed=1, max_voxels=40, screen=True)
    drawn = fit_regional_models(voxels, ages, rows, index, folds=4, seed=1, max_voxels=40, draws=3)
    pipeline = make_pipeline(StandardScaler(), SelectKBest(f_regression, k=40), RidgeCV(alphas=ALPHAS))
    for row in (0, 1):
        reference = cross_val_predict(pipeline, voxels[:, rows == row], ages, cv=PredefinedSplit(_folds(s, 4, 1)))
        np.testing.assert_allclose(screened.errors[:, row], np.abs(reference - ages), rtol=1e-4, atol=1e-4)
    sparse, noise = (rank_regional(m, n_boot=500).set_index("region") for m in (screened, drawn))
    assert sparse.loc["L-sparse", "ci_low"] > noise.loc["L-sparse", "ci_high"]  # screened above random draws
    # the noise region: screening inside the folds gains nothing; choosing its voxels on every scan would
    assert sparse.loc["R-noise", "ci_low"] < 0 < sparse.loc["R-noise", "ci_high"]
    leaky = np.argsort(-np.abs(np.corrcoef(voxels[:, 600:].T, ages)[-1, :-1]))[:40]  # chosen on all 120 scans
    leaked = fit_regional_models(voxels[:, 600 + leaky], ages, np.zeros(40, int), index, folds=4, seed=1)
    assert leaked.gains[:, 0].mean() > sparse.loc["R-noise", "ci_high"] + 1.0


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
    with pytest.raises(ValueError, match="interior must be the n region rows"):
        fit_regional_models(images, ages, regions, INDEX, interior=np.where(regions == 0, 1, regions))
    for cap, draws in ((0, 5), (10, 0), (2.5, 5), (True, 5)):
        with pytest.raises(ValueError, match="expected positive integers"):
            fit_regional_models(images, ages, regions, INDEX, max_voxels=cap, draws=draws)
    with pytest.raises(ValueError, match="give max_voxels"):
        fit_regional_models(images, ages, regions, INDEX, screen=True)


def test_away_models_leave_out_the_voxels_beside_a_growing_ventricle():
    """Row 1 changes only in its slab beside the ventricle (as a displaced structure does), row 2 throughout (as a
    contracting one does): with the away models (the interiors less 7.5 mm around the ventricle) row 1 keeps no gain,
    row 2 keeps its gain, and the ventricle keeps its own interior; without distances nothing is marked."""
    index = RegionIndex.from_names({201: "L-lateral-ventricle", 1: "L-displaced", 2: "L-contracting"})
    rng = np.random.default_rng(5)
    s = 80
    ages = rng.uniform(20, 80, s)
    regions = np.full((18, 6, 6), -1)
    vent, displaced, contracting = (index.names.index(n) for n in ("L-lateral-ventricle", "L-displaced",
                                                                     "L-contracting"))
    regions[:6], regions[6:10], regions[10:] = displaced, vent, contracting
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    images = rng.normal(size=(s, 18, 6, 6)).astype(np.float32)
    trend = ((ages - 50) / 10)[:, None, None, None]
    images[:, 4:6] += trend  # the displaced row: only within 6 mm of the ventricle
    images[:, 6:10] += trend  # the ventricle
    images[:, 10:] += trend  # the contracting row: everywhere
    labelled = regions >= 0
    interior = interior_rows(regions, affine)
    away = interior_rows(regions, affine, growing=[vent], growing_margin_mm=7.5)
    assert np.array_equal(away[6:10], interior[6:10]) and np.all(away[7:9] == vent)  # the ventricle: unchanged
    assert np.all(away[4] == -1) and np.all(interior[4] == displaced)  # 6 mm from it: out of the away rows only
    models = fit_regional_models(images[:, labelled], ages, regions[labelled], index, interior=interior[labelled],
                                 away=away[labelled])
    table = rank_regional(models, n_boot=300).set_index("region")
    near, far = table.loc["L-displaced"], table.loc["L-contracting"]
    assert near.gain > 5 and near.gain_away < 1  # its change lies by the ventricle
    assert far.gain > 5 and far.gain_away > 0.8 * far.gain
    vent_row = table.loc["L-lateral-ventricle"]
    assert vent_row.n_voxels_away == vent_row.n_voxels
    assert (table.n_voxels_away <= table.n_voxels).all() and near.n_voxels_away < near.n_voxels
    assert (table.gain_away_low <= table.gain_away).all() and (table.gain_away <= table.gain_away_high).all()
    assert "near_ventricles" not in table and "demoted" not in table  # no distances: no mark
    with pytest.raises(ValueError, match="give interior as well"):
        fit_regional_models(images[:, labelled], ages, regions[labelled], index, away=away[labelled])


@pytest.mark.parametrize("zooms", [(3.0, 3.0, 3.0), (2.0, 3.0, 2.5)])
def test_ventricle_distances_match_a_brute_force_check(zooms):
    """Each region's interior voxel nearest to the ventricles, centre to centre in mm, against every pair."""
    rng = np.random.default_rng(7)
    regions = rng.integers(-1, 5, (9, 8, 7))
    regions[3:6, 3:5, 2:5] = 4  # a ventricle block; a row of no voxel at all: 5
    affine = np.diag([*zooms, 1.0])
    got = ventricle_distances(regions, affine, 6, [4])
    interior = interior_rows(regions, affine)
    vent = np.argwhere(regions == 4) * np.array(zooms)  # (w, 3) mm
    for row in range(6):
        points = np.argwhere(interior == row) * np.array(zooms)  # (v, 3) mm
        if row == 4 or not len(points):
            assert np.isnan(got[row])
            continue
        want = np.sqrt(((points[:, None] - vent[None]) ** 2).sum(-1)).min()
        assert got[row] == pytest.approx(want)
    assert np.isnan(ventricle_distances(np.where(regions == 4, -1, regions), affine, 6, [4])).all()  # none on grid


def _marked_models(ventricle_trend: float, row_trend: float = 1.0
                   ) -> tuple[RegionalAgeModels, np.ndarray, np.ndarray]:
    """Models of three rows (0 beside the ventricle, changing by ``row_trend`` within 6 mm of it; 1 far from it,
    changing weakly; 2 the ventricle, changing by ``ventricle_trend``), the rows' ventricle distances and the ages."""
    rng = np.random.default_rng(6)
    s = 80
    ages = rng.uniform(20, 80, s)
    regions = np.full((30, 6, 6), -1)
    regions[:6], regions[6:10], regions[18:] = 0, 2, 1  # rows (label order): 0 beside the ventricle, 1 far from it
    affine = np.diag([3.0, 3.0, 3.0, 1.0])  # 2 the ventricle; x 10-17 unlabelled, so row 1 is far from it
    images = rng.normal(size=(s, 30, 6, 6)).astype(np.float32)
    trend = ((ages - 50) / 10)[:, None, None, None]
    images[:, 4:6] += row_trend * trend  # within 6 mm of the ventricle only
    images[:, 6:10] += ventricle_trend * trend
    images[:, 18:] += 0.1 * trend  # weakly, everywhere
    labelled = regions >= 0
    index = RegionIndex.from_names({1: "L-caudate", 2: "L-far", 201: "L-lateral-ventricle"})
    distances = ventricle_distances(regions, affine, 3, [2])
    models = replace(fit_regional_models(images[:, labelled], ages, regions[labelled], index,
                                         interior=interior_rows(regions, affine)[labelled]), ventricle_mm=distances)
    return models, distances, ages


def test_regions_marked_near_the_ventricles_rank_after_the_others_unless_they_contract_or_darken():
    """A row beside the ventricle that changes more than a row far from it: by gain it ranks above it; in the report's
    order it is marked (interior within ``NEAR_MM``) and demoted below every unmarked region, its rank interval
    counted from there, without slope-map checks, with a contraction share below ``CONTRACTION_MIN`` or a darkening
    above ``DARKENING_MAX``; with a share at or above the one or a darkening at or below the other it keeps its place
    (a brightening: next test). The far row (interior beyond ``NEAR_MM``) and the ventricle are never marked."""
    models, distances, _ = _marked_models(1.0)
    assert distances[0] <= NEAR_MM < distances[1] and np.isnan(distances[2])
    checks = [(None, None, True), (CONTRACTION_MIN - 0.01, DARKENING_MAX + 0.01, True), (CONTRACTION_MIN, None, False),
              (np.nan, DARKENING_MAX, False), (0.0, -1.0, False), (0.0, BRIGHTENING_MIN - 0.01, True)]
    for share, dark, demoted in checks:
        table = rank_regional(replace(models, contraction=None if share is None else np.array([share, 0.5, np.nan]),
                                      darkening=None if dark is None else np.array([dark, 0.0, np.nan])), n_boot=300)
        row = table.set_index("region").loc["L-caudate"]
        assert row.near_ventricles and row.demoted == demoted and row.ventricle_mm == distances[0]
        assert np.isnan(row.contraction) if share is None else row.contraction == share or np.isnan(share)
        assert not table.set_index("region").loc[["L-far", "L-lateral-ventricle"], "near_ventricles"].any()
        assert list(sort_regional(table, "gain")["region"]) == ["L-lateral-ventricle", "L-caudate", "L-far"]
        if demoted:
            assert list(table["region"]) == ["L-lateral-ventricle", "L-far", "L-caudate"]
            assert row.rank_low == row.rank_high == 3  # counted after the two unmarked regions
        else:
            assert list(table["region"]) == ["L-lateral-ventricle", "L-caudate", "L-far"]
        assert list(table["rank"]) == [1, 2, 3] and (table.rank_low <= table["rank"]).all()


def test_a_marked_row_keeps_its_place_above_growing_ventricles_or_brightening_near_their_gain():
    """The two exemptions of a row beside the ventricle from the demotion. Above ventricles that grow (gain at least
    ``NEAR_MIN_GAIN``) it keeps its place whatever its slope map (above_ventricles); above a ventricle that barely
    changes it does not. A row that brightens throughout (darkening at least ``BRIGHTENING_MIN``) keeps its place when
    its gain reaches ``BRIGHTENING_GAIN_SHARE`` of the ventricle's (rivals_ventricles): far above it, and just below it
    (both near the ceiling, 0.90 of it); gaining 0.59 of it, as displaced rows do, it is demoted."""
    for row_trend, ventricle_trend, growing, above, rivals in ((1.0, 0.02, False, True, True),
                                                               (1.0, 0.1, True, True, True),
                                                               (1.0, 1.0, True, False, True),
                                                               (0.3, 1.0, True, False, False)):
        models, _, _ = _marked_models(ventricle_trend, row_trend)
        for dark in (BRIGHTENING_MIN, 1.0, BRIGHTENING_MIN - 0.01, 0.0):
            table = rank_regional(replace(models, contraction=np.array([0.0, 0.5, np.nan]),
                                          darkening=np.array([dark, 0.0, np.nan])), n_boot=300).set_index("region")
            row, ventricle = table.loc["L-caudate"], table.loc["L-lateral-ventricle"]
            assert (ventricle.gain >= NEAR_MIN_GAIN) == growing and (row.gain > ventricle.gain) == above
            assert (row.gain >= BRIGHTENING_GAIN_SHARE * ventricle.gain) == rivals
            assert row.above_ventricles == above and row.rivals_ventricles == rivals and row.near_ventricles
            kept = (above and growing) or (rivals and dark >= BRIGHTENING_MIN)
            assert row.demoted == (not kept), (row_trend, ventricle_trend, dark)
            by_gain = list(table.sort_values("gain", ascending=False).index)
            assert list(table.index) == ([r for r in by_gain if r != "L-caudate"] + ["L-caudate"] if row.demoted
                                         else by_gain)


def test_a_ventricle_that_a_neighbour_pulls_ranks_with_the_demoted_rows():
    """The ventricle gains most; when a neighbour's pull explains more of its slope map than its own expansion does
    (enlarged_by_neighbour) it is listed after every kept row with that neighbour named (pulled_by), else it keeps
    its place; without the shares (NaN) nothing changes. The row beside it contracts, so it keeps its place."""
    models, _, _ = _marked_models(1.0)
    for expansion, pull, enlarged in ((0.05, 0.3, True), (0.4, 0.1, False), (0.2, 0.2, False), (np.nan, np.nan, False)):
        table = rank_regional(replace(models, contraction=np.array([0.5, 0.0, np.nan]),
                                      darkening=np.array([0.0, 0.0, np.nan]),
                                      expansion=np.array([np.nan, np.nan, expansion]),
                                      pull=np.array([np.nan, np.nan, pull]), puller=np.array([-1, -1, 0])),
                              n_boot=300).set_index("region")
        ventricle = table.loc["L-lateral-ventricle"]
        assert ventricle.enlarged_by_neighbour == ventricle.demoted == enlarged
        assert ventricle.pulled_by == "L-caudate" and table.loc["L-caudate", "pulled_by"] == ""
        assert not table.loc[["L-caudate", "L-far"], "demoted"].any()
        assert list(table.index) == (["L-caudate", "L-far", "L-lateral-ventricle"] if enlarged
                                     else ["L-lateral-ventricle", "L-caudate", "L-far"])
        if enlarged:
            assert ventricle.rank_low == ventricle.rank_high == 3


def test_contraction_evidence_orders_each_group_by_gain_z_plus_contraction_t():
    """With contraction scores the report orders each group by evidence (gain over its standard error plus the
    contraction t): the far row, which gains less than the row beside the ventricle but whose scores follow a
    contraction, ranks above it; a negative t adds nothing where the row darkens throughout and counts where its map
    does not change uniformly; the rank intervals follow the evidence within each group; without scores the order is
    by gain."""
    models, _, ages = _marked_models(1.0, 0.6)
    rng = np.random.default_rng(9)
    scores = np.column_stack([-ages / 10 + rng.normal(0, 1, len(ages)), ages / 10 + rng.normal(0, 1, len(ages)),
                              np.full(len(ages), np.nan)])  # (s, 3): row 0 a darkening's sign, row 1 a contraction's
    checked = replace(models, contraction=np.array([0.5, 0.5, np.nan]), darkening=np.array([-0.95, 0.0, np.nan]))
    plain = rank_regional(checked, n_boot=300)
    assert "evidence" not in plain and list(plain["region"]) == list(sort_regional(plain, "gain")["region"])
    table = rank_regional(replace(checked, contraction_scores=scores, ages=ages), n_boot=300)
    rows = table.set_index("region")
    se = (rows.ci_high - rows.ci_low) / (2 * 1.959963984540054)
    t = [np.corrcoef(scores[:, c], ages)[0, 1] for c in range(2)]
    t = [r * np.sqrt((len(ages) - 2) / (1 - r * r)) for r in t]
    np.testing.assert_allclose(rows.loc[["L-caudate", "L-far"], "contraction_t"], t, rtol=1e-9)
    np.testing.assert_allclose(rows.evidence, rows.gain / se + np.maximum(rows.contraction_t.fillna(0), 0), rtol=1e-9)
    assert rows.loc["L-far", "gain"] < rows.loc["L-caudate", "gain"] and rows.loc["L-caudate", "contraction_t"] < 0
    assert list(table["region"]) == list(table.sort_values("evidence", ascending=False)["region"])
    assert table["region"].iloc[0] == "L-far" and not table.demoted.any()
    assert (table.rank_low <= table["rank"]).all() and (table["rank"] <= table.rank_high).all()
    demoted = rank_regional(replace(checked, contraction=np.array([0.0, 0.5, np.nan]), darkening=None,
                                    contraction_scores=scores, ages=ages), n_boot=300)
    assert list(demoted["region"])[-1] == "L-caudate" and demoted.set_index("region").loc["L-caudate", "rank_low"] == 3
    moving = rank_regional(replace(checked, darkening=np.array([DARKENING_MAX + 0.01, 0.0, np.nan]),
                                   contraction_scores=scores, ages=ages), n_boot=300).set_index("region")
    np.testing.assert_allclose(moving.evidence, moving.gain / se + moving.contraction_t.fillna(0), rtol=1e-9)
    caudate = rows.loc["L-caudate"]  # the same gains and t: the negative t now lowers its evidence
    assert moving.loc["L-caudate", "evidence"] == pytest.approx(caudate.evidence + caudate.contraction_t, rel=1e-12)


@pytest.mark.parametrize("ventricle_trend, expansion, pull, push", [(1.0, 0.4, 0.1, True), (1.0, 0.05, 0.3, False),
                                                                    (0.0, 0.4, 0.1, False), (1.0, 0.3, 0.25, False),
                                                                    (1.0, 0.3, 0.19, True), (1.0, 0.3, np.nan, True)])
def test_the_t_beside_the_push_falloff_is_used_when_a_ventricle_grows_of_its_own(ventricle_trend, expansion, pull,
                                                                                push):
    """contraction_t is the t of the scores beside the push's falloff when a lateral ventricle gains at least
    ``NEAR_MIN_GAIN`` and its expansion share is at least ``GROWTH_MARGIN`` times its pull share (push_falloff), else
    the plain scores' t: an expansion barely above the pull (0.3 against 0.25) is not growth of its own, except
    with ``growth_margin=1`` (F, the order before the margin)."""
    models, _, ages = _marked_models(ventricle_trend, 0.6)
    rng = np.random.default_rng(10)
    plain, falloff = (np.column_stack([rng.normal(0, 1, len(ages)) + k * ages / 10 for k in (0.5, 1.0)]
                                      + [np.full(len(ages), np.nan)]) for _ in range(2))  # (s, 3) each
    models = replace(models, contraction=np.array([0.5, 0.5, np.nan]), darkening=np.array([0.0, 0.0, np.nan]),
                     expansion=np.array([np.nan, np.nan, expansion]), pull=np.array([np.nan, np.nan, pull]),
                     puller=np.array([-1, -1, 0]), contraction_scores=plain, falloff_scores=falloff, ages=ages)
    table = rank_regional(models, n_boot=300)
    rows = table.set_index("region")
    ventricle = rows.loc["L-lateral-ventricle"]
    assert (ventricle.gain >= NEAR_MIN_GAIN and not ventricle.pull * GROWTH_MARGIN > ventricle.expansion) == push
    assert table["push_falloff"].eq(push).all()
    np.testing.assert_allclose(rows.loc[["L-caudate", "L-far"], "contraction_t"],
                               age_t(falloff if push else plain, ages)[:2], rtol=1e-12)
    unmargined = rank_regional(models, n_boot=300, growth_margin=1.0)
    assert unmargined["push_falloff"].all() == (ventricle.gain >= NEAR_MIN_GAIN and not ventricle.pull > expansion)


def _spill_models(pull: float = 0.4) -> tuple[RegionalAgeModels, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(models with slope checks and pullers, voxels (s, n), ages, interior rows (n,), region rows (X, Y, Z)) of three
    slabs on a 3 mm grid: row 0 (x 0-5) ages throughout and pulls row 1 (x 6-19), whose voxels change strongly within
    9 mm of it and not beyond (a spill-over); row 2 (x 20-39), pulled by row 1, ages weakly throughout."""
    rng = np.random.default_rng(11)
    s = 120
    ages = rng.uniform(20, 80, s)
    regions = np.full((40, 6, 6), -1)
    regions[:6], regions[6:20], regions[20:] = 0, 1, 2
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    images = rng.normal(size=(s, 40, 6, 6)).astype(np.float32)
    trend = ((ages - 50) / 10)[:, None, None, None]
    images[:, :6] += 0.05 * trend
    images[:, 6:9] += 0.15 * trend  # interior x 7-8: within 9 mm of row 0 (centre to centre)
    images[:, 20:] += 0.04 * trend
    labelled = regions >= 0
    index = RegionIndex.from_names({1: "L-cuneus", 2: "L-pericalcarine", 3: "L-lingual"})
    interior = interior_rows(regions, affine)[labelled]
    models = fit_regional_models(images[:, labelled], ages, regions[labelled], index, seed=4, interior=interior)
    models = replace(models, ventricle_mm=np.full(3, np.nan), contraction=np.array([0.5, 0.0, 0.0]),
                     darkening=np.zeros(3), expansion=np.full(3, np.nan), pull=np.array([np.nan, pull, 0.3]),
                     puller=np.array([-1, 0, 1]))
    return models, images[:, labelled], ages, interior, regions


def test_a_region_whose_gain_lies_beside_its_puller_ranks_with_the_demoted_rows():
    """Row 1 gains most on its interior, all of it from the voxels beside row 0: its far half (beyond ``SPILL_MM``)
    tells under ``SPILL_RATIO`` of what its near half tells on as many voxels, so it is a spill-over, listed last.
    Row 2 ages throughout (near and far alike) and keeps its place; with row 1's pull below its contraction share, or
    without the near/far models, nothing is demoted. The near gains equal a plain fit on the near voxels alone under
    the same cap (m = min(near, far, ``MAX_VOXELS``)) and seed."""
    models, voxels, ages, interior, regions = _spill_models()
    checked = with_spill_checks(models, voxels, ages, interior, regions, np.diag([3.0, 3.0, 3.0, 1.0]))
    assert list(checked.near.voxels) == [0, MAX_VOXELS, MAX_VOXELS]  # row 0 has no puller
    assert np.isnan(checked.near.errors[:, 0]).all() and np.isnan(checked.far.errors[:, 0]).all()
    near = (interior == 1) & (np.repeat(np.arange(40), 36)[regions.ravel() >= 0] <= 8)  # x 7-8
    plain = fit_regional_models(voxels[:, near], ages, np.ones(int(near.sum()), dtype=int), models.regions, seed=4,
                                max_voxels=MAX_VOXELS)
    np.testing.assert_allclose(checked.near.errors[:, 1], plain.errors[:, 1])
    table = rank_regional(checked, n_boot=300).set_index("region")
    row, kept = table.loc["L-pericalcarine"], table.loc["L-lingual"]
    assert row.gain > kept.gain and row.gain_near > 1.0 and row.gain_far < SPILL_RATIO * row.gain_near
    assert kept.gain_near > 0 and kept.gain_far >= SPILL_RATIO * kept.gain_near
    assert row.spill_over and row.demoted and not kept.spill_over and not kept.demoted
    assert row.pulled_by == "L-cuneus" and kept.pulled_by == "L-pericalcarine"
    assert list(table.index)[-1] == "L-pericalcarine" and row.rank_low == row.rank_high == 3
    for unchecked in (replace(checked, pull=np.array([np.nan, 0.0, 0.3])), models):
        table = rank_regional(unchecked, n_boot=300)
        assert not table["demoted"].any() and table["region"].iloc[0] == "L-pericalcarine"


def test_twin_rows_pair_the_hemispheres():
    index = RegionIndex.from_names({1: "L-cuneus", 2: "R-cuneus", 3: "B-brainstem", 4: "L-insula"})
    assert twin_rows(index) == [1, 0, -1, -1]

"""Regional age models: how much age each atlas region's own voxels tell, without the brain-age model.

For each region, a ridge regression maps the region's voxels (each standardised on the training fold) to age, the
penalty chosen by efficient leave-one-out inside the training fold (scikit-learn ``RidgeCV``). K-fold
cross-validation gives every subject a held-out prediction per region; the median-age predictor of the same folds is
the baseline. A region's *gain* is the baseline's mean absolute error minus the region's (years): the age its voxels
alone tell. This is regional brain age (Kaufmann et al. 2019, Nat Neurosci 22:1617; local brain age: Popescu et al.
2021, Hum Brain Mapp 42:3937), one region-wise searchlight (Kriegeskorte et al. 2006, PNAS 103:3863).

**Interior voxels.** Residual misregistration and blur carry a region's change a few millimetres across its border,
so the border voxels of a strongly changing region's neighbours tell age too (a darkened cortical region lends its
gain to the regions beside it). Each region's model is therefore fitted on its *interior*: the voxels farther than
``MARGIN_MM`` from every other atlas region (:func:`interior_rows`); the gain on all its voxels is kept beside it. A
region with no interior voxel is predicted by the median age (gain 0). The margin was chosen on ten synthetic cohorts
under a rule fixed beforehand and validated on four fresh ones (docs/report.md, "Leaving out the voxels ...").

**Change near the ventricles.** Growing ventricles displace their neighbours, and the displacement reaches across
the corpus callosum into the cingulate (the callosum and the tissue above it move as one band). A region with a gain
of at least ``NEAR_MIN_GAIN`` years whose interior comes within ``NEAR_MM`` of the lateral ventricles is marked *near
the ventricles* (:func:`ventricle_distances`; 13 structures a side on the 3 mm grid). The mark says where a change
lies, not why, so a marked region ranks after every unmarked one unless its age-slope map shows a change of its own:
its own contraction (a contraction share of at least ``CONTRACTION_MIN``) or a darkening throughout (a darkening of at
most ``DARKENING_MAX``; :mod:`brainage.attribution.contraction`). A displacement tells less age than the growth that
causes it, so a marked region also keeps its place when it tells more age than growing lateral ventricles (their gain
at least ``NEAR_MIN_GAIN``), whatever its map; and since the displaced cingulate brightens throughout but tells far
less, a brightening (a darkening of at least ``BRIGHTENING_MIN``) keeps its place when it tells nearly as much
(``BRIGHTENING_GAIN_SHARE`` of their gain; near the ceiling which of the two gains more is chance). docs/report.md,
"Contraction beside growing ventricles", "A displacement zone beside the ventricles", "The two exemptions together".
A lateral ventricle enlarged by a neighbour's contraction rather than growing on its own (its age-slope map follows
that neighbour's pull more than its own expansion: :func:`brainage.attribution.contraction.ventricle_pulls`) ranks
with the demoted regions too, its change credited to the neighbour that pulls it (docs/report.md, "Ventricles enlarged
by a neighbour").
The same models without the voxels within ``VENTRICLE_MARGIN_MM`` of the ventricles (``away``) show how much of each
gain lies beside them (ranking without those voxels did not qualify: it drops the displaced caudate and thalamus, and
a contracting caudate with them; docs/report.md, "Scratch probes of displacement").

**Spill-over beside a contraction.** A contraction drags the tissue beside it along, so a neighbour's voxels next
to it change with age too and a large neighbour can outgain a weakly contracting region. Each region's *puller* is the
neighbour whose pull explains most of its age-slope map beside its own contraction
(:func:`brainage.attribution.contraction.region_pulls`; the region's twin in the other hemisphere left out). Its
interior splits at ``SPILL_MM`` from the puller into a near and a far part, each fitted on the same number of voxels
(:func:`with_spill_checks`). A region whose map follows the pull more than its own contraction and whose far part tells
under ``SPILL_RATIO`` of the age its near part tells is a *spill-over*: its change lies beside the neighbour, not
throughout it, and it ranks with the demoted regions (docs/report.md, "Spill-over beside a contraction").

**Order: evidence.** A contraction too thin for a ridge model to learn from can still follow the one pattern that
its own tissue moving inwards gives. Within each group (kept, demoted) the regions are ordered by :func:`evidence`:
the gain over its standard error plus the region's contraction t, the correlation with age of each scan's contraction
score (a matched filter, :func:`brainage.attribution.contraction.contraction_scores`). A negative t counts where the
region's map does not change uniformly (its tissue is stretched towards a contracting neighbour), not where it darkens
or brightens throughout (a darkening's t is negative too). When a lateral ventricle grows of its own (a gain of at
least ``NEAR_MIN_GAIN`` and an expansion share at least ``GROWTH_MARGIN`` times its pull share) the scores are taken
beside the push's falloff, which compresses the thin regions it moves (chosen on 302 and then 329 seen cohort-seeds
and validated on eight fresh cohorts each, the margin on 140 cohorts' tables and six fresh cohorts: docs/report.md,
"Contraction evidence: a matched filter", "Contraction evidence beside a push", "Growth of its own, with a margin").

**Size-matched gains.** A ridge model's gain grows with the voxels it may add up, so a large region that a weak
spill-over reaches at many voxels can outgain a thin region that changes more at each of a few. Each region's model
therefore uses at most ``MAX_VOXELS`` of its interior voxels, drawn at random ``DRAWS`` times, its errors averaged over
the draws (chosen on 19 synthetic cohorts under a rule fixed beforehand and validated on five fresh ones:
docs/report.md, "Size-matched gains"). The report caps only from ``CAP_FROM_SUBJECTS`` scans on (:func:`voxel_cap`):
with fewer, the capped models estimate a weak change worse than that spill-over costs.

**Bilateral gains.** Each structure's left and right gains averaged per subject, with bootstrap and rank intervals
among structures: a summary for symmetric ageing. Ordering the regions by it (:func:`sort_regional`) did not beat the
per-region order on fresh cohorts, since a one-sided change drops to half (docs/report.md, "A bilateral order").

It answers a different question from region occlusion: *where these scans change with age*, not *what the brain-age
model reads*. A region that ages but that the model leaves unread (a small contraction beside a strong darkening)
shows here and not in the occlusion ranking; a region whose neighbour moves into it (a growing ventricle) shows here
too, since its voxels change. Uncertainty: the per-subject paired gains (baseline error minus region error) are
bootstrapped over subjects (:func:`brainage.attribution.ranking.bootstrap_intervals`).

Letter legend: s subjects, r atlas regions, v voxels of one region, (X, Y, Z) model grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi
from scipy.special import ndtri

from brainage.attribution.contraction import (UNIFORM, SlopeMaps, age_t, contraction_scores, contraction_shares,
                                              darkening, region_pulls, ventricle_pulls)
from brainage.attribution.mapping import RegionIndex
from brainage.attribution.ranking import bootstrap_intervals, bootstrap_weights, rank_intervals, region_columns
from brainage.reference.atlas import VENTRICLE_LABELS

__all__ = ["ALPHAS", "BRIGHTENING_GAIN_SHARE", "BRIGHTENING_MIN", "CAP_FROM_SUBJECTS", "CONTRACTION_MIN",
           "DARKENING_MAX", "DRAWS", "GROWTH_MARGIN", "MARGIN_MM", "MAX_VOXELS", "MIN_SUBJECTS", "NEAR_MIN_GAIN",
           "NEAR_MM", "SPILL_MIN_VOXELS", "SPILL_MM", "SPILL_RATIO", "SURE_SUBJECTS", "VENTRICLE_MARGIN_MM",
           "RegionalAgeModels", "bilateral_gains", "evidence", "fit_regional_models", "interior_rows", "rank_regional",
           "sort_regional", "twin_rows", "ventricle_distances", "ventricle_rows", "voxel_cap", "with_slope_checks",
           "with_spill_checks"]

ALPHAS = np.logspace(-1, 5, 13)  # ridge penalties searched inside each training fold (standardised voxels)
MIN_SUBJECTS = 20  # fewer scans with a known age cannot hold out a fold worth scoring
# below this many scans the ranking missed planted regions on several of 14 synthetic cohorts (docs/report.md, "How
# many scans"): the report then says so
SURE_SUBJECTS = 200
MARGIN_MM = 4.5  # interior = farther than this from another region (3 mm grid: face- and edge-adjacent voxels out)
MAX_VOXELS = 60  # size-matched gains: each region's model fits at most this many of its interior voxels per draw
DRAWS = 5  # random voxel draws per capped region; its errors are averaged over them
# the cap pays only with many scans: below this many, every interior voxel ranked planted regions as well or better
# (24 synthetic cohorts at 40-400 scans: clearly at 40, within noise at 100; five fresh ones agreed narrowly;
# docs/report.md, "Size matching at fewer scans")
CAP_FROM_SUBJECTS = 200
# the away models leave out this margin around the ventricles (shown beside each gain, not used by the order)
VENTRICLE_MARGIN_MM = 7.5
# the mark: a gain of at least NEAR_MIN_GAIN years and an interior within NEAR_MM of the ventricles (chosen among 9, 10,
# 12 and 15 mm on 71 synthetic cohorts; 15 mm reached one structure in three and demoted the demo's darkened insula;
# docs/report.md, "A displacement zone beside the ventricles")
NEAR_MIN_GAIN = 1.0
NEAR_MM = 10.0
# a marked region whose contraction share reaches this keeps its place (displaced caudates 0.007-0.095 and contracting
# ones beside growing ventricles 0.139-0.157 on the cohorts that chose it; on fresh11, which validated it, 0.028-0.085
# and 0.110-0.144, one contracting caudate below it; docs/report.md, "Contraction beside growing ventricles")
CONTRACTION_MIN = 0.12
# a marked region whose slope map darkens throughout (mean over root mean square at most this) keeps its place too:
# the 53 planted darkenings inside the zone on the seen cohorts -0.89 to -0.97; chosen among -0.8 to -0.95 with NEAR_MM
DARKENING_MAX = -UNIFORM  # 0.85: the same bound tells a uniform change beside a region (its bleed pattern)
# a marked region that brightens throughout (at least BRIGHTENING_MIN) keeps its place when its gain reaches
# BRIGHTENING_GAIN_SHARE of the larger of the lateral ventricles' gains: the displaced cingulate brightens up to +0.98
# but gains at most 0.62 of the ventricles' gain on the seen cohorts, planted brightenings beside growing ventricles
# 0.81-0.99 (both gains near the ceiling). Declared, with the exemption above growing ventricles, before fresh17
# validated them (docs/report.md, "The two exemptions together")
BRIGHTENING_MIN = -DARKENING_MAX
BRIGHTENING_GAIN_SHARE = 0.7
# a lateral ventricle grows of its own (the contraction t is then taken beside the push's falloff) when it gains at
# least NEAR_MIN_GAIN and its expansion share is at least this many times its pull share: planted growing ventricles
# gaining 1 y or more 1.74 and up (402 rows of 140 cohorts, seeds 0-2), the one unplanted ventricle past the gain,
# fresh18_deep_c's, 1.05 (those tables' install; 1.88 on a later one, where the margin no longer separates it).
# Declared before fresh23, which it passed without reaching the gap, as did fresh24 (docs/report.md, "Growth of its
# own, with a margin", "One install's scans are not another's")
GROWTH_MARGIN = 1.5
# spill-over: a region's interior splits at SPILL_MM from its puller; each side's model fits m = min(near, far,
# MAX_VOXELS) voxels (at least SPILL_MIN_VOXELS, else no test), and a far gain under SPILL_RATIO of the near one marks
# it (chosen among 6 and 9 mm and 0.2-0.5 on 94 seen cohort-seeds, validated on the fresh20 set: docs/report.md,
# "Spill-over beside a contraction")
SPILL_MM = 9.0
SPILL_RATIO = 0.3
SPILL_MIN_VOXELS = 5


@dataclass(frozen=True)
class RegionalAgeModels:
    """Cross-validated errors of one ridge model per region (NaN columns: regions not on the grid)."""

    errors: np.ndarray  # (s, r) absolute held-out error, years
    baseline_errors: np.ndarray  # (s,) absolute held-out error of the training folds' median age
    voxels: np.ndarray  # (r,) voxels of each region the models used
    regions: RegionIndex
    folds: int
    whole: RegionalAgeModels | None = None  # the same fitted on all voxels (when these use the interiors)
    away: RegionalAgeModels | None = None  # the same on the interiors less the voxels near the ventricles
    ventricle_mm: np.ndarray | None = None  # (r,) mm from each region's interior to the lateral ventricles (NaN: none)
    contraction: np.ndarray | None = None  # (r,) contraction share of each region's age-slope map (NaN: none)
    darkening: np.ndarray | None = None  # (r,) mean over root mean square of each region's age-slope map (NaN: none)
    expansion: np.ndarray | None = None  # (r,) expansion share of each lateral ventricle (NaN: other rows)
    pull: np.ndarray | None = None  # (r,) largest pull share of a region's neighbours (NaN: none)
    puller: np.ndarray | None = None  # (r,) row of the neighbour with that pull (-1: none)
    near: RegionalAgeModels | None = None  # the same on the interior voxels within SPILL_MM of the puller (matched)
    far: RegionalAgeModels | None = None  # ... and on as many beyond it (NaN columns: no test)
    contraction_scores: np.ndarray | None = None  # (s, r) each scan's contraction score per region (NaN: none)
    falloff_scores: np.ndarray | None = None  # (s, r) the same beside the push's falloff (NaN: none)
    ages: np.ndarray | None = None  # (s,) the scans' ages, with the contraction scores
    seed: int = 0  # the folds' and voxel draws' seed

    @property
    def gains(self) -> np.ndarray:
        """(s, r) per-subject paired gain: the baseline's error minus the region model's (years)."""
        return self.baseline_errors[:, None] - self.errors


def voxel_cap(subjects: int) -> int | None:
    """The report's voxel cap for regional models fitted on ``subjects`` scans: ``MAX_VOXELS`` from
    ``CAP_FROM_SUBJECTS`` scans on, None (every voxel) below."""
    return MAX_VOXELS if subjects >= CAP_FROM_SUBJECTS else None


def ventricle_rows(index: RegionIndex) -> list[int]:
    """Rows of the lateral ventricles among ``index``'s regions (none when the atlas lacks them)."""
    return [index.names.index(name) for name in VENTRICLE_LABELS.values() if name in index.names]


def twin_rows(index: RegionIndex) -> list[int]:
    """(r,) each region's row in the other hemisphere ("L-x" <-> "R-x"; -1: none, or a midline region)."""
    rows = {name: row for row, name in enumerate(index.names)}
    side = {"L-": "R-", "R-": "L-"}
    return [rows.get(side[name[:2]] + name[2:], -1) if name[:2] in side else -1 for name in index.names]


def ventricle_distances(regions: np.ndarray, affine: np.ndarray, r: int, ventricles: Sequence[int]) -> np.ndarray:
    """(r,) mm (centre to centre) from each region's interior (:func:`interior_rows`) to the nearest voxel of the
    ``ventricles`` rows on the grid of ``regions`` (X, Y, Z) rows and ``affine``; NaN for the ventricles themselves,
    regions without an interior voxel, and every region when the grid holds no ventricle voxel."""
    spacing = voxel_sizes(np.asarray(affine, dtype=np.float64))  # (3,) mm per voxel
    out = np.full(r, np.nan)
    grows = np.isin(regions, list(ventricles))  # (X, Y, Z)
    if not grows.any():
        return out
    distance = ndi.distance_transform_edt(~grows, sampling=spacing)  # (X, Y, Z) mm
    interior = interior_rows(regions, affine)
    rows = np.setdiff1d(interior[interior >= 0], list(ventricles))  # regions with an interior voxel
    out[rows] = ndi.minimum(distance, labels=interior, index=rows)
    return out


def with_slope_checks(models: RegionalAgeModels, slopes: SlopeMaps, regions: np.ndarray, affine: np.ndarray,
                      voxels: np.ndarray | None = None, ages: Sequence[float] | None = None) -> RegionalAgeModels:
    """``models`` with each region's distance to the lateral ventricles, the contraction shares and darkenings of the
    same scans' ``slopes`` on the grid of ``regions`` (X, Y, Z) rows and ``affine``, the ventricles' expansion and
    pull shares and every other region's pull share (:func:`brainage.attribution.contraction.region_pulls`) with the
    neighbour that pulls, and, given the scans' (s, n) labelled ``voxels`` and ``ages``, each scan's contraction
    scores without and with the push's falloff (:func:`brainage.attribution.contraction.contraction_scores`);
    unchanged when the atlas lacks the lateral ventricles or the slopes cannot be fitted."""
    ventricles = ventricle_rows(models.regions)
    if not ventricles or not slopes.usable:
        return models
    r = len(models.regions)
    mean, slope = slopes.maps()
    expansion, pull, puller = ventricle_pulls(mean, slope, regions, affine, r, ventricles)
    region_pull, region_puller = region_pulls(mean, slope, regions, affine, r, ventricles, twin_rows(models.regions))
    pull, puller = np.where(np.isnan(pull), region_pull, pull), np.where(puller < 0, region_puller, puller)
    if voxels is not None and ages is not None:
        plain, falloff = contraction_scores(voxels, mean, slope, regions, affine, r, ventricles)
        models = replace(models, contraction_scores=plain, falloff_scores=falloff,
                         ages=np.asarray(ages, dtype=np.float64))
    return replace(models, ventricle_mm=ventricle_distances(regions, affine, r, ventricles),
                   contraction=contraction_shares(mean, slope, regions, affine, r, ventricles),
                   darkening=darkening(slope, regions, r), expansion=expansion, pull=pull, puller=puller)


def _folds(s: int, folds: int, seed: int) -> np.ndarray:
    """(s,) fold of each subject: a seeded permutation dealt round-robin."""
    order = np.random.default_rng(seed).permutation(s)
    fold = np.empty(s, dtype=np.int64)
    fold[order] = np.arange(s) % folds
    return fold


def interior_rows(regions: np.ndarray, affine: np.ndarray, margin_mm: float = MARGIN_MM,
                  growing: Sequence[int] = (), growing_margin_mm: float = 0.0) -> np.ndarray:
    """(X, Y, Z) region rows with every voxel within ``margin_mm`` (centre to centre) of another region set to -1,
    and every voxel of another region within ``growing_margin_mm`` of a ``growing`` row (a structure that grows with
    age and displaces its neighbours: the lateral ventricles) set to -1 as well.

    ``regions``: (X, Y, Z) region rows of a grid, -1 = background; ``affine``: its voxel -> mm matrix.
    """
    spacing = voxel_sizes(np.asarray(affine, dtype=np.float64))  # (3,) mm per voxel
    pad = np.ceil(margin_mm / spacing).astype(int) + 1  # (3,) voxels a region's reach spans
    out = regions.copy()
    for row in np.unique(regions[regions >= 0]):
        found = np.argwhere(regions == row)  # (v, 3)
        box = tuple(slice(max(lo - p, 0), hi + p + 1) for lo, hi, p in zip(found.min(0), found.max(0), pad))
        near = ndi.distance_transform_edt(regions[box] != row, sampling=spacing) <= margin_mm  # crop around the row
        crop = out[box]
        crop[near & (regions[box] >= 0) & (regions[box] != row)] = -1
    grows = np.isin(regions, growing)  # (X, Y, Z)
    if growing_margin_mm > 0 and grows.any():
        out[(ndi.distance_transform_edt(~grows, sampling=spacing) <= growing_margin_mm) & ~grows] = -1
    return out


def _cv_errors(x: np.ndarray, ages: np.ndarray, fold: np.ndarray, keep: int | None = None) -> np.ndarray:
    """(s,) absolute held-out errors of a ridge model on ``x`` (s, v), standardised on each training fold.

    ``keep``: fit on the ``keep`` columns with the largest |Pearson r| with age in each training fold (univariate
    screening inside the cross-validation, so the held-out fold never chooses its voxels; Guyon & Elisseeff 2003).
    """
    from sklearn.linear_model import RidgeCV

    out = np.empty(len(ages))
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
        z = (x[train] - mean) / std  # (s_train, v)
        columns = slice(None)
        if keep is not None and keep < x.shape[1]:
            centred = ages[train] - ages[train].mean()  # (s_train,)
            r = np.abs(centred @ z) / (np.sqrt((z ** 2).sum(axis=0) * (centred @ centred)) + 1e-12)  # (v,)
            columns = np.sort(np.argsort(-r, kind="stable")[:keep])
        fit = z[:, columns]  # (s_train, v')
        # exact leave-one-out either way; the design's SVD is the faster one with fewer voxels than scans
        model = RidgeCV(alphas=ALPHAS, gcv_mode="svd" if fit.shape[1] < fit.shape[0] else None).fit(fit, ages[train])
        out[test] = np.abs(model.predict(((x[test] - mean) / std)[:, columns]) - ages[test])
    return out


def _region_errors(voxels: np.ndarray, ages: np.ndarray, rows: np.ndarray, r: int, fold: np.ndarray,
                   max_voxels: int | None = None, draws: int = 1, seed: int = 0,
                   screen: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(s, r) absolute held-out errors of one ridge model per region (NaN: no voxel) and (r,) voxels per region.

    With ``max_voxels``, a region with more voxels is fitted ``draws`` times on that many of them drawn at random
    (seeded), and its errors are the mean over the draws: every region's model sees at most the same evidence. With
    ``screen`` it is fitted once, on the ``max_voxels`` voxels most correlated with age in each training fold.
    """
    errors = np.full((len(ages), r), np.nan)
    sizes = np.bincount(rows[rows >= 0], minlength=r)[:r]
    rng = np.random.default_rng(seed)
    for region in np.flatnonzero(sizes):
        columns = np.flatnonzero(rows == region)  # (v,)
        if screen or max_voxels is None or len(columns) <= max_voxels:  # keep: all columns when v <= max_voxels
            errors[:, region] = _cv_errors(voxels[:, columns].astype(np.float64), ages, fold,
                                           keep=max_voxels if screen else None)
        else:
            subsets = [np.sort(rng.choice(columns, max_voxels, replace=False)) for _ in range(draws)]
            errors[:, region] = np.mean([_cv_errors(voxels[:, subset].astype(np.float64), ages, fold)
                                         for subset in subsets], axis=0)  # (s,) mean over the draws
    return errors, sizes


def fit_regional_models(voxels: np.ndarray, ages: Sequence[float], rows: np.ndarray, index: RegionIndex,
                        folds: int = 5, seed: int = 0, interior: np.ndarray | None = None,
                        max_voxels: int | None = None, draws: int = DRAWS, screen: bool = False,
                        all_voxels: bool = True, away: np.ndarray | None = None) -> RegionalAgeModels:
    """Fit and cross-validate one ridge model per region.

    Args:
        voxels: (s, n) values of the atlas-labelled voxels of s preprocessed scans on one grid (``image[regions >=
            0]`` per scan, any float dtype).
        ages: (s,) known ages in years.
        rows: (n,) region row of each voxel column (``RegionIndex.columns`` of the grid).
        index: the atlas regions (r rows).
        folds: cross-validation folds (subjects dealt at random with ``seed``).
        interior: (n,) the same rows with border voxels -1 (:func:`interior_rows`): the models use the interiors,
            and ``whole`` holds the all-voxel models; None: all voxels only.
        max_voxels: size-matched gains: each ranked region's model (interior, or all voxels without one) uses at
            most this many of its voxels, drawn ``draws`` times (seeded by ``seed``); its errors are the mean over
            the draws, so a large region does not outgain a small one by adding up a weak change over more voxels.
            The all-voxel models in ``whole`` keep every voxel. None: every voxel.
        screen: with ``max_voxels``, keep each capped region's ``max_voxels`` voxels most correlated with age in
            each training fold instead of drawing them at random (one fit; ``draws`` does not apply): a candidate
            that lost to the random draws on 25 benchmark cohorts (docs/report.md, "Screened voxels"), kept so that
            result can be rerun; the report does not use it.
        all_voxels: with ``interior``, also fit the all-voxel models (``whole``); False skips them (benchmarks that
            score the interior ranking only: the same ranking in less time).
        away: (n,) with ``interior``, the interior rows with the voxels near the ventricles also -1
            (:func:`interior_rows` with ``growing``): ``away`` holds the same models fitted on them.
    """
    voxels, ages, rows = np.asarray(voxels), np.asarray(ages, dtype=np.float64), np.asarray(rows)
    if voxels.ndim != 2 or len(voxels) != len(ages) or rows.shape != voxels.shape[1:]:
        raise ValueError(f"expected voxels (s, n), s ages and n region rows; got {voxels.shape}, {ages.shape} and "
                         f"{rows.shape}")
    for name, subset in (("interior", interior), ("away", away)):
        if subset is not None and (np.shape(subset) != rows.shape or np.any((subset >= 0) & (subset != rows))):
            raise ValueError(f"{name} must be the n region rows with voxels left out set to -1; got shape "
                             f"{np.shape(subset)} for {rows.shape} rows")
    if away is not None and interior is None:
        raise ValueError("away models narrow the interiors; give interior as well")
    if not np.all(np.isfinite(ages)):
        raise ValueError("regional age models need every age known; leave out scans without one")
    if len(ages) < max(MIN_SUBJECTS, 2 * folds):
        raise ValueError(f"regional age models need at least {max(MIN_SUBJECTS, 2 * folds)} scans with a known age, "
                         f"got {len(ages)}")
    if not 2 <= folds <= len(ages):
        raise ValueError(f"folds={folds} must be in [2, {len(ages)}]")
    if max_voxels is not None and (isinstance(max_voxels, bool) or not isinstance(max_voxels, int) or max_voxels < 1
                                   or isinstance(draws, bool) or not isinstance(draws, int) or draws < 1):
        raise ValueError(f"max_voxels={max_voxels!r}, draws={draws!r}; expected positive integers")
    if screen and max_voxels is None:
        raise ValueError("screen=True keeps max_voxels voxels per region; give max_voxels")
    r = len(index)
    fold = _folds(len(ages), folds, seed)
    baseline = np.empty(len(ages))
    for k in range(folds):
        baseline[fold == k] = np.abs(ages[fold == k] - np.median(ages[fold != k]))
    capped = {"max_voxels": max_voxels, "draws": draws, "seed": seed, "screen": screen}
    if interior is None or all_voxels:
        errors, sizes = _region_errors(voxels, ages, rows, r, fold, **(capped if interior is None else {}))
        whole = RegionalAgeModels(errors, baseline, sizes, index, folds, seed=seed)
        if interior is None:
            return whole
    else:
        sizes, whole = np.bincount(rows, minlength=r)[:r], None

    def narrowed(subset: np.ndarray) -> RegionalAgeModels:
        errors, inner = _region_errors(voxels, ages, np.asarray(subset), r, fold, **capped)
        errors[:, (sizes > 0) & (inner == 0)] = baseline[:, None]  # no voxel left: the median age, gain 0
        return RegionalAgeModels(errors, baseline, inner, index, folds, seed=seed)

    return replace(narrowed(interior), whole=whole, away=None if away is None else narrowed(away))


def with_spill_checks(models: RegionalAgeModels, voxels: np.ndarray, ages: Sequence[float], interior: np.ndarray,
                      regions: np.ndarray, affine: np.ndarray, draws: int = DRAWS) -> RegionalAgeModels:
    """``models`` (with pullers: :func:`with_slope_checks`) with ``near`` and ``far``: each region's model on its
    interior voxels within ``SPILL_MM`` of its puller and on those farther, both on m = min(near, far, ``MAX_VOXELS``)
    of them drawn ``draws`` times (the folds and seed of ``models``); columns of regions with m under
    ``SPILL_MIN_VOXELS``, the lateral ventricles (whose pull is read by itself) or no puller are NaN. ``models``
    unchanged without pullers.

    ``voxels``, ``ages``: as :func:`fit_regional_models`; ``interior``: (n,) its interior rows; ``regions``: (X, Y, Z)
    rows of the grid whose labelled voxels are the n columns, ``affine`` its voxel -> mm matrix.
    """
    if models.puller is None:
        return models
    voxels, ages = np.asarray(voxels), np.asarray(ages, dtype=np.float64)
    spacing = voxel_sizes(np.asarray(affine, dtype=np.float64))  # (3,) mm per voxel
    r, labelled = len(models.regions), regions >= 0
    fold = _folds(len(ages), models.folds, models.seed)
    near_errors, far_errors = np.full_like(models.errors, np.nan), np.full_like(models.errors, np.nan)  # (s, r)
    sizes = np.zeros(r, dtype=np.int64)
    ventricles = ventricle_rows(models.regions)
    distances: dict[int, np.ndarray] = {}  # puller row -> (n,) mm to it (a neighbour often pulls several regions)
    for row in np.flatnonzero(models.puller >= 0):
        if row in ventricles:
            continue
        puller = int(models.puller[row])
        if puller not in distances:
            distances[puller] = ndi.distance_transform_edt(regions != puller, sampling=spacing)[labelled]
        distance = distances[puller]  # (n,) mm
        mine = interior == row
        near, far = mine & (distance <= SPILL_MM), mine & (distance > SPILL_MM)
        m = min(int(near.sum()), int(far.sum()), MAX_VOXELS)
        if m < SPILL_MIN_VOXELS:
            continue
        for errors, side in ((near_errors, near), (far_errors, far)):
            errors[:, row] = _region_errors(voxels, ages, np.where(side, row, -1), r, fold, max_voxels=m, draws=draws,
                                            seed=models.seed)[0][:, row]
        sizes[row] = m

    def side(errors: np.ndarray) -> RegionalAgeModels:
        return RegionalAgeModels(errors, models.baseline_errors, sizes, models.regions, models.folds, seed=models.seed)

    return replace(models, near=side(near_errors), far=side(far_errors))


def bilateral_gains(gains: np.ndarray, structures: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(s, r) per-region gains -> (s, t) per-structure gains, each the mean of its hemispheres' columns (a midline
    structure keeps its own), and the t structure names in order of first appearance."""
    names = list(dict.fromkeys(structures))
    columns = np.asarray(structures)
    return np.stack([gains[:, columns == n].mean(axis=1) for n in names], axis=1), names


def rank_regional(models: RegionalAgeModels, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                  growth_margin: float = GROWTH_MARGIN) -> pd.DataFrame:
    """Regions on the grid by decreasing gain. Columns: rank, region, structure, hemisphere, gain, ci_low, ci_high, mae,
    rank_low, rank_high, n_voxels, bilateral_gain, bilateral_low, bilateral_high, bilateral_rank_low,
    bilateral_rank_high (the structure's per-subject mean over its hemispheres, ranked among structures;
    :func:`bilateral_gains`) (years; ``level`` bootstrap intervals over subjects); with ``models.whole`` also gain_all,
    gain_all_low, gain_all_high, n_voxels_all: the same region on all its voxels; with ``models.away`` also gain_away,
    gain_away_low, gain_away_high, n_voxels_away (the interior less the voxels near the ventricles); with
    ``models.ventricle_mm`` also ventricle_mm, near_ventricles (a gain of at least ``NEAR_MIN_GAIN`` and an interior
    within ``NEAR_MM``), contraction and darkening (NaN without them), above_ventricles (a gain above the larger of the
    lateral ventricles' gains), rivals_ventricles (a gain of at least ``BRIGHTENING_GAIN_SHARE`` of it), expansion (a
    lateral ventricle's expansion share; NaN elsewhere), pull and pulled_by (a region's neighbours' largest pull share
    and that neighbour's name; NaN and "" without), enlarged_by_neighbour (a ventricle whose pull exceeds its
    expansion), gain_near and gain_far (with ``models.near``: the size-matched gains within and beyond ``SPILL_MM`` of
    that neighbour; NaN without a test), spill_over (a pull above its contraction share and a far gain under
    ``SPILL_RATIO`` of a positive near one) and demoted (marked, with a share below ``CONTRACTION_MIN`` and a darkening
    above ``DARKENING_MAX``, or none, unless it is above growing ventricles (a gain of at least ``NEAR_MIN_GAIN``) or
    brightens throughout (``BRIGHTENING_MIN``) and rivals them; or enlarged by a neighbour; or a spill-over); with
    ``models.contraction_scores`` and ``models.ages`` also contraction_t (the scores' t on age, beside the push's
    falloff when a lateral ventricle grows of its own: a gain of at least ``NEAR_MIN_GAIN`` and an expansion share at
    least ``growth_margin`` times its pull share), push_falloff (whether it was) and evidence (:func:`evidence`, the t
    signed where |darkening| is under |``DARKENING_MAX``|): the demoted regions rank after the others, each group by
    evidence (by gain without scores), rank intervals counted within each group."""
    keep = ~np.isnan(models.errors).any(axis=0)  # (r,) regions on the grid (no interior voxel: errors = baseline)

    def summary(m: RegionalAgeModels) -> tuple[np.ndarray, ...]:
        gains = m.gains[:, keep]  # (s, r')
        return gains.mean(axis=0), *bootstrap_intervals(gains, n_boot, level, seed)

    gain, low, high, rank_low, rank_high = summary(models)
    frame = pd.DataFrame({
        **region_columns(np.asarray(models.regions.names)[keep]),
        "gain": gain,
        "ci_low": low,
        "ci_high": high,
        "mae": models.errors[:, keep].mean(axis=0),
        "rank_low": rank_low,
        "rank_high": rank_high,
        "n_voxels": models.voxels[keep].astype(int),
    })
    both, structures = bilateral_gains(models.gains[:, keep], frame["structure"].tolist())  # (s, t)
    at = frame["structure"].map({n: i for i, n in enumerate(structures)}).to_numpy()  # (r',) structure column
    low, high, rank_low, rank_high = bootstrap_intervals(both, n_boot, level, seed)
    frame = frame.assign(bilateral_gain=both.mean(axis=0)[at], bilateral_low=low[at], bilateral_high=high[at],
                         bilateral_rank_low=rank_low[at], bilateral_rank_high=rank_high[at])
    if models.whole is not None:
        gain, low, high = summary(models.whole)[:3]
        frame = frame.assign(gain_all=gain, gain_all_low=low, gain_all_high=high,
                             n_voxels_all=models.whole.voxels[keep].astype(int))
    if models.away is not None:
        gain, low, high = summary(models.away)[:3]
        frame = frame.assign(gain_away=gain, gain_away_low=low, gain_away_high=high,
                             n_voxels_away=models.away.voxels[keep].astype(int))
    if models.ventricle_mm is not None:
        def column(values: np.ndarray | None) -> np.ndarray:  # (r',) NaN without the statistic
            return np.full(len(frame), np.nan) if values is None else np.asarray(values, dtype=np.float64)[keep]

        distance, share, dark = column(models.ventricle_mm), column(models.contraction), column(models.darkening)
        near = ((frame["gain"] >= NEAR_MIN_GAIN) & (distance <= NEAR_MM)).to_numpy()  # (r',)
        ventricles = frame["region"].isin(VENTRICLE_LABELS.values()).to_numpy()  # (r',)
        ventricle_gain = frame["gain"][ventricles].max() if ventricles.any() else np.inf
        above = (frame["gain"] > ventricle_gain).to_numpy()  # (r',)
        rivals = (frame["gain"] >= BRIGHTENING_GAIN_SHARE * ventricle_gain).to_numpy()  # (r',)
        own = ((share >= CONTRACTION_MIN) | (dark <= DARKENING_MAX) | ((dark >= BRIGHTENING_MIN) & rivals)
               | (above & (ventricle_gain >= NEAR_MIN_GAIN)))  # (r',)
        expansion, pull = column(models.expansion), column(models.pull)
        puller = (np.full(len(models.regions), -1) if models.puller is None else models.puller)[keep]  # (r',)
        enlarged = pull > expansion  # (r',) a ventricle that follows a neighbour's pull more than its own growth
        gain_near, gain_far = (column(None if m is None else m.gains.mean(axis=0)) for m in (models.near, models.far))
        spill = (pull > share) & (gain_near > 0) & (gain_far < SPILL_RATIO * gain_near)  # (r',) NaN: False
        demoted = (near & ~own) | enlarged | spill  # (r',) no change of its own shown
        frame = frame.assign(ventricle_mm=distance, near_ventricles=near, contraction=share, darkening=dark,
                             above_ventricles=above, rivals_ventricles=rivals, expansion=expansion, pull=pull,
                             pulled_by=[models.regions.names[i] if i >= 0 else "" for i in puller],
                             enlarged_by_neighbour=enlarged, gain_near=gain_near, gain_far=gain_far,
                             spill_over=spill, demoted=demoted)
        gains = models.gains[:, keep]  # (s, r')
        boot = None  # (B, r') bootstrap evidence, with contraction scores
        if models.contraction_scores is not None and models.ages is not None:
            grows = (frame["gain"] >= NEAR_MIN_GAIN).to_numpy() & (expansion >= growth_margin * np.nan_to_num(pull))
            push = bool((ventricles & grows).any())  # a lateral ventricle grows of its own (no neighbour: no pull)
            scores = (models.falloff_scores if push and models.falloff_scores is not None
                      else models.contraction_scores)[:, keep]  # (s, r')
            t, signed = age_t(scores, models.ages), np.abs(dark) < -DARKENING_MAX  # (r',): NaN darkening unsigned
            se = (frame["ci_high"] - frame["ci_low"]).to_numpy() / (2 * ndtri(0.5 + level / 2))  # (r',) gain's SE
            frame = frame.assign(contraction_t=t, push_falloff=push,
                                 evidence=evidence(frame["gain"].to_numpy(), se, t, signed))
            weights = bootstrap_weights(len(gains), n_boot, seed)  # (B, s)
            boot = evidence(weights @ gains / len(gains), se, age_t(scores, models.ages, weights), signed)
        for group, offset in ((~demoted, 0), (demoted, int((~demoted).sum()))):  # ranks counted within each group
            if group.any():
                ranks = (bootstrap_intervals(gains[:, group], n_boot, level, seed)[2:] if boot is None
                         else rank_intervals(boot[:, group], level)) + offset  # (2, group)
                frame.loc[group, ["rank_low", "rank_high"]] = ranks.T
    frame = sort_regional(frame, "report").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame


def evidence(gain: np.ndarray, se: np.ndarray, t: np.ndarray, signed: np.ndarray | bool = False) -> np.ndarray:
    """A region's evidence of its own ageing: its gain over the gain's standard error ``se`` (0 where ``se`` is 0) plus
    its contraction t where ``signed`` (a map that does not change uniformly: a negative t says its tissue is stretched)
    and the t's positive part elsewhere (a darkening's t is negative too), 0 where the t is NaN; any shapes that
    broadcast (docs/report.md, "Contraction evidence: a matched filter", "Contraction evidence beside a push")."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, gain / se, 0.0)
    return z + np.where(np.isnan(t), 0.0, np.where(signed, t, np.maximum(t, 0.0)))


def sort_regional(table: pd.DataFrame, order: Literal["report", "gain", "bilateral"]) -> pd.DataFrame:
    """A regional table's rows in the report's order (``"report"``: by decreasing evidence (:func:`evidence`), or
    gain without contraction scores, the demoted regions after the others when the table marks them), by decreasing
    gain alone (``"gain"``), or by decreasing bilateral gain with a structure's rows together, each structure's by
    decreasing gain (``"bilateral"``: a candidate order that did not beat the gain order on fresh cohorts;
    docs/report.md, "A bilateral order")."""
    first = "evidence" if "evidence" in table else "gain"
    keys = {"report": ["demoted", first] if "demoted" in table else [first], "gain": ["gain"],
            "bilateral": ["bilateral_gain", "structure", "gain"]}[order]
    return table.sort_values(keys, ascending=[k in ("demoted", "structure") for k in keys], kind="stable")

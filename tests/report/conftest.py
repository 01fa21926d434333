"""A report's collected data without a model: a box atlas in MNI space, routing that follows the x axis (so the
experts specialise), known region contributions with size-matched nulls and a planted-effect truth; analysed by the
real analysis stage."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainage.attribution.aggregate import RoutingAggregator
from brainage.attribution.regional import (BRIGHTENING_GAIN_SHARE, BRIGHTENING_MIN, CONTRACTION_MIN, DARKENING_MAX,
                                           NEAR_MIN_GAIN, SPILL_RATIO)
from brainage.attribution.ranking import RegionContributions
from brainage.attribution.validation import GroundTruth
from brainage.contracts.routing import LayerRecord
from brainage.predict import OUTPUT_COLUMNS
from brainage.reference.atlas import Atlas
from brainage.report.analysis import ReportResult, analyse
from brainage.report.collect import AttributionRun, Collected, ReportInputs
from brainage.report.progress import StageProgress
from brainage.report.settings import GROUP_COLUMN, ReportSettings

SHAPE, SPACING, GRID = (16, 20, 16), 9.0, (4, 5, 4)  # 144 x 180 x 144 mm around MNI's origin, 4^3-voxel tokens
NUM_EXPERTS, SUBJECTS, SHUFFLES = 3, 5, 20
# region name -> (label, age contribution planted in the region contributions, years)
REGIONS = {"L-front": (1, 0.9), "R-front": (2, 0.4), "L-back": (3, -1.2), "R-back": (4, -0.3), "L-mid": (5, 0.05),
           "R-mid": (6, -0.02)}
CONTROL = -0.7  # the null regions' joint contribution
GROUPS = ["CN", r"$\frac{1}{$", "CN", "<b>AD</b>", "CN"]  # mathtext and markup in user strings


def grid_affine() -> np.ndarray:
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = [-72.0, -108.0, -54.0]
    return affine


def box_atlas() -> Atlas:
    """Six boxes (left/right x front/middle/back) on the model grid itself."""
    labels = np.zeros(SHAPE, dtype=np.int32)
    x_half, y_thirds = SHAPE[0] // 2, np.array_split(np.arange(3, SHAPE[1] - 3), 3)
    for name, (label, _) in REGIONS.items():
        side = slice(3, x_half) if name.startswith("L") else slice(x_half, SHAPE[0] - 3)
        part = y_thirds[{"back": 0, "mid": 1, "front": 2}[name.split("-")[1]]]
        labels[side, part[0] : part[-1] + 1, 4:12] = label
    return Atlas(labels, grid_affine(), {label: name for name, (label, _) in REGIONS.items()})


def _routing(rng: np.random.Generator, layer: int) -> LayerRecord:
    n = int(np.prod(GRID))
    x = np.arange(n) // (GRID[1] * GRID[2])  # token's x index: n = (i * gy + j) * gz + l
    first = np.where(rng.random(n) < 0.8, x % NUM_EXPERTS, rng.integers(0, NUM_EXPERTS, n))  # (n,) mostly by x
    second = (first + 1) % NUM_EXPERTS
    gates = np.stack([np.full(n, 0.7), np.full(n, 0.3)], axis=1)  # (n, 2)
    probs = np.full((n, NUM_EXPERTS), 1.0 / NUM_EXPERTS)
    return LayerRecord(layer, np.stack([first, second], axis=1), gates, probs, GRID)


def _predictions() -> pd.DataFrame:
    ages = [30.0, 45.0, math.nan, 70.0, 55.0]
    predicted = [33.0, 44.0, 52.0, 66.0, 57.5]
    rows = [{"subject_id": f"sub-{i:02d}", "session": "", "path": f"/data/sub-{i:02d}.nii.gz", "age": a,
             "predicted_age": p, "brain_age_gap": p - a, "status": "ok", "error": "", GROUP_COLUMN: GROUPS[i]}
            for i, (a, p) in enumerate(zip(ages, predicted))]
    rows.append({"subject_id": "sub-bad", "session": "", "path": "/data/bad.nii.gz", "status": "error",
                 "error": "not a NIfTI file", GROUP_COLUMN: "CN"})
    return pd.DataFrame(rows).reindex(columns=[*OUTPUT_COLUMNS, "sex", "site", GROUP_COLUMN])


def _attribution(agg: RoutingAggregator) -> AttributionRun:
    rng = np.random.default_rng(1)
    contribution = np.array([REGIONS[name][1] for name in agg.regions.names])  # (r,)
    values = contribution + 0.05 * rng.standard_normal((SUBJECTS, len(contribution)))  # (s, r)
    sizes = np.full(len(contribution), 64.0)
    nulls = 0.05 * rng.standard_normal((SUBJECTS, 4))  # (s, q): no effect outside the regions
    contributions = RegionContributions("occlusion", agg.regions, values, values, np.zeros_like(values), sizes, sizes,
                                        nulls, np.full(4, 64.0), np.zeros(4, dtype=int), "the mean of the 2 youngest",
                                        1.0)
    spread = 0.1 * rng.standard_normal(SUBJECTS)
    effect = np.stack([(0.9 + 0.4) * np.ones(SUBJECTS), CONTROL + spread - spread.mean()], axis=1)  # (s, q)
    return AttributionRun(contributions, f"{SUBJECTS} scans; method: occlusion; reference: the mean of the 2 youngest",
                          ("frontal_atrophy", "null regions (control)"), (2, 2), np.array([128, 128]), effect)


def make_settings(out: Path, **changes) -> ReportSettings:
    base = dict(inputs=("cohort/",), out=out, model="tiny.ckpt", group_by="diagnosis", shuffles=SHUFFLES,
                subject_figures=1)
    return ReportSettings(**{**base, **changes})


@pytest.fixture(scope="session")
def planted() -> dict:
    """The known numbers of the synthetic result (tests read them here, not by importing this conftest)."""
    return {"control": CONTROL, "groups": GROUPS, "num_experts": NUM_EXPERTS, "shuffles": SHUFFLES}


@pytest.fixture(scope="session")
def collected() -> Collected:
    atlas = box_atlas()
    agg = RoutingAggregator(atlas, NUM_EXPERTS)
    rng = np.random.default_rng(0)
    for s in range(SUBJECTS):
        agg.add(f"sub-{s:02d}", SHAPE, grid_affine(), [_routing(rng, 1), _routing(rng, 3)])
    truth = GroundTruth(Path("cohort/ground_truth.json"), ("L-front", "R-front"), ("L-mid", "R-mid"),
                        effects=(("frontal_atrophy", ("L-front", "R-front")),))
    inputs = ReportInputs(None, pd.DataFrame(), atlas, truth, (GROUP_COLUMN,))
    return Collected(inputs, agg, _predictions(), list(range(SUBJECTS)), _attribution(agg))


@pytest.fixture(scope="session")
def result(collected, tmp_path_factory) -> ReportResult:
    settings = make_settings(tmp_path_factory.mktemp("out"))
    return analyse(collected, settings, StageProgress(["analyse"], stream=io.StringIO()))


def assert_zone_rule(table: pd.DataFrame) -> None:
    """A regional table's demotions re-derived from its own columns: a region near the ventricles is demoted unless it
    contracts (share), darkens throughout, gains more than growing ventricles, or brightens throughout with at least
    ``BRIGHTENING_GAIN_SHARE`` of their gain; a lateral ventricle is demoted when a neighbour's pull explains more of
    its slope map than its own expansion; any region is demoted when its map follows a neighbour's pull more than its
    own contraction and its part far from that neighbour tells under ``SPILL_RATIO`` of what its near part tells
    (``brainage.attribution.regional.rank_regional``)."""
    ventricle_gain = table.loc[table["region"].str.endswith("lateral-ventricle"), "gain"].max()
    above = table["gain"] > ventricle_gain  # tells more age than the ventricles
    rivals = table["gain"] >= BRIGHTENING_GAIN_SHARE * ventricle_gain  # nearly as much
    assert (table["above_ventricles"] == above).all() and (table["rivals_ventricles"] == rivals).all()
    own = ((table["contraction"] >= CONTRACTION_MIN) | (table["darkening"] <= DARKENING_MAX)
           | ((table["darkening"] >= BRIGHTENING_MIN) & rivals) | (above & (ventricle_gain >= NEAR_MIN_GAIN)))
    enlarged = table["pull"] > table["expansion"]  # a lateral ventricle that a neighbour's pull enlarges
    assert (table["enlarged_by_neighbour"] == enlarged).all()
    spill = (table["pull"] > table["contraction"]) & (table["gain_near"] > 0) & (
        table["gain_far"] < SPILL_RATIO * table["gain_near"])  # its gain lies beside the neighbour that pulls it
    assert (table["spill_over"] == spill).all()
    assert (table["demoted"] == ((table["near_ventricles"] & ~own) | enlarged | spill)).all()

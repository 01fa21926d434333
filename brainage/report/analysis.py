"""Analyse stage of `brainage report`: what was collected -> one immutable :class:`ReportResult`.

Pure computation on numpy/pandas (``brainage.attribution``): region x expert tables, enrichment and mutual
information per MoE layer (ERMoE, arXiv 2511.10971), per-expert frequency maps, the region ranking with bootstrap
intervals and size-matched-null correction (``brainage.attribution.ranking``) and its map, the planted-effect table
with intervals and precision@k against ground truth, group summaries and per-subject expert maps. No model
call, no file written, no HTML: the render stage draws every section from the result alone, the write stage saves
its tables and volumes.

Letter legend: e experts, r atlas regions, (X, Y, Z) model-grid voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from brainage.attribution.aggregate import RoutingAggregator
from brainage.attribution.groups import bag_by_group, expert_share_by_group
from brainage.attribution.mapping import patch_shape, token_grid_to_voxels
from brainage.attribution.ranking import interval_table, rank_regions
from brainage.attribution.regional import rank_regional, sort_regional
from brainage.attribution.stats import MutualInformationTest, enrichment, shuffled_mutual_information
from brainage.attribution.validation import GroundTruth, precision_at_k
from brainage.report.progress import StageProgress
from brainage.report.settings import GROUP_COLUMN, ReportSettings

if TYPE_CHECKING:  # collect runs the model (torch); analysis and render import neither
    from brainage.report.collect import AttributionRun, Collected

__all__ = ["LayerResult", "CohortSummary", "RegionResult", "ValidationResult", "GroupResult", "SubjectView",
           "Provenance", "ReportResult", "analyse", "region_volume"]


@dataclass(frozen=True)
class LayerResult:
    """One MoE layer: region x expert tables, enrichment, expert-region MI and per-expert frequency maps."""

    layer: int
    top1: pd.DataFrame  # region_expert_frame of top-1 counts (voxel-subjects)
    gated: pd.DataFrame  # the same, gate-weighted top-k
    enrichment: pd.DataFrame  # one row per (region, expert)
    mi: MutualInformationTest
    frequency: np.ndarray  # (X, Y, Z, e) share of subjects whose voxel goes (top-1) to each expert


@dataclass(frozen=True)
class CohortSummary:
    scans: int  # input rows
    predicted: int  # rows with status ok
    age: np.ndarray  # (m,) chronological ages of the predicted scans with a known age
    predicted_age: np.ndarray  # (m,) their predicted ages
    failed: pd.DataFrame  # subject_id, path, error of the failed rows

    @property
    def mae(self) -> float:
        return float(np.abs(self.predicted_age - self.age).mean()) if len(self.age) else float("nan")

    @property
    def mean_gap(self) -> float:
        return float((self.predicted_age - self.age).mean()) if len(self.age) else float("nan")

    @property
    def pearson_r(self) -> float | None:
        """Pearson r of predicted and true age (None under 3 scans)."""
        return float(np.corrcoef(self.age, self.predicted_age)[0, 1]) if len(self.age) > 2 else None


@dataclass(frozen=True)
class RegionResult:
    """Regional age contribution: the ranked table, its map and (with ground truth) each planted effect at once.

    ``table``: ``brainage.attribution.ranking.rank_regions`` with ``region`` named ``name``: name, structure,
    hemisphere, contribution, ci_low, ci_high, rank, rank_low, rank_high, null_corrected (contribution minus the
    size-matched null's), null_ci_low, null_ci_high, t, own, shell, n_voxels, n_attributed, method; ranked by
    null_corrected.
    """

    table: pd.DataFrame
    volume: np.ndarray  # (X, Y, Z) contribution of each voxel's region in years, 0 outside the regions
    described: str  # scans, method and reference image, in words
    effects: pd.DataFrame | None  # effect, regions, voxels, contribution, ci_low, ci_high, share_positive, covers_zero
    # rows, "null regions (control)" among them


@dataclass(frozen=True)
class RegionalResult:
    """Model-free regional age models (``brainage.attribution.regional``): where the scans change with age.

    ``table``: ``rank_regional`` in the report's order (rank, region, structure, hemisphere, gain, ci_low, ci_high,
    mae, rank_low, rank_high, n_voxels: each region's interior; the bilateral_* columns: its structure's mean over
    both hemispheres; gain_all, gain_all_low, gain_all_high, n_voxels_all: all its voxels; with the lateral
    ventricles in the atlas, gain_away, gain_away_low, gain_away_high, n_voxels_away: the interior less the voxels
    near them, and ventricle_mm, near_ventricles, contraction, darkening, above_ventricles, rivals_ventricles,
    expansion, pull, pulled_by, enlarged_by_neighbour, gain_near, gain_far, spill_over and demoted: the interior's
    distance to them, the mark, the slope-map checks, a gain above theirs and one of at least BRIGHTENING_GAIN_SHARE
    of it, a ventricle's expansion share, each region's pull share with the neighbour that pulls it, the gains near
    and far from that neighbour, and the marked rows without a change of their own, the ventricles that a
    neighbour's pull enlarges and the spill-over rows, listed last) plus model_rank, the region's rank in the
    attribution table (NaN without attribution).
    """

    table: pd.DataFrame
    volume: np.ndarray  # (X, Y, Z) gain of each voxel's region in years, 0 outside the regions
    ageing_volume: np.ndarray  # (X, Y, Z) the same, 0 also where the gain's interval reaches 0 (the page's map)
    described: str  # scans and folds, in words
    subjects: int  # scans the models were fitted on


@dataclass(frozen=True)
class ValidationResult:
    """Attribution against the regions a synthetic cohort planted its age effects in."""

    truth: GroundTruth
    missing: tuple[str, ...]  # planted names the atlas does not have
    precision: pd.DataFrame | None  # ranking, planted[, planted or displaced]; None without occlusion
    k: int
    chance: float


@dataclass(frozen=True)
class GroupResult:
    column: str  # the --group-by column
    bag: pd.DataFrame  # bag_by_group rows
    shares: pd.DataFrame  # expert_share_by_group rows
    gaps: dict[str, list[float]]  # group -> brain-age gaps of its scans with a known age


@dataclass(frozen=True)
class SubjectView:
    title: str
    predicted_age: float
    age: float  # NaN = unknown
    layer: int
    expert_map: np.ndarray  # (X, Y, Z) top-1 expert per voxel on the subject's grid
    affine: np.ndarray  # (4, 4) voxel -> MNI mm of that grid
    dominant: pd.DataFrame  # region, dominant expert, share


@dataclass(frozen=True)
class Provenance:
    model: str | None
    inputs: tuple[str, ...]
    routing: str | None  # the saved-routing folder, None when the model routed the inputs
    run_id: str | None


@dataclass(frozen=True)
class ReportResult:
    """Everything the report shows, computed once; render and write read it and nothing else."""

    predictions: pd.DataFrame  # one row per input (predict's columns, sex, site, group)
    cohort: CohortSummary
    num_experts: int
    num_regions: int
    shape: tuple[int, int, int]  # main model grid
    affine: np.ndarray  # (4, 4) its voxel -> MNI mm
    layers: tuple[LayerResult, ...]  # ascending MoE layer
    regions: RegionResult | None  # None with --no-occlusion
    regional: RegionalResult | None  # None when the regional age models did not run (regional_note says why)
    regional_note: str
    validation: ValidationResult | None  # None without ground truth
    groups: GroupResult | None  # None without --group-by
    subjects: tuple[SubjectView, ...]
    shuffles: int
    provenance: Provenance


def _cohort(predictions: pd.DataFrame) -> CohortSummary:
    ok = predictions[predictions["status"] == "ok"]
    age = pd.to_numeric(ok["age"], errors="coerce")
    pred = pd.to_numeric(ok["predicted_age"], errors="coerce")
    known = (age.notna() & pred.notna()).to_numpy()
    failed = predictions[predictions["status"] != "ok"][["subject_id", "path", "error"]]
    return CohortSummary(len(predictions), len(ok), age.to_numpy(float)[known], pred.to_numpy(float)[known], failed)


def _layer(agg: RoutingAggregator, layer: int, g: int, settings: ReportSettings) -> LayerResult:
    geo = agg.geometries[g]
    voxels_per_token = float(np.prod(patch_shape(geo.shape, agg.grid(layer))))
    mi = shuffled_mutual_information([agg.token_regions(s, layer) for s in agg.subjects],
                                     [s.top1[layer] for s in agg.subjects], agg.num_experts, settings.shuffles,
                                     settings.seed)
    return LayerResult(layer, agg.table(layer, "top1"), agg.table(layer, "gated"),
                       enrichment(agg.counts(layer, "top1"), agg.regions, voxels_per_token), mi,
                       agg.frequency_maps(layer, g))


def region_volume(table: pd.DataFrame, names: tuple[str, ...], labels: tuple[int, ...], regions: np.ndarray,
                  column: str) -> np.ndarray:
    """A per-region value painted on the model grid: (X, Y, Z) float32, 0 on background and unlisted regions.

    Rows are matched to atlas rows by ``label`` when the table has it, else by region ``name`` (or ``region``).
    """
    lookup = np.zeros(len(names) + 1, dtype=np.float32)  # atlas row -> value; index -1 = background
    if "label" in table.columns:
        rows = {label: i for i, label in enumerate(labels)}
        keys = [rows.get(int(label)) for label in table["label"]]
    else:
        rows = {name: i for i, name in enumerate(names)}
        keys = [rows.get(str(name)) for name in table["name" if "name" in table.columns else "region"]]
    for key, value in zip(keys, table[column]):
        if key is not None:
            lookup[key] = value
    return lookup[regions]


def _regions(agg: RoutingAggregator, g: int, run: AttributionRun, seed: int) -> RegionResult:
    regions = agg.geometries[g].regions  # (X, Y, Z) region rows, -1 = background
    table = rank_regions(run.contributions, seed=seed).rename(columns={"region": "name"})
    volume = region_volume(table, agg.regions.names, agg.regions.labels, regions, "contribution")
    effects = None
    if run.effect_values is not None:
        effects = interval_table(run.effect_values, run.effect_names, seed=seed).rename(columns={"name": "effect"})
        effects.insert(1, "regions", list(run.effect_regions))
        effects.insert(2, "voxels", np.asarray(run.effect_voxels, dtype=int))
    return RegionResult(table, volume, run.described, effects)


def _regional(agg: RoutingAggregator, g: int, collected: Collected, regions: RegionResult | None, seed: int
              ) -> RegionalResult:
    table = rank_regional(collected.regional, seed=seed)
    model_rank = {} if regions is None else dict(zip(regions.table["name"], regions.table["rank"]))
    table["model_rank"] = [model_rank.get(name, np.nan) for name in table["region"]]
    rows = agg.geometries[g].regions  # (X, Y, Z) region rows, -1 = background
    volume = region_volume(table, agg.regions.names, agg.regions.labels, rows, "gain")
    surely = table.assign(gain=table["gain"].where(table["ci_low"] > 0, 0.0))
    ageing = region_volume(surely, agg.regions.names, agg.regions.labels, rows, "gain")
    return RegionalResult(table, volume, ageing, collected.regional_note, len(collected.regional.baseline_errors))


def _validation(truth: GroundTruth, names: tuple[str, ...], regions: RegionResult | None,
                regional: RegionalResult | None) -> ValidationResult:
    missing = tuple(sorted(set(truth.regions) - set(names)))
    k = len(truth.regions)
    rankings = {}
    if regions is not None:
        table = regions.table
        name = "region" if "region" in table.columns else "name"
        rankings = {"model attribution: null-corrected contribution (primary)": table.sort_values(
                        "rank", kind="stable")[name],
                    "model attribution: contribution without null correction": table.sort_values(
                        "contribution", ascending=False, kind="stable")[name]}
    if regional is not None:
        rankings["regional age models (model-free, interiors)"] = regional.table["region"]
        if "demoted" in regional.table:
            rankings["regional age models, by gain alone (near-ventricle regions not demoted)"] = sort_regional(
                regional.table, "gain")["region"]
        rankings["regional age models, all voxels"] = regional.table.sort_values(
            "gain_all", ascending=False, kind="stable")["region"]
        rankings["regional age models, bilateral order"] = sort_regional(regional.table, "bilateral")["region"]
    if not rankings or not k:
        return ValidationResult(truth, missing, None, k, float("nan"))
    regions_ranked = len(next(iter(rankings.values())))
    lenient = {*truth.regions, *truth.indirect_regions}
    rows = [{"ranking": label, "planted": precision_at_k(ranked, truth.regions),
             **({"planted or displaced": precision_at_k(ranked, lenient, k)} if truth.indirect_regions else {})}
            for label, ranked in rankings.items()]
    return ValidationResult(truth, missing, pd.DataFrame(rows), k, k / regions_ranked)


def _groups(collected: Collected, column: str) -> GroupResult:
    predictions = collected.predictions
    shares = expert_share_by_group(collected.aggregator,
                                   [str(predictions[GROUP_COLUMN].iloc[i]) for i in collected.subject_rows])
    bag = bag_by_group(predictions, GROUP_COLUMN)
    ok = predictions[predictions["status"] == "ok"]
    gaps = pd.to_numeric(ok["brain_age_gap"], errors="coerce")
    by_group = {g: gaps[(ok[GROUP_COLUMN].astype(str) == g).to_numpy()].dropna().tolist() for g in bag["group"]}
    return GroupResult(column, bag, shares, by_group)


def _subjects(collected: Collected, count: int, layer: int) -> tuple[SubjectView, ...]:
    agg, views = collected.aggregator, []
    for subject, index in list(zip(agg.subjects, collected.subject_rows))[:count]:
        row = collected.predictions.iloc[index]
        counts = agg.subject_counts(subject, layer)  # (r, e)
        present = counts.sum(axis=1) > 0
        dominant = pd.DataFrame({"region": np.asarray(agg.regions.names)[present],
                                 "dominant expert": counts[present].argmax(axis=1),
                                 "share": counts[present].max(axis=1) / counts[present].sum(axis=1)})
        geo = agg.geometries[subject.geometry]
        expert_map = token_grid_to_voxels(subject.top1[layer], agg.grid(layer), geo.shape)  # (X, Y, Z)
        age = pd.to_numeric(pd.Series([row["age"]]), errors="coerce").iloc[0]
        views.append(SubjectView(f"{row['subject_id']} {row['session'] or ''}".strip(), float(row["predicted_age"]),
                                 float(age), layer, expert_map, geo.affine, dominant))
    return tuple(views)


def analyse(collected: Collected, settings: ReportSettings, progress: StageProgress) -> ReportResult:
    """Compute every table, statistic and volume of the report (see the module docstring)."""
    agg = collected.aggregator
    g = agg.main_geometry()
    geo = agg.geometries[g]
    layers = []
    with progress.stage("analyse", len(agg.layers), "MoE layers") as stage:
        for layer in agg.layers:
            layers.append(_layer(agg, layer, g, settings))
            stage.advance()
        regions = _regions(agg, g, collected.attribution, settings.seed) if collected.attribution is not None else None
        regional = _regional(agg, g, collected, regions, settings.seed) if collected.regional is not None else None
        truth = collected.inputs.truth
        return ReportResult(
            predictions=collected.predictions,
            cohort=_cohort(collected.predictions),
            num_experts=agg.num_experts,
            num_regions=len(agg.regions),
            shape=geo.shape,
            affine=geo.affine,
            layers=tuple(layers),
            regions=regions,
            regional=regional,
            regional_note=collected.regional_note,
            validation=_validation(truth, agg.regions.names, regions, regional) if truth is not None else None,
            groups=_groups(collected, settings.group_by) if settings.group_by else None,
            subjects=_subjects(collected, settings.subject_figures, agg.layers[-1]),
            shuffles=settings.shuffles,
            provenance=Provenance(settings.model, settings.inputs, None if settings.routing is None
                                  else str(settings.routing), settings.run_id),
        )

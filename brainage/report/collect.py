"""Collect stage of `brainage report`: everything that reads user files or runs the model.

Reads the inputs (``brainage.data.inputs``), the atlas and the ground truth; runs the model once over the inputs with
routing (``brainage.predict.predict_iter(return_routing=True)``, ERMoE routing, arXiv 2511.10971), or reads the
routing maps `brainage predict --save-routing DIR` saved; then attributes the predicted age of the first scans to
atlas regions with ``--attribution-method`` (:mod:`brainage.report.attribute`, Captum; default band occlusion) and,
with ground truth, occludes every planted effect's regions at once. Routing goes straight into a
:class:`~brainage.attribution.aggregate.RoutingAggregator` (memory O(tokens) per subject); preprocessed images are
kept only for the attributed scans and dropped once attribution is done; the atlas-labelled voxels (float16) of up
to ``--regional-subjects`` scans with a known age (``--regional-input``, else the inputs), prepared by
``--regional-chain`` (default: the model's chain with nonlinear normalisation), feed the model-free regional age
models (:mod:`brainage.attribution.regional`). The model is only called, never modified
(routing under ``torch.inference_mode``; attribution needs gradients for the gradient methods). Nothing here writes
files: :mod:`brainage.report.write` does.

Routing arrives in one form whether the model runs here or `brainage predict --save-routing` saved it: the routing
record of ``brainage.contracts.routing`` (:class:`ScanRouting` of :class:`LayerRecord` per MoE layer).

Letter legend: s attributed scans, m images per model call, r atlas regions, q region sets (planted effects),
(X, Y, Z) model-grid voxels.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from nibabel.affines import voxel_sizes

from brainage.attribution.aggregate import AtlasLike, RoutingAggregator
from brainage.attribution.contraction import SlopeMaps
from brainage.attribution.groups import read_group_column
from brainage.attribution.mapping import RegionIndex
from brainage.attribution.ranking import RegionContributions
from brainage.attribution.regional import (CAP_FROM_SUBJECTS, MARGIN_MM, MIN_SUBJECTS, VENTRICLE_MARGIN_MM,
                                           RegionalAgeModels, fit_regional_models, interior_rows, ventricle_rows,
                                           voxel_cap, with_slope_checks, with_spill_checks)
from brainage.attribution.validation import GroundTruth, find_ground_truth, load_ground_truth
from brainage.contracts.routing import ScanRouting, load_routing, routing_filename
from brainage.data.inputs import read_inputs, sex_code, skipped_lines
from brainage.data.preprocessing import Preprocessing
from brainage.predict import OUTPUT_COLUMNS, LoadedModel, SubjectResult, load_model, predict_iter, result_row
from brainage.predict.decode import explain_failure
from brainage.reference.atlas import load_atlas, load_default_atlas
from brainage.report.attribute import AgeForward, attribute_regions, set_contributions
from brainage.report.progress import StageProgress
from brainage.report.settings import GROUP_COLUMN, REGIONAL_CHAINS, ReportSettings

__all__ = ["ReportInputs", "AttributionRun", "Collected", "read_report_inputs", "read_saved_routing", "read_chain",
           "collect"]

ATTRIBUTION_BATCH = 8  # images per model call of attribution

@dataclass(frozen=True)
class ReportInputs:
    """The resolved inputs: the model (None with saved routing only), one row per scan, atlas and ground truth."""

    model: LoadedModel | None
    table: pd.DataFrame  # read_inputs columns (+ GROUP_COLUMN with --group-by)
    atlas: AtlasLike
    truth: GroundTruth | None
    extra_columns: tuple[str, ...]  # input columns copied into the predictions table
    regional_chain: Preprocessing | None = None  # prepares the regional age models' scans apart (regional_chain())
    regional_table: pd.DataFrame | None = None  # --regional-input rows (read_inputs columns); None: ``table``


@dataclass(frozen=True)
class AttributionRun:
    """Region attribution of the kept scans on the cohort's main geometry (``brainage.report.attribute``)."""

    contributions: RegionContributions  # (s, r) per-subject region contributions and their size-matched nulls
    described: str  # the scans, the method and the reference image, in words
    effect_names: tuple[str, ...] = ()
    effect_regions: tuple[int, ...] = ()  # regions of each planted-effect set found in the atlas
    effect_voxels: np.ndarray | None = None  # (q,) voxels of each set on the model grid
    effect_values: np.ndarray | None = None  # (s, q) contribution (years) when all regions of a set are occluded


@dataclass
class Collected:
    """What the model (or the saved routing) produced for the report, before any analysis."""

    inputs: ReportInputs
    aggregator: RoutingAggregator | None
    predictions: pd.DataFrame  # predict's OUTPUT_COLUMNS plus sex, site and the extra columns
    subject_rows: list[int] = field(default_factory=list)  # predictions row of each aggregator subject
    attribution: AttributionRun | None = None
    regional: RegionalAgeModels | None = None
    regional_note: str = ""  # why the regional age models did not run, or what they ran on


@dataclass
class _Kept:
    """Preprocessed inputs kept for attribution, with what the model needs beside the image."""

    images: list[np.ndarray] = field(default_factory=list)  # (X, Y, Z)
    geometry: list[int] = field(default_factory=list)
    sex: list[object] = field(default_factory=list)
    age: list[float] = field(default_factory=list)  # NaN = unknown

    def add(self, result: SubjectResult, geometry: int, limit: int) -> None:
        if result.image is not None and len(self.images) < limit:
            self.images.append(result.image)
            self.geometry.append(geometry)
            self.sex.append(result.row.get("sex"))
            age = result.row.get("age")
            self.age.append(math.nan if age is None else float(age))


@dataclass
class _Regional:
    """The atlas-labelled voxels (float16) of scans with a known age, per geometry, for the regional age models, and
    the running sums of their whole images for the slope-map checks."""

    limit: int
    voxels: dict[int, list[np.ndarray]] = field(default_factory=dict)  # geometry -> [(n,)]
    ages: dict[int, list[float]] = field(default_factory=dict)
    slopes: dict[int, SlopeMaps] = field(default_factory=dict)

    def add(self, result: SubjectResult, geometry: int, regions: np.ndarray) -> None:
        age = result.row.get("age")
        if result.image is None or age is None or math.isnan(float(age)):
            return
        kept = self.voxels.setdefault(geometry, [])
        if len(kept) < self.limit:
            kept.append(np.asarray(result.image)[regions >= 0].astype(np.float16))
            self.ages.setdefault(geometry, []).append(float(age))
            self.slopes.setdefault(geometry, SlopeMaps()).add(np.asarray(result.image), float(age))


def _fill_ages(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Unknown ages of ``table`` from the 'age' column of a predictions/manifest CSV (matched on path, else id)."""
    if not path.is_file():
        raise FileNotFoundError(f"--predictions file not found: {path}")
    other = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    if "age" not in other.columns:
        raise ValueError(f"{path}: no 'age' column; found columns {list(other.columns)}")
    key = "path" if "path" in other.columns else "subject_id"
    if key not in other.columns:
        raise ValueError(f"{path}: needs a 'path' or 'subject_id' column to match inputs; found {list(other.columns)}")
    ages = dict(zip(other[key].astype(str), pd.to_numeric(other["age"], errors="coerce")))
    table = table.copy()
    known = table["age"].astype(float)
    table["age"] = [a if not math.isnan(a) else ages.get(str(k), math.nan) for a, k in zip(known, table[key])]
    return table


def read_report_inputs(settings: ReportSettings) -> ReportInputs:
    """Load the model, read the input scans, the atlas and the ground truth (errors name the file and the fix)."""
    model = None
    if settings.model is not None:
        device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = load_model(settings.model, device, settings.tracking_uri)
    table = read_inputs(list(settings.inputs), include_failed=settings.include_failed)
    for line in skipped_lines(table.attrs.get("dropped", [])):
        print(line, file=sys.stderr)
    if table.empty:
        raise ValueError(f"no NIfTI files found in {list(settings.inputs)}")
    if settings.max_subjects:
        table = table.head(settings.max_subjects)
    if settings.predictions:
        table = _fill_ages(table, settings.predictions)
    extra: tuple[str, ...] = ()
    if settings.group_by:
        extra = (GROUP_COLUMN,)
        table = table.assign(**{GROUP_COLUMN: read_group_column(list(settings.inputs), table, settings.group_by)})
    atlas = load_atlas(settings.atlas, settings.atlas_names) if settings.atlas else load_default_atlas()
    truth_path = settings.ground_truth or find_ground_truth(list(settings.inputs))
    truth = load_ground_truth(truth_path) if truth_path else None
    regional = None
    if settings.regional_inputs and settings.regional_subjects:
        regional = read_inputs(list(settings.regional_inputs), include_failed=settings.include_failed)
        for line in skipped_lines(regional.attrs.get("dropped", [])):
            print(f"regional age models: {line}", file=sys.stderr)
        known = len(_with_age(regional))
        if known < MIN_SUBJECTS:  # asked for explicitly: refused before any work
            raise ValueError(f"--regional-input {' '.join(settings.regional_inputs)}: found {len(regional)} scans, "
                             f"{known} with a known age; the regional age models need at least {MIN_SUBJECTS} (a "
                             "folder, BIDS dataset or manifest with ages)")
    return ReportInputs(model, table, atlas, truth, extra, regional_chain(settings, model), regional)


def _with_age(table: pd.DataFrame) -> pd.DataFrame:
    """The input rows with a known age."""
    return table[pd.to_numeric(table["age"], errors="coerce").notna()]


def regional_chain(settings: ReportSettings, model: LoadedModel | None) -> Preprocessing | None:
    """The chain that prepares the regional age models' scans apart from the model's pass, or None when that pass
    keeps them (or without a model): ``--regional-chain registered`` (the model's chain with RegisterToTemplated
    added when it has none), ``model`` (the model's chain; apart only for ``--regional-input``), or a data YAML
    (:func:`read_chain`)."""
    if not settings.regional_subjects:
        return None
    if settings.regional_chain not in REGIONAL_CHAINS:
        return read_chain(Path(settings.regional_chain))
    if model is None:
        return None
    own = model.preprocessing
    chain = own.with_registration() if settings.regional_chain == "registered" else own
    return None if chain is own and not settings.regional_inputs else chain


def _chain_label(settings: ReportSettings) -> str:
    if settings.regional_chain in REGIONAL_CHAINS:
        return {"registered": "the model's chain with nonlinear normalisation", "model": "the model's chain"}[
            settings.regional_chain] + f" (--regional-chain {settings.regional_chain})"
    return Path(settings.regional_chain).name


def images_needed(settings: ReportSettings, inputs: ReportInputs) -> int:
    """Scans the report keeps preprocessed by the model's chain: for attribution, and for the regional age models
    unless another chain prepares those."""
    return max(settings.occluded_subjects, 0 if inputs.regional_chain is not None else settings.regional_subjects)


def read_saved_routing(path: Path) -> ScanRouting:
    """One scan's saved routing record (``brainage predict --save-routing``); ValueError when it has no MoE layer."""
    saved = load_routing(path)
    if not saved.layers:
        raise ValueError("it holds no MoE layer")
    return saved


def _output_row(result: SubjectResult, extra_columns: Sequence[str]) -> dict:
    row = result_row(result)
    row.update({column: result.row.get(column) for column in ("sex", "site", *extra_columns)})
    return row


def _frame(rows: list[dict], extra_columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[*OUTPUT_COLUMNS, "sex", "site", *extra_columns])


def _route_with_model(inputs: ReportInputs, keep: int, settings: ReportSettings, progress: StageProgress,
                      kept: _Kept, regional: _Regional) -> Collected:
    """Predict every input row with routing and aggregate it on the atlas; keep the first ``keep`` images, and the
    labelled voxels of the first scans with a known age for the regional age models."""
    model = inputs.model
    if model.num_experts < 1:
        raise ValueError("the model has no mixture-of-experts layer (num_experts = 0); an expert attribution report "
                         "needs an MoE model")
    collected = Collected(inputs, RoutingAggregator(inputs.atlas, model.num_experts), pd.DataFrame())
    rows: list[dict] = []
    with progress.stage("routing", len(inputs.table), "scans") as stage:
        for result in predict_iter(model, inputs.table, return_routing=True,
                                   keep_image=images_needed(settings, inputs) > 0,
                                   batch_size=settings.batch_size, num_workers=settings.workers,
                                   progress=progress.detail):
            stage.advance()
            rows.append(_output_row(result, inputs.extra_columns))
            if result.error is not None:
                continue
            if not result.routing:
                raise ValueError(f"{result.row.get('path')}: the model returned no routing; expected one entry per "
                                 "MoE layer with return_routing=True")
            subject = collected.aggregator.add(rows[-1]["subject_id"], model.preprocessing.shape, result.affine,
                                               result.routing)
            collected.subject_rows.append(len(rows) - 1)
            kept.add(result, subject.geometry, keep)
            regional.add(result, subject.geometry, collected.aggregator.geometries[subject.geometry].regions)
    collected.predictions = _frame(rows, inputs.extra_columns)
    return collected


def _routing_file(folder: Path, row: dict, index: int) -> Path | None:
    """The saved routing of one input row: ``routing_filename(subject_id, session)``, else the name with the row
    index that predict uses when two rows share a subject and session."""
    subject, session = str(row["subject_id"]), str(row.get("session") or "")
    for name in (routing_filename(subject, session), routing_filename(subject, session, index)):
        if (folder / name).is_file():
            return folder / name
    return None


def _route_saved(inputs: ReportInputs, folder: Path, progress: StageProgress) -> Collected:
    """Aggregate the routing maps `brainage predict --save-routing FOLDER` wrote for the input rows.

    Rows without a routing file (or with an unreadable one) become error rows, as in prediction. The number of experts
    is read from the files (``probs`` is (n, e)).
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"--routing folder not found: {folder} (write it with `brainage predict "
                                "--save-routing DIR`)")
    collected = Collected(inputs, None, pd.DataFrame())
    rows: list[dict] = []
    records = inputs.table.to_dict("records")
    with progress.stage("routing", len(records), "scans") as stage:
        for index, record in enumerate(records):
            stage.advance()
            path = _routing_file(folder, record, index)
            if path is None:
                expected = routing_filename(str(record["subject_id"]), str(record.get("session") or ""))
                error = f"no saved routing {folder / expected}"
            else:
                try:
                    scan, error = read_saved_routing(path), None
                except (OSError, ValueError, KeyError) as err:
                    error = f"{path}: unreadable routing ({err})"
            rows.append(_output_row(SubjectResult(record, None if error else scan.predicted_age, error),
                                    inputs.extra_columns))
            if error:
                continue
            if collected.aggregator is None:
                collected.aggregator = RoutingAggregator(inputs.atlas, int(scan.layers[0].probs.shape[-1]))
            collected.aggregator.add(rows[-1]["subject_id"], scan.shape, scan.affine, scan.layers)
            collected.subject_rows.append(len(rows) - 1)
    if collected.aggregator is None:
        reasons = "; ".join(row["error"] for row in rows[:3])
        raise ValueError(f"none of the {len(records)} inputs has a usable routing file in {folder} ({reasons})")
    collected.predictions = _frame(rows, inputs.extra_columns)
    return collected


def _keep_saved_images(collected: Collected, count: int, settings: ReportSettings, kept: _Kept,
                       regional: _Regional) -> None:
    """Preprocess the first rows with saved routing and keep ``count`` of them for attribution and the voxels of
    scans with a known age for the regional age models (one prediction pass over these rows only; rows whose image
    fails to load are skipped)."""
    model, aggregator = collected.inputs.model, collected.aggregator
    rows = collected.inputs.table.iloc[collected.subject_rows[:images_needed(settings, collected.inputs)]]
    rows = rows.reset_index(drop=True)
    for result in predict_iter(model, rows, keep_image=True, batch_size=settings.batch_size,
                               num_workers=settings.workers):
        if result.error is None:
            g = aggregator.geometry(model.preprocessing.shape, result.affine)
            kept.add(result, g, count)
            regional.add(result, g, aggregator.geometries[g].regions)


def _forward(model: LoadedModel, sex: Sequence[float]) -> AgeForward:
    """``forward(x, s)``: (m, 1, X, Y, Z) copies of scan s -> (m,) predicted ages on the CPU, differentiable."""
    covariate = torch.tensor(list(sex), dtype=torch.float32, device=model.device)  # (s,)

    def forward(x: torch.Tensor, s: int) -> torch.Tensor:
        return model.to_years(model.net(x.to(model.device), sex=covariate[s].expand(len(x))).pred).cpu()

    return forward


def _effect_sets(truth: GroundTruth | None, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Region names of each planted effect, the displaced regions and the null regions (control) found in the
    atlas; sets with none are left out."""
    if truth is None or not truth.regions or not truth.effects:
        return {}
    sets = {name: regions for name, regions in truth.effects if regions}  # global effects name no region
    sets |= {"regions displaced by the warps": truth.indirect_regions} if truth.indirect_regions else {}
    sets |= {"null regions (control)": truth.null_regions} if truth.null_regions else {}
    found = {name: tuple(n for n in regions if n in set(names)) for name, regions in sets.items()}
    return {name: regions for name, regions in found.items() if regions}


def _attribute(collected: Collected, kept: _Kept, settings: ReportSettings, progress: StageProgress
               ) -> AttributionRun:
    """Region contributions by ``--attribution-method``, then each planted effect at once, on the kept scans of the
    main geometry."""
    aggregator, model = collected.aggregator, collected.inputs.model
    g = aggregator.main_geometry()
    keep = [i for i, geo in enumerate(kept.geometry) if geo == g]
    if not keep:
        raise ValueError("attribution needs preprocessed images on the main model grid; none were kept")
    stack = np.stack([np.asarray(kept.images[i], dtype=np.float32) for i in keep])  # (s, X, Y, Z)
    ages = [kept.age[i] for i in keep]
    geometry = aggregator.geometries[g]
    regions = geometry.regions  # (X, Y, Z) region rows, -1 = background
    spacing = float(voxel_sizes(np.asarray(geometry.affine)).mean())  # mm per voxel
    forward = _forward(model, [sex_code(kept.sex[i]) for i in keep])
    with progress.stage("attribution", len(stack), "scans") as stage:
        contributions = attribute_regions(forward, stack, ages, regions, aggregator.regions,
                                          settings.attribution_method, reference=settings.occlusion_reference,
                                          spacing=spacing, batch_size=ATTRIBUTION_BATCH, seed=settings.seed,
                                          on_subject=stage.advance)
    described = (f"{len(stack)} scans; method: {settings.attribution_method}; reference: "
                 f"{contributions.reference}")
    effects = _effect_sets(collected.inputs.truth, aggregator.regions.names)
    if not effects:
        return AttributionRun(contributions, described)
    values, voxels, _ = set_contributions(forward, stack, ages, regions, aggregator.regions, effects,
                                          reference=settings.occlusion_reference, batch_size=ATTRIBUTION_BATCH)
    return AttributionRun(contributions, described, tuple(effects), tuple(len(v) for v in effects.values()),
                          np.asarray(voxels), values)


def _too_few(scans: int, source: str) -> str:
    return f"not run: {scans} scans with a known age {source}, the regional age models need at least {MIN_SUBJECTS}"


def _fit_regional(voxels: list[np.ndarray], ages: Sequence[float], slopes: SlopeMaps, regions: np.ndarray,
                  affine: np.ndarray, index: RegionIndex, settings: ReportSettings, progress: StageProgress,
                  source: str) -> tuple[RegionalAgeModels | None, str]:
    """Regional age models of s scans' (n,) labelled voxels on one grid (``regions`` (X, Y, Z) rows, ``affine``),
    with the distances to the ventricles and the contraction shares and darkenings of the same scans' ``slopes`` when
    the atlas has the ventricles (:func:`~brainage.attribution.regional.with_slope_checks`), and a sentence on what they
    ran on."""
    if len(ages) < MIN_SUBJECTS:
        return None, _too_few(len(ages), source)
    ventricles = ventricle_rows(index)
    away = (interior_rows(regions, affine, growing=ventricles, growing_margin_mm=VENTRICLE_MARGIN_MM)[regions >= 0]
            if ventricles else None)  # (n,) the interiors less the voxels near the ventricles: shown, not ranked
    with progress.stage("regional age models", 1, "fit") as stage:
        cap, stacked = voxel_cap(len(ages)), np.stack(voxels)  # (s, n)
        interior = interior_rows(regions, affine)[regions >= 0]  # (n,)
        models = fit_regional_models(stacked, ages, regions[regions >= 0], index, seed=settings.seed,
                                     interior=interior, max_voxels=cap, away=away)
        models = with_spill_checks(with_slope_checks(models, slopes, regions, affine, stacked, ages), stacked, ages,
                                   interior, regions, affine)
        stage.advance()
    return models, (f"{len(ages)} scans with a known age {source}, {models.folds}-fold cross-validation, each "
                    f"region's voxels farther than {MARGIN_MM:g} mm from other regions, "
                    + (f"at most {cap} of them per model" if cap else
                       f"all of them (fewer than {CAP_FROM_SUBJECTS} scans: no voxel cap)")
                    + (f"; beside it, the same without the voxels within {VENTRICLE_MARGIN_MM:g} mm of the lateral "
                       "ventricles" if away is not None else ""))


def _regional_models(collected: Collected, regional: _Regional, settings: ReportSettings, progress: StageProgress
                     ) -> tuple[RegionalAgeModels | None, str]:
    """The regional age models of the kept scans on the main geometry."""
    aggregator = collected.aggregator
    g = aggregator.main_geometry()
    voxels, ages = regional.voxels.get(g, []), regional.ages.get(g, [])
    geometry = aggregator.geometries[g]
    return _fit_regional(voxels, ages, regional.slopes.get(g, SlopeMaps()), geometry.regions, geometry.affine,
                         aggregator.regions, settings, progress, "on the main model grid")


def read_chain(path: Path) -> Preprocessing:
    """The deterministic preprocessing of a data YAML: its ``preprocessing:`` list with its ``spacing``/``shape``
    shorthands (``configs/data/*.yaml``, or a fit config's ``data:`` section) or a bare list, every transform and
    argument checked against the allow-list."""
    if not path.is_file():
        raise FileNotFoundError(f"--regional-chain file not found: {path}")
    section = yaml.safe_load(path.read_text())
    if isinstance(section, dict) and isinstance(section.get("data"), dict):
        section = section["data"]
    spec = section.get("preprocessing") if isinstance(section, dict) else section
    if not isinstance(spec, list):
        raise ValueError(f"{path}: no preprocessing list found; expected a data YAML with 'preprocessing:' (as in "
                         "configs/data/*.yaml), a fit config with 'data: preprocessing:', or the list itself")
    grid = {k: section.get(k) for k in ("spacing", "shape")} if isinstance(section, dict) else {}
    return Preprocessing(spec, augment=False, spacing=grid.get("spacing"),
                         shape=None if grid.get("shape") is None else tuple(grid["shape"]))


def _regional_on_chain(inputs: ReportInputs, index: RegionIndex, settings: ReportSettings, progress: StageProgress
                       ) -> tuple[RegionalAgeModels | None, str]:
    """Regional age models of the first ``--regional-subjects`` scans with a known age (of ``--regional-input``, else
    the inputs), prepared by ``--regional-chain``; scans that fail or land on another grid are skipped (named on
    stderr)."""
    chain = inputs.regional_chain
    transform = chain.deterministic()
    table = _with_age(inputs.table if inputs.regional_table is None else inputs.regional_table)
    if len(table) < MIN_SUBJECTS:  # nothing to prepare
        return None, _too_few(len(table), "in the inputs")
    voxels, ages, grid, skipped, slopes = [], [], None, [], SlopeMaps()
    with progress.stage("regional age models", min(len(table), settings.regional_subjects), "scans") as stage:
        for path, age in zip(table["path"], table["age"]):
            if len(ages) == settings.regional_subjects:
                break
            try:
                image = transform({"image": str(path)})["image"]  # (1, X, Y, Z) MetaTensor, affine voxel -> MNI mm
            except Exception as err:  # noqa: BLE001 -- a bad scan is skipped and named, the rest go on
                skipped.append(explain_failure(str(path), err))
                continue
            affine = np.asarray(image.affine, dtype=np.float64)
            if grid is None:
                grid = (affine, index.columns(inputs.atlas.resample_to(chain.shape, affine)))
            elif not np.allclose(affine, grid[0], atol=1e-3):
                skipped.append(f"{path}: the chain put it on another grid than the first scan's")
                continue
            voxels.append(image[0].numpy()[grid[1] >= 0].astype(np.float16))
            ages.append(float(age))
            slopes.add(image[0].numpy(), float(age))
            stage.advance()
    for line in skipped:
        print(f"regional age models: skipped {line}", file=sys.stderr)
    if grid is None:
        return None, f"not run: no scan with a known age could be prepared by {_chain_label(settings)}"
    source = (("" if inputs.regional_table is None else "from --regional-input, ") + f"prepared by "
              f"{_chain_label(settings)}" + (f", {len(skipped)} skipped" if skipped else ""))
    return _fit_regional(voxels, ages, slopes, grid[1], grid[0], index, settings, progress, source)


def collect(settings: ReportSettings, progress: StageProgress) -> Collected:
    """Inputs -> routing aggregated on the atlas, predictions, region attribution, regional age models (see the
    module docstring)."""
    inputs = read_report_inputs(settings)
    # with --regional-chain the regional scans are prepared apart, so the model's pass keeps no voxels for them
    regional = _Regional(0 if inputs.regional_chain is not None else settings.regional_subjects)
    keep, kept = settings.occluded_subjects, _Kept()
    if settings.routing is not None:
        collected = _route_saved(inputs, settings.routing, progress)
        if images_needed(settings, inputs) and inputs.model is not None:  # preprocessing needs the model's chain
            _keep_saved_images(collected, keep, settings, kept, regional)
    else:
        collected = _route_with_model(inputs, keep, settings, progress, kept, regional)
    if collected.aggregator is None or not collected.aggregator.subjects:
        return collected
    if keep:
        collected.attribution = _attribute(collected, kept, settings, progress)
    if settings.regional_subjects and inputs.regional_chain is not None:
        collected.regional, collected.regional_note = _regional_on_chain(inputs, collected.aggregator.regions,
                                                                         settings, progress)
    elif settings.regional_subjects and inputs.model is None:
        collected.regional_note = ("not run: with --routing and no --model no scan is preprocessed (--regional-chain "
                                   "YAML prepares them without the model)")
    elif settings.regional_subjects:
        collected.regional, collected.regional_note = _regional_models(collected, regional, settings, progress)
    return collected

"""Collect stage of `brainage report`: everything that reads user files or runs the model.

Reads the inputs (``brainage.data.inputs``), the atlas and the ground truth; runs the model once over the inputs with
routing (``brainage.predict.predict_iter(return_routing=True)``, ERMoE routing, arXiv 2511.10971), or reads the
routing maps `brainage predict --save-routing DIR` saved; then runs occlusion: every atlas region (and, with ground
truth, every planted effect's regions at once) of the first scans is replaced by a reference image and the scan is
predicted again (``brainage.attribution.occlusion`` computes; this module only calls the model). Routing goes
straight into a :class:`~brainage.attribution.aggregate.RoutingAggregator` (memory O(tokens) per subject);
preprocessed images are kept only for the occlusion scans and dropped once occlusion is done. The model is only
called, never modified (``torch.inference_mode``). Nothing here writes files: :mod:`brainage.report.write` does.

Routing arrives in one form whether the model runs here or `brainage predict --save-routing` saved it: the routing
record of ``brainage.contracts.routing`` (:class:`ScanRouting` of :class:`LayerRecord` per MoE layer).

Letter legend: s occluded scans, r atlas regions, q region sets (planted effects), (X, Y, Z) model-grid voxels.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from brainage.attribution.aggregate import AtlasLike, RoutingAggregator
from brainage.attribution.groups import read_group_column
from brainage.attribution.occlusion import occlusion_deltas, reference_image, set_occlusion_deltas
from brainage.attribution.validation import GroundTruth, find_ground_truth, load_ground_truth
from brainage.contracts.routing import ScanRouting, load_routing, routing_filename
from brainage.data.inputs import read_inputs, sex_code, skipped_lines
from brainage.predict import OUTPUT_COLUMNS, LoadedModel, SubjectResult, load_model, predict_iter, result_row
from brainage.reference.atlas import load_atlas, load_default_atlas
from brainage.report.progress import StageProgress
from brainage.report.settings import GROUP_COLUMN, ReportSettings

__all__ = ["ReportInputs", "OcclusionRun", "Collected", "read_report_inputs", "read_saved_routing", "collect"]

@dataclass(frozen=True)
class ReportInputs:
    """The resolved inputs: the model (None with saved routing only), one row per scan, atlas and ground truth."""

    model: LoadedModel | None
    table: pd.DataFrame  # read_inputs columns (+ GROUP_COLUMN with --group-by)
    atlas: AtlasLike
    truth: GroundTruth | None
    extra_columns: tuple[str, ...]  # input columns copied into the predictions table


@dataclass(frozen=True)
class OcclusionRun:
    """Model calls of occlusion on the cohort's main geometry (``brainage.attribution.occlusion``)."""

    deltas: np.ndarray  # (s, r) predicted-age change in years when each region is replaced; NaN = region off grid
    described: str  # the scans used and the reference image, in words
    effect_names: tuple[str, ...] = ()
    effect_sets: tuple[tuple[int, ...], ...] = ()  # region rows of each planted effect found in the atlas
    effect_deltas: np.ndarray | None = None  # (s, q) change when all regions of a set are replaced together


@dataclass
class Collected:
    """What the model (or the saved routing) produced for the report, before any analysis."""

    inputs: ReportInputs
    aggregator: RoutingAggregator | None
    predictions: pd.DataFrame  # predict's OUTPUT_COLUMNS plus sex, site and the extra columns
    subject_rows: list[int] = field(default_factory=list)  # predictions row of each aggregator subject
    occlusion: OcclusionRun | None = None


@dataclass
class _Kept:
    """Preprocessed inputs kept for occlusion, with what the model needs beside the image."""

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
    return ReportInputs(model, table, atlas, truth, extra)


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
                      kept: _Kept) -> Collected:
    """Predict every input row with routing and aggregate it on the atlas; keep the first ``keep`` images."""
    model = inputs.model
    if model.num_experts < 1:
        raise ValueError("the model has no mixture-of-experts layer (num_experts = 0); an expert attribution report "
                         "needs an MoE model")
    collected = Collected(inputs, RoutingAggregator(inputs.atlas, model.num_experts), pd.DataFrame())
    rows: list[dict] = []
    with progress.stage("routing", len(inputs.table), "scans") as stage:
        for result in predict_iter(model, inputs.table, return_routing=True, keep_image=keep > 0,
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


def _keep_saved_images(collected: Collected, count: int, settings: ReportSettings, kept: _Kept) -> None:
    """Preprocess the first ``count`` rows with saved routing and keep them for occlusion (one prediction pass over
    these rows only; rows whose image fails to load are skipped)."""
    model = collected.inputs.model
    rows = collected.inputs.table.iloc[collected.subject_rows[:count]].reset_index(drop=True)
    for result in predict_iter(model, rows, keep_image=True, batch_size=settings.batch_size,
                               num_workers=settings.workers):
        if result.error is None:
            kept.add(result, collected.aggregator.geometry(model.preprocessing.shape, result.affine), count)


def _model_call(model: LoadedModel, sex: float) -> Callable[[np.ndarray, int], np.ndarray]:
    """``predict(batch, s)`` for occlusion: (m, X, Y, Z) float32 copies of one scan -> (m,) predicted ages."""

    def predict(batch: np.ndarray, _: int) -> np.ndarray:
        x = torch.as_tensor(batch, device=model.device)[:, None]  # (m, X, Y, Z) -> (m, 1, X, Y, Z)
        covariate = torch.full((len(batch),), sex, device=model.device)
        with torch.inference_mode():
            return model.to_years(model.net(x, sex=covariate).pred).cpu().numpy()

    return predict


def _effect_sets(truth: GroundTruth | None, names: Sequence[str]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, region rows) of each planted effect, the displaced regions and the null regions (control)."""
    if truth is None or not truth.regions or not truth.effects:
        return []
    sets = [(name, regions) for name, regions in truth.effects if regions]  # global effects name no region
    sets += [("regions displaced by the warps", truth.indirect_regions)] if truth.indirect_regions else []
    sets += [("null regions (control)", truth.null_regions)] if truth.null_regions else []
    rows = {name: i for i, name in enumerate(names)}
    return [(name, tuple(rows[n] for n in regions if n in rows)) for name, regions in sets]


def _occlude(collected: Collected, kept: _Kept, settings: ReportSettings, progress: StageProgress) -> OcclusionRun:
    """Occlusion deltas of every region, then of every planted effect, on the kept scans of the main geometry."""
    aggregator, model = collected.aggregator, collected.inputs.model
    g = aggregator.main_geometry()
    keep = [i for i, geo in enumerate(kept.geometry) if geo == g]
    if not keep:
        raise ValueError("occlusion needs preprocessed images on the main model grid; none were kept")
    stack = np.stack([np.asarray(kept.images[i], dtype=np.float32) for i in keep])  # (s, X, Y, Z)
    reference, described = reference_image(stack, [kept.age[i] for i in keep], settings.occlusion_reference)
    regions = aggregator.geometries[g].regions  # (X, Y, Z) region rows, -1 = background
    effects = _effect_sets(collected.inputs.truth, aggregator.regions.names)
    deltas, effect_deltas = [], []
    with progress.stage("occlusion", len(stack), "scans") as stage:
        for s, image in enumerate(stack):
            predict = _model_call(model, sex_code(kept.sex[keep[s]]))
            deltas.append(occlusion_deltas(predict, image[None], regions, len(aggregator.regions), 8, False,
                                           reference)[0])  # (r,)
            if effects:
                effect_deltas.append(set_occlusion_deltas(predict, image[None], regions, [rows for _, rows in effects],
                                                          8, False, reference)[0])  # (q,)
            stage.advance()
    return OcclusionRun(np.stack(deltas), f"{len(stack)} scans; reference: {described}",
                        tuple(name for name, _ in effects), tuple(rows for _, rows in effects),
                        np.stack(effect_deltas) if effects else None)


def collect(settings: ReportSettings, progress: StageProgress) -> Collected:
    """Inputs -> routing aggregated on the atlas, predictions, occlusion deltas (see the module docstring)."""
    inputs = read_report_inputs(settings)
    keep, kept = settings.occluded_subjects, _Kept()
    if settings.routing is not None:
        collected = _route_saved(inputs, settings.routing, progress)
        if keep:
            _keep_saved_images(collected, keep, settings, kept)
    else:
        collected = _route_with_model(inputs, keep, settings, progress, kept)
    if keep and collected.aggregator is not None and collected.aggregator.subjects:
        collected.occlusion = _occlude(collected, kept, settings, progress)
    return collected

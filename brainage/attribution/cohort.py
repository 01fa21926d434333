"""Run a brain-age model over a cohort (or read the routing `brainage predict --save-routing` saved) and collect what
the attribution report needs.

One pass of ``brainage.predict.predict_iter(return_routing=True)`` gives, per scan, the predicted age, the preprocessed
image's voxel->MNI affine and the routing of every MoE layer (ERMoE, arXiv 2511.10971). Routing goes straight into a
:class:`RoutingAggregator` (so memory stays O(tokens) per subject); preprocessed images are kept only for the first
subjects that occlusion will use. With saved routing (``brainage.contracts.routing``) the model runs only for
those occlusion subjects, or not at all. The model is only called, never modified (``torch.inference_mode``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from brainage.attribution.aggregate import AtlasLike, RoutingAggregator
from brainage.attribution.occlusion import (
    Reference,
    occlusion_deltas,
    rank_sensitivity,
    reference_image,
    set_occlusion_deltas,
)
from brainage.contracts.routing import load_routing, routing_filename
from brainage.data.inputs import sex_code
from brainage.predict import OUTPUT_COLUMNS, LoadedModel, SubjectResult, predict_iter, result_row

__all__ = ["CohortAttribution", "attribute_cohort", "attribute_saved_routing", "keep_occlusion_images",
           "occlusion_sensitivity", "effect_occlusion"]


@dataclass
class CohortAttribution:
    aggregator: RoutingAggregator
    predictions: pd.DataFrame  # predict's OUTPUT_COLUMNS plus sex, site and the requested extra columns
    subject_rows: list[int] = field(default_factory=list)  # predictions row of each aggregator subject
    images: list[np.ndarray] = field(default_factory=list)  # (X, Y, Z) preprocessed inputs kept for occlusion
    image_geometry: list[int] = field(default_factory=list)  # geometry index of each kept image
    image_sex: list[object] = field(default_factory=list)  # the input row's sex of each kept image
    image_age: list[float] = field(default_factory=list)  # the input row's age of each kept image (NaN = unknown)


def _output_row(result: SubjectResult, extra_columns: Sequence[str]) -> dict:
    row = result_row(result)
    row.update({column: result.row.get(column) for column in ("sex", "site", *extra_columns)})
    return row


def _keep_image(cohort: CohortAttribution, result: SubjectResult, geometry: int, limit: int) -> None:
    if result.image is not None and len(cohort.images) < limit:
        cohort.images.append(result.image)
        cohort.image_geometry.append(geometry)
        cohort.image_sex.append(result.row.get("sex"))
        age = result.row.get("age")
        cohort.image_age.append(math.nan if age is None else float(age))


def attribute_cohort(
    model: LoadedModel, table: pd.DataFrame, atlas: AtlasLike, keep_images: int = 0, batch_size: int = 4,
    num_workers: int | None = None, progress: bool = False, extra_columns: Sequence[str] = (),
) -> CohortAttribution:
    """Predict every row of ``table`` (read_inputs columns) with routing and aggregate it on ``atlas``.

    Args:
        keep_images: keep the preprocessed input of the first ``keep_images`` successful scans (for occlusion).
        extra_columns: columns of ``table`` copied into the predictions table (e.g. a ``--group-by`` column).
    """
    if model.num_experts < 1:
        raise ValueError("the model has no mixture-of-experts layer (num_experts = 0); an expert attribution report "
                         "needs an MoE model")
    aggregator = RoutingAggregator(atlas, model.num_experts)
    cohort = CohortAttribution(aggregator, pd.DataFrame())
    rows = []
    for result in predict_iter(model, table, return_routing=True, keep_image=keep_images > 0, batch_size=batch_size,
                               num_workers=num_workers, progress=progress):
        rows.append(_output_row(result, extra_columns))
        if result.error is not None:
            continue
        if not result.routing:
            raise ValueError(f"{result.row.get('path')}: the model returned no routing; expected one entry per MoE "
                             "layer with return_routing=True")
        subject = aggregator.add(rows[-1]["subject_id"], model.preprocessing.shape, result.affine, result.routing)
        cohort.subject_rows.append(len(rows) - 1)
        _keep_image(cohort, result, subject.geometry, keep_images)
    cohort.predictions = pd.DataFrame(rows, columns=[*OUTPUT_COLUMNS, "sex", "site", *extra_columns])
    return cohort


def _routing_file(folder: Path, row: dict, index: int) -> Path | None:
    """The saved routing of one input row: ``routing_filename(subject_id, session)``, else the name with the row
    index that predict uses when two rows share a subject and session."""
    subject, session = str(row["subject_id"]), str(row.get("session") or "")
    for name in (routing_filename(subject, session), routing_filename(subject, session, index)):
        if (folder / name).is_file():
            return folder / name
    return None


def attribute_saved_routing(
    folder: str | Path, table: pd.DataFrame, atlas: AtlasLike, extra_columns: Sequence[str] = (),
    progress: bool = False,
) -> CohortAttribution:
    """Aggregate the routing maps `brainage predict --save-routing FOLDER` wrote for the rows of ``table``.

    Rows without a routing file (or with an unreadable one) become error rows, as in prediction. The number of experts
    is read from the files (``probs`` is (n, e)).
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--routing folder not found: {folder} (write it with `brainage predict "
                                "--save-routing DIR`)")
    rows: list[dict] = []
    cohort = CohortAttribution(None, pd.DataFrame())  # type: ignore[arg-type] - created with the first file
    records = table.to_dict("records")
    for index, record in enumerate(tqdm(records, desc="routing", unit="scan", disable=None if progress else True)):
        path = _routing_file(folder, record, index)
        if path is None:
            expected = routing_filename(str(record["subject_id"]), str(record.get("session") or ""))
            rows.append(_output_row(SubjectResult(record, None, f"no saved routing {folder / expected}"),
                                    extra_columns))
            continue
        try:
            saved = load_routing(path)
            if not saved.layers:
                raise ValueError("it holds no MoE layer")
        except (OSError, ValueError, KeyError) as err:
            rows.append(_output_row(SubjectResult(record, None, f"{path}: unreadable routing ({err})"),
                                    extra_columns))
            continue
        if cohort.aggregator is None:
            cohort.aggregator = RoutingAggregator(atlas, int(saved.layers[0].probs.shape[-1]))
        rows.append(_output_row(SubjectResult(record, saved.predicted_age, None), extra_columns))
        cohort.aggregator.add(rows[-1]["subject_id"], saved.shape, saved.affine, list(saved.layers))
        cohort.subject_rows.append(len(rows) - 1)
    if cohort.aggregator is None:
        reasons = "; ".join(row["error"] for row in rows[:3])
        raise ValueError(f"none of the {len(records)} inputs has a usable routing file in {folder} ({reasons})")
    cohort.predictions = pd.DataFrame(rows, columns=[*OUTPUT_COLUMNS, "sex", "site", *extra_columns])
    return cohort


def keep_occlusion_images(
    model: LoadedModel, cohort: CohortAttribution, table: pd.DataFrame, count: int, batch_size: int = 4,
    num_workers: int | None = None,
) -> None:
    """Preprocess the first ``count`` rows of ``table`` that have saved routing and keep them for occlusion (one
    prediction pass over these rows only; rows whose image fails to load are skipped)."""
    rows = table.iloc[cohort.subject_rows[:count]].reset_index(drop=True)
    for result in predict_iter(model, rows, keep_image=True, batch_size=batch_size, num_workers=num_workers):
        if result.error is None:
            geometry = cohort.aggregator.geometry(model.preprocessing.shape, result.affine)
            _keep_image(cohort, result, geometry, count)


@dataclass
class _Occlusion:
    """What occlusion needs on the cohort's main geometry: a model call, the kept scans, the atlas and a reference."""

    predict: Callable[[np.ndarray, int], np.ndarray]
    stack: np.ndarray  # (s, X, Y, Z)
    regions: np.ndarray  # (X, Y, Z) region rows, -1 = background
    reference: np.ndarray  # (X, Y, Z)
    described: str


def _occlusion(model: LoadedModel, cohort: CohortAttribution, reference: Reference) -> _Occlusion:
    aggregator = cohort.aggregator
    g = aggregator.main_geometry()
    keep = [i for i, geo in enumerate(cohort.image_geometry) if geo == g]
    if not keep:
        raise ValueError("occlusion needs preprocessed images on the main model grid; none were kept")
    sexes = [sex_code(cohort.image_sex[i]) for i in keep]

    def predict(batch: np.ndarray, s: int) -> np.ndarray:
        x = torch.as_tensor(batch, device=model.device)[:, None]  # (m, X, Y, Z) -> (m, 1, X, Y, Z)
        sex = torch.full((len(batch),), sexes[s], device=model.device)
        with torch.inference_mode():
            return model.to_years(model.net(x, sex=sex).pred).cpu().numpy()

    stack = np.stack([np.asarray(cohort.images[i], dtype=np.float32) for i in keep])  # (s, X, Y, Z)
    ref, described = reference_image(stack, [cohort.image_age[i] for i in keep], reference)
    return _Occlusion(predict, stack, aggregator.geometries[g].regions, ref, f"{len(stack)} scans; reference: "
                      f"{described}")


def occlusion_sensitivity(
    model: LoadedModel, cohort: CohortAttribution, batch_size: int = 8, progress: bool = True,
    reference: Reference = "young",
) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Region age sensitivity on the cohort's main geometry (``brainage.attribution.occlusion``).

    Returns:
        (ranked table, deltas (s, r) in years, a sentence naming the scans used and the reference image).
    """
    occ = _occlusion(model, cohort, reference)
    num_regions = len(cohort.aggregator.regions)
    deltas = occlusion_deltas(occ.predict, occ.stack, occ.regions, num_regions, batch_size, progress, occ.reference)
    voxels = np.bincount(occ.regions[occ.regions >= 0], minlength=num_regions)  # (r,)
    return rank_sensitivity(deltas, cohort.aggregator.regions, voxels), deltas, occ.described


def effect_occlusion(
    model: LoadedModel, cohort: CohortAttribution, effects: Sequence[tuple[str, Sequence[str]]], batch_size: int = 8,
    reference: Reference = "young",
) -> pd.DataFrame:
    """Joint occlusion of every region of each named region set (e.g. one planted effect of a synthetic cohort).

    Answers whether the model reads an effect at all, independent of how its signal is split over regions.

    Returns:
        columns effect, regions (found in the atlas), voxels, age_contribution (mean of -delta, years), sd,
        share_positive (fraction of scans whose prediction drops when the set is occluded).
    """
    occ = _occlusion(model, cohort, reference)
    rows_by_name = {name: i for i, name in enumerate(cohort.aggregator.regions.names)}
    sets = [[rows_by_name[n] for n in names if n in rows_by_name] for _, names in effects]
    deltas = set_occlusion_deltas(occ.predict, occ.stack, occ.regions, sets, batch_size, False, occ.reference)
    return pd.DataFrame({
        "effect": [name for name, _ in effects],
        "regions": [len(found) for found in sets],
        "voxels": [int(np.isin(occ.regions, found).sum()) for found in sets],
        "age_contribution": -deltas.mean(axis=0),
        "sd": deltas.std(axis=0),
        "share_positive": (deltas < 0).mean(axis=0),
    })

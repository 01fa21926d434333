"""Run a brain-age model over a cohort and collect what the attribution report needs.

One pass of ``brainage.predict.predict_iter(return_routing=True)`` gives, per scan, the predicted age, the preprocessed
image's voxel->MNI affine and the routing of every MoE layer (ERMoE, arXiv 2511.10971). Routing goes straight into a
:class:`RoutingAggregator` (so memory stays O(tokens) per subject); preprocessed images are kept only for the first
subjects that occlusion will use. The model is only called, never modified (``torch.inference_mode``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from brainage.attribution.aggregate import AtlasLike, RoutingAggregator
from brainage.attribution.occlusion import occlusion_deltas, rank_sensitivity
from brainage.predict import OUTPUT_COLUMNS, LoadedModel, predict_iter, result_row

__all__ = ["CohortAttribution", "attribute_cohort", "occlusion_sensitivity"]


@dataclass
class CohortAttribution:
    aggregator: RoutingAggregator
    predictions: pd.DataFrame  # predict's OUTPUT_COLUMNS plus sex and site
    images: list[np.ndarray] = field(default_factory=list)  # (X, Y, Z) preprocessed inputs kept for occlusion
    image_geometry: list[int] = field(default_factory=list)  # geometry index of each kept image
    image_sex: list[object] = field(default_factory=list)  # the input row's sex of each kept image


def attribute_cohort(
    model: LoadedModel, table: pd.DataFrame, atlas: AtlasLike, keep_images: int = 0, batch_size: int = 4,
    num_workers: int | None = None, progress: bool = False,
) -> CohortAttribution:
    """Predict every row of ``table`` (read_inputs columns) with routing and aggregate it on ``atlas``.

    Args:
        keep_images: keep the preprocessed input of the first ``keep_images`` successful scans (for occlusion).
    """
    if model.num_experts < 1:
        raise ValueError("the model has no mixture-of-experts layer (num_experts = 0); an expert attribution report "
                         "needs an MoE model")
    aggregator = RoutingAggregator(atlas, model.num_experts)
    cohort = CohortAttribution(aggregator, pd.DataFrame())
    rows = []
    for result in predict_iter(model, table, return_routing=True, keep_image=keep_images > 0, batch_size=batch_size,
                               num_workers=num_workers, progress=progress):
        row = result_row(result)
        row.update(sex=result.row.get("sex"), site=result.row.get("site"))
        rows.append(row)
        if result.error is not None:
            continue
        if not result.routing:
            raise ValueError(f"{result.row.get('path')}: the model returned no routing; expected one entry per MoE "
                             "layer with return_routing=True")
        shape = model.preprocessing.shape
        subject = aggregator.add(row["subject_id"], shape, result.affine, result.routing)
        if result.image is not None and len(cohort.images) < keep_images:
            cohort.images.append(result.image)
            cohort.image_geometry.append(subject.geometry)
            cohort.image_sex.append(result.row.get("sex"))
    cohort.predictions = pd.DataFrame(rows, columns=[*OUTPUT_COLUMNS, "sex", "site"])
    return cohort


def _sex_value(value: object) -> float:
    return {"M": 0.0, "F": 1.0}.get(value, math.nan)  # predict's coding; NaN = unknown


def occlusion_sensitivity(
    model: LoadedModel, cohort: CohortAttribution, batch_size: int = 8, progress: bool = True
) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Region age sensitivity on the cohort's main geometry.

    Returns:
        (ranked table, deltas (s, r) in years, number of subjects used).
    """
    aggregator = cohort.aggregator
    g = aggregator.main_geometry()
    keep = [i for i, geo in enumerate(cohort.image_geometry) if geo == g]
    if not keep:
        raise ValueError("occlusion needs preprocessed images on the main model grid; none were kept")
    images: Sequence[np.ndarray] = [cohort.images[i] for i in keep]
    sexes = [_sex_value(cohort.image_sex[i]) for i in keep]
    regions = aggregator.geometries[g].regions

    def predict(batch: np.ndarray, s: int) -> np.ndarray:
        x = torch.as_tensor(batch, device=model.device)[:, None]  # (m, X, Y, Z) -> (m, 1, X, Y, Z)
        sex = torch.full((len(batch),), sexes[s], device=model.device)
        with torch.inference_mode():
            return model.to_years(model.net(x, sex=sex).pred).cpu().numpy()

    deltas = occlusion_deltas(predict, images, regions, len(aggregator.regions), batch_size, progress)
    voxels = np.bincount(regions[regions >= 0], minlength=len(aggregator.regions))  # (r,)
    return rank_sensitivity(deltas, aggregator.regions, voxels), deltas, len(images)

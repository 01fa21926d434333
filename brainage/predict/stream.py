"""Streaming inference over a manifest: decode + preprocess in worker processes, predict in batches in this one.

Memory is bounded by the items in flight (`brainage.predict.decode.ScanLoader`'s window), never by the number of
files: results are yielded one scan at a time and images/routing are dropped unless asked for. A file that cannot be
read, fails validation or kills its decode worker comes back as a `SubjectResult` with an error, never an exception;
so does a scan whose prediction is not finite (NaN or inf: a model whose weights overflow on it), which is never
reported as a prediction. Optional test-time augmentation (TTA) predicts the scan and its left-right mirror (flip of
the RAS x axis) in one forward pass; the prediction is their mean and the uncertainty their spread (population std of
the two).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from brainage.contracts.bias import apply_bias_correction
from brainage.contracts.routing import LayerRecord, layer_records
from brainage.data.inputs import sex_code
from brainage.predict.decode import ScanLoader
from brainage.predict.model import LoadedModel

__all__ = [
    "SubjectResult",
    "available_cpus",
    "default_workers",
    "predict_batch",
    "predict_iter",
    "scan_loader",
]


@dataclass
class SubjectResult:
    """One input row after prediction (predicted_age None and error set when the scan failed)."""

    row: dict
    predicted_age: float | None
    error: str | None
    affine: np.ndarray | None = None  # (4, 4) model-grid voxel -> MNI mm
    image: np.ndarray | None = None  # (X, Y, Z) preprocessed input, when keep_image
    routing: list[LayerRecord] | None = None  # per MoE layer, of the unflipped pass
    corrected_age: float | None = None  # bias-corrected; equals predicted_age when the model has no correction
    uncertainty: float | None = None  # std of the prediction over flip TTA; None without TTA
    index: int | None = None  # position of the row in the table given to predict_iter


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads() -> int:
    """Torch threads when not given: $OMP_NUM_THREADS when it is a positive integer (a user sharing the machine),
    else every available CPU."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else available_cpus()


def default_workers() -> int:
    """Decode processes when not given: min(4, CPUs - 1), at least 1 (one CPU stays with the model)."""
    return max(1, min(4, available_cpus() - 1))


def scan_loader(model: LoadedModel, paths: list[str], indices: list[int] | None = None, batch_size: int = 4,
                num_workers: int | None = None, prefetch_factor: int = 4) -> ScanLoader:
    """Batches (lists) of decoded items of `paths[i]` for i in `indices` (default all), in order, refusing files
    whose header claims more than `model.max_voxels`. `num_workers=None` = min(4, CPUs - 1), at least 1."""
    workers = default_workers() if num_workers is None else num_workers
    return ScanLoader(paths, model.transform, indices, batch_size, workers, prefetch_factor, model.max_voxels)


def _not_finite(path: str, values: dict[str, float | None]) -> str | None:
    """The error of a scan whose prediction (or its correction or TTA spread) is NaN or inf; None when finite."""
    bad = [f"{name} {value:g}" for name, value in values.items() if value is not None and not math.isfinite(value)]
    return None if not bad else (f"{path}: model output is not finite ({', '.join(bad)}); expected a finite age "
                                 f"(the model's weights overflow on this scan)")


def predict_batch(model: LoadedModel, items: list[dict], rows: list[dict], return_routing: bool = False,
                  keep_image: bool = False, tta: bool = False) -> list[SubjectResult]:
    """Results of one loader batch (`decode_scan` items indexing `rows`), in the order of `items`."""
    good = [it for it in items if it["image"] is not None]
    ages, spread, routing = {}, {}, {}
    if good:
        images = torch.stack([it["image"] for it in good]).to(model.device)  # (b, 1, X, Y, Z)
        sex = torch.tensor([sex_code(rows[it["index"]].get("sex")) for it in good], device=model.device)
        b = len(good)
        if tta:
            images = torch.cat([images, images.flip(2)])  # (2b, 1, X, Y, Z): the scan, then its x-mirror
            sex = torch.cat([sex, sex])  # (2b,)
        with torch.inference_mode():
            out = model.net(images, sex=sex, return_routing=return_routing)
        years = model.to_years(out.pred).cpu().double().numpy().reshape(-1, b)  # (1 or 2, b)
        with np.errstate(invalid="ignore", over="ignore"):  # a non-finite output becomes an error row below
            pred, std = years.mean(axis=0), years.std(axis=0)  # (b,), (b,)
        for j, it in enumerate(good):
            ages[it["index"]], spread[it["index"]] = float(pred[j]), float(std[j])
            if return_routing and out.routing:
                routing[it["index"]] = layer_records(out.routing, j)
    results = []
    for it in items:
        i = it["index"]
        age, error = ages.get(i), it["error"]
        corrected = None if age is None else float(apply_bias_correction(age, model.bias_correction))
        broken = _not_finite(str(rows[i]["path"]), {"predicted age": age, "corrected age": corrected,
                                                    "TTA spread": spread.get(i) if tta else None})
        if broken is not None:  # never reported as a prediction: an error row
            error, age, corrected = broken, None, None
            routing.pop(i, None)
        image = it["image"][0].numpy() if keep_image and it["image"] is not None and error is None else None
        results.append(SubjectResult(rows[i], age, error, it["affine"] if error is None else None, image,
                                     routing.get(i), corrected, spread.get(i) if tta and error is None else None, i))
    return results


def predict_iter(model: LoadedModel, table: pd.DataFrame, return_routing: bool = False, keep_image: bool = False,
                 batch_size: int = 4, num_workers: int | None = None, progress: bool = False,
                 tta: bool = False, indices: list[int] | None = None) -> Iterator[SubjectResult]:
    """Yield one SubjectResult per table row, in table order; decoding overlaps compute in worker processes.

    Args:
        return_routing: attach each MoE layer's routing (numpy, batch dim removed).
        keep_image: attach the preprocessed (X, Y, Z) input.
        num_workers: decode processes (None = min(4, CPUs - 1), at least 1; 0 = decode in this process).
        progress: show a tqdm bar with ETA.
        tta: flip test-time augmentation (prediction = mean over the scan and its mirror, uncertainty = std).
        indices: only these row positions (e.g. the ones a resumed run still has to do); default all.
    """
    rows = table.to_dict("records")
    loader = scan_loader(model, [str(r["path"]) for r in rows], indices, batch_size, num_workers)
    total = len(rows) if indices is None else len(indices)
    with tqdm(total=total, unit="scan", disable=not progress, desc="predict") as bar:
        for items in loader:
            yield from predict_batch(model, items, rows, return_routing, keep_image, tta)
            bar.update(len(items))

"""Streaming inference over a manifest: decode + preprocess in DataLoader workers, predict in the main process.

Memory is bounded by the batches in flight (workers x prefetch), never by the number of files: results are yielded
one scan at a time and images/routing are dropped unless asked for. A file that cannot be read or fails validation
comes back as a `SubjectResult` with an error, never an exception. Optional test-time augmentation (TTA) predicts the
scan and its left-right mirror (flip of the RAS x axis) in one forward pass; the prediction is their mean and the
uncertainty their spread (population std of the two).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from nibabel.filebasedimages import ImageFileError
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from brainage.contracts.bias import apply_bias_correction
from brainage.contracts.routing import LayerRecord, layer_records
from brainage.data.inputs import sex_code
from brainage.data.transforms import ImageError
from brainage.predict.model import LoadedModel

__all__ = [
    "ScanDataset",
    "SubjectResult",
    "available_cpus",
    "default_workers",
    "explain_failure",
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


def explain_failure(path: str, err: BaseException) -> str:
    """One clear line naming the file, what was found and what was expected, from a decode/validation failure."""
    cause = err
    while cause.__cause__ is not None:  # MONAI wraps the reader's error in RuntimeErrors
        cause = cause.__cause__
    detail = " ".join(str(cause).split())
    if isinstance(cause, ImageError):
        return detail  # already names the file, what was found and what was expected
    if isinstance(cause, zlib.error) or "gzip" in detail.lower() or "crc check" in detail.lower():
        return f"{path}: corrupt gzip data ({detail}); expected a readable .nii.gz file"
    if isinstance(cause, EOFError) or "ended before" in detail or ("Expected" in detail and "bytes" in detail):
        return f"{path}: truncated file ({detail}); expected a complete NIfTI image"
    if isinstance(cause, ImageFileError):
        return f"{path}: not a NIfTI image ({detail}); expected a .nii or .nii.gz file"
    return f"{path}: cannot be read as a NIfTI image ({type(cause).__name__}: {detail})"


class ScanDataset(Dataset):
    """Decode + preprocess one file per item; failures come back as a reason, not an exception."""

    def __init__(self, paths: list[str], transform: Callable, indices: list[int] | None = None) -> None:
        self.paths, self.transform = paths, transform
        self.indices = list(range(len(paths))) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        index = self.indices[position]  # items carry the row index, so results map back to the full table
        path = self.paths[index]
        if not Path(path).is_file():
            found = "a folder" if Path(path).is_dir() else "nothing"
            return {"index": index, "image": None, "affine": None,
                    "error": f"{path}: file not found (found {found}); expected a .nii or .nii.gz file"}
        try:
            image = self.transform({"image": path})["image"]  # (1, X, Y, Z) MetaTensor
        except Exception as err:  # noqa: BLE001 - any decoder/validation failure becomes this row's reason
            return {"index": index, "image": None, "affine": None, "error": explain_failure(path, err)}
        return {"index": index, "image": image.as_tensor(), "affine": np.asarray(image.affine, dtype=np.float64),
                "error": None}


def _keep_list(items: list[dict]) -> list[dict]:
    return items


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """Decode processes when not given: min(4, CPUs - 1), at least 1 (one CPU stays with the model)."""
    return max(1, min(4, available_cpus() - 1))


def _one_thread_per_worker(_: int) -> None:
    torch.set_num_threads(1)  # workers decode; the main process keeps its threads for the model


def scan_loader(model: LoadedModel, paths: list[str], indices: list[int] | None = None, batch_size: int = 4,
                num_workers: int | None = None, prefetch_factor: int = 4) -> DataLoader:
    """DataLoader of lists of ScanDataset items (`paths[i]` for i in `indices`, default all), in order.

    `num_workers=None` = min(4, CPUs - 1), at least 1; workers run one torch thread each.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    workers = default_workers() if num_workers is None else num_workers
    return DataLoader(ScanDataset(paths, model.transform, indices), batch_size=batch_size, num_workers=workers,
                      collate_fn=_keep_list, prefetch_factor=prefetch_factor if workers else None,
                      worker_init_fn=_one_thread_per_worker if workers else None)


def predict_batch(model: LoadedModel, items: list[dict], rows: list[dict], return_routing: bool = False,
                  keep_image: bool = False, tta: bool = False) -> list[SubjectResult]:
    """Results of one loader batch (ScanDataset items indexing `rows`), in the order of `items`."""
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
        pred, std = years.mean(axis=0), years.std(axis=0)  # (b,), (b,)
        for j, it in enumerate(good):
            ages[it["index"]], spread[it["index"]] = float(pred[j]), float(std[j])
            if return_routing and out.routing:
                routing[it["index"]] = layer_records(out.routing, j)
    results = []
    for it in items:
        i = it["index"]
        age = ages.get(i)
        image = it["image"][0].numpy() if keep_image and it["image"] is not None else None
        corrected = None if age is None else float(apply_bias_correction(age, model.bias_correction))
        results.append(SubjectResult(rows[i], age, it["error"], it["affine"], image, routing.get(i), corrected,
                                     spread.get(i) if tta else None, i))
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

"""Batch brain-age prediction over NIfTI files: one row per input, bad files become error rows, never a crash.

Decoding and preprocessing run in DataLoader workers so they overlap the model's compute. Models load with
`torch.load(weights_only=True)`: a file that is not a brainage checkpoint is refused, never unpickled.

Exit codes: 0 = every row ok; 1 = at least one row has status=error (the others are still written); 2 = usage error
or the model cannot be loaded.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from brainage.data.datamodule import load_volume
from brainage.data.inputs import read_inputs
from brainage.data.transforms import Preprocessing
from brainage.model import build_net
from brainage.training.card import CHECKPOINT_FORMAT

__all__ = ["ModelLoadError", "LoadedModel", "SubjectResult", "load_model", "predict_iter", "OUTPUT_COLUMNS", "main"]

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ["subject_id", "session", "path", "age", "predicted_age", "brain_age_gap", "status", "error"]


class ModelLoadError(ValueError):
    """The model file is missing, unsafe or not a brainage checkpoint."""


@dataclass
class LoadedModel:
    """A brain-age net ready for inference, with the preprocessing and card it was trained with."""

    net: nn.Module
    preprocessing: Preprocessing
    card: dict
    target_mean: float
    target_std: float
    device: torch.device

    @property
    def transform(self) -> Callable[[dict], dict]:
        return self.preprocessing.deterministic()

    @property
    def num_experts(self) -> int:
        moe = self.net.init_args.get("moe") or {}
        return int(moe.get("num_experts", 0)) if self.net.init_args.get("mlp", "moe") == "moe" else 0

    def to_years(self, pred: torch.Tensor) -> torch.Tensor:
        return pred.float() * self.target_std + self.target_mean


def load_model(spec: str | Path, device: str = "cpu") -> LoadedModel:
    """Load a brainage checkpoint (`.ckpt` written by `brainage fit`) safely."""
    path = Path(spec)
    if not path.is_file():
        raise ModelLoadError(f"model {str(spec)!r} not found; expected a brainage .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ModelLoadError(f"{path}: cannot be read as a weights-only checkpoint ({type(err).__name__}: "
                             f"{str(err).splitlines()[0]}); brainage never unpickles arbitrary objects") from err
    meta = checkpoint.get("brainage") if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ModelLoadError(f"{path}: not a brainage checkpoint (found keys {found}); expected a 'brainage' entry "
                             f"with format {CHECKPOINT_FORMAT!r}")
    net = build_net(meta["net"]["name"], meta["net"]["init_args"])
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    pre = meta["preprocessing"]
    preprocessing = Preprocessing(spacing=pre["spacing"], shape=tuple(pre["shape"]), augment=False)
    target = torch.device(device)
    return LoadedModel(net.eval().to(target), preprocessing, meta["card"], float(meta["target"]["mean"]),
                       float(meta["target"]["std"]), target)


@dataclass
class SubjectResult:
    """One input row after prediction."""

    row: dict
    predicted_age: float | None
    error: str | None
    affine: np.ndarray | None = None  # (4, 4) model-grid voxel -> MNI mm
    image: np.ndarray | None = None  # (X, Y, Z) preprocessed input, when keep_image
    routing: list | None = None  # list[LayerRouting] of numpy arrays, batch dim removed


class _Scans(Dataset):
    """Decode + preprocess one file per item in a worker; failures come back as a reason, not an exception."""

    def __init__(self, paths: list[str], transform: Callable) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        if not Path(path).exists():
            return {"index": index, "image": None, "affine": None, "error": f"{path}: file not found"}
        image, error = load_volume(self.transform, path)
        affine = None if image is None else np.asarray(image.affine, dtype=np.float64)
        return {"index": index, "image": None if image is None else image.as_tensor(), "affine": affine,
                "error": error}


def _keep_list(items: list[dict]) -> list[dict]:
    return items


def _sex_code(value: object) -> float:
    return {"M": 0.0, "F": 1.0}.get(value, math.nan)


def predict_iter(model: LoadedModel, table: pd.DataFrame, return_routing: bool = False, keep_image: bool = False,
                 batch_size: int = 4, num_workers: int | None = None, progress: bool = False) -> Iterator[SubjectResult]:
    """Yield one SubjectResult per table row, in table order; decoding overlaps compute in worker processes."""
    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    rows = table.to_dict("records")
    loader = DataLoader(_Scans([str(r["path"]) for r in rows], model.transform), batch_size=batch_size,
                        num_workers=workers, collate_fn=_keep_list, prefetch_factor=4 if workers else None)
    bar = tqdm(total=len(rows), unit="scan", disable=not progress, desc="predict")
    for items in loader:
        good = [it for it in items if it["image"] is not None]
        predictions, routing = {}, {}
        if good:
            images = torch.stack([it["image"] for it in good]).to(model.device)  # (b, 1, X, Y, Z)
            sex = torch.tensor([_sex_code(rows[it["index"]].get("sex")) for it in good], device=model.device)
            with torch.inference_mode():
                out = model.net(images, sex=sex, return_routing=return_routing)
            ages = model.to_years(out.pred).cpu().numpy()
            for b, it in enumerate(good):
                predictions[it["index"]] = float(ages[b])
                if return_routing and out.routing:
                    routing[it["index"]] = [layer._replace(expert_index=layer.expert_index[b].cpu().numpy(),
                                                           gates=layer.gates[b].cpu().numpy(),
                                                           probs=layer.probs[b].cpu().numpy())
                                            for layer in out.routing]
        for it in items:
            i = it["index"]
            image = it["image"][0].numpy() if keep_image and it["image"] is not None else None
            yield SubjectResult(rows[i], predictions.get(i), it["error"], it["affine"], image, routing.get(i))
        bar.update(len(items))
    bar.close()


def result_row(result: SubjectResult) -> dict:
    """The output CSV row of one result (columns OUTPUT_COLUMNS)."""
    row = result.row
    age = row.get("age")
    age = float(age) if age is not None and not (isinstance(age, float) and math.isnan(age)) else None
    pred = result.predicted_age
    return {
        "subject_id": row["subject_id"], "session": row.get("session", ""), "path": row["path"],
        "age": "" if age is None else f"{age:.2f}",
        "predicted_age": "" if pred is None else f"{pred:.2f}",
        "brain_age_gap": "" if pred is None or age is None else f"{pred - age:.2f}",
        "status": "ok" if result.error is None else "error",
        "error": result.error or "",
    }


def write_csv_atomic(rows: list[dict], path: Path, columns: list[str]) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see a half-written CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def summarise(rows: list[dict], card: dict) -> list[str]:
    """Human summary: counts, and MAE against the predict-the-training-mean baseline when ages are known."""
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [f"{len(ok)} of {len(rows)} scans predicted" + (f", {len(rows) - len(ok)} failed" if len(ok) < len(rows)
                                                            else "")]
    known = [r for r in ok if r["age"] != ""]
    mean_age = (card.get("training_cohort") or {}).get("age_mean")
    if known:
        ages = np.array([float(r["age"]) for r in known])
        preds = np.array([float(r["predicted_age"]) for r in known])
        mae = float(np.abs(preds - ages).mean())
        lines.append(f"MAE on {len(known)} scans with known age: {mae:.2f} years")
        if mean_age is not None:
            base = float(np.abs(mean_age - ages).mean())
            lines.append(f"baseline (always predict the training mean age {mean_age:.1f}): MAE {base:.2f} years; "
                         f"model/baseline = {mae / base:.2f}")
    return lines


EPILOG = """examples:
  brainage predict --model demo-output/train/checkpoints/best.ckpt --input demo-output/heldout \\
                   --output predictions.csv
  brainage predict --model best.ckpt --input scans/ --output out.csv            # folder, recursive
  brainage predict --model best.ckpt --input 'scans/**/*_T1w.nii.gz' --output out.csv
  brainage predict --model best.ckpt --input manifest.csv --output out.csv      # CSV with a 'path' column

output columns: subject_id, session, path, age (when known), predicted_age, brain_age_gap (predicted - age),
status (ok | error), error (the reason). One row per input, in a stable order.
exit codes: 0 all rows ok; 1 some rows failed (they are still written); 2 usage error or unusable model.
Research use only, not for diagnosis.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainage predict", description="Predict brain age for T1w NIfTI scans.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="brainage checkpoint (.ckpt) written by `brainage fit`")
    parser.add_argument("--input", required=True, nargs="+", help="folder, BIDS dataset, CSV/TSV manifest, file or glob")
    parser.add_argument("--output", required=True, type=Path, help="predictions CSV to write (atomically)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: min(4, CPUs))")
    parser.add_argument("--verbose", action="store_true", help="log every failed file and progress details")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        model = load_model(args.model, args.device)
    except ModelLoadError as err:
        print(f"brainage predict: {err}", file=sys.stderr)
        return 2
    table = read_inputs(args.input)
    if table.empty:
        print(f"brainage predict: no NIfTI files found in {args.input}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    rows = []
    for result in predict_iter(model, table, batch_size=args.batch_size, num_workers=args.workers,
                               progress=sys.stderr.isatty() or args.verbose):
        rows.append(result_row(result))
        if result.error:
            log.info("error: %s", result.error)
    write_csv_atomic(rows, args.output, OUTPUT_COLUMNS)
    elapsed = time.perf_counter() - start
    for line in summarise(rows, model.card):
        print(line)
    print(f"predictions: {args.output} ({len(rows) / elapsed:.1f} scans/s)")
    return 0 if all(r["status"] == "ok" for r in rows) else 1

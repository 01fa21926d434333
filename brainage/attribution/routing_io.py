"""Per-subject routing maps saved by `brainage predict --save-routing DIR` and read by `brainage report`.

One compressed `.npz` per scan, written atomically. Keys: `affine` (4, 4) model-grid voxel -> MNI mm, `shape` (3,)
model grid, `predicted_age` (), and per MoE layer L: `layer{L}_expert_index` (n, k) int16, `layer{L}_gates` (n, k)
float16, `layer{L}_probs` (n, e) float16, `layer{L}_grid` (3,), `layer{L}_index` () the block index.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["SavedRouting", "routing_filename", "save_routing", "load_routing"]


class SavedRouting(NamedTuple):
    """Routing of one scan, numpy only (same fields as brainage.model.LayerRouting per layer)."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    predicted_age: float
    layers: list  # list of dicts: layer, expert_index (n, k), gates (n, k), probs (n, e), grid (3,)


def routing_filename(subject_id: str, session: str = "", index: int | None = None) -> str:
    """A safe, unique file name for one scan (user ids may hold any character)."""
    stem = "_".join(part for part in (subject_id, session) if part)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-") or "scan"
    return f"{stem}{'' if index is None else f'__{index}'}.npz"


def save_routing(path: str | Path, affine: np.ndarray, shape: tuple[int, int, int], predicted_age: float,
                 layers: list) -> Path:
    """Write one scan's routing; `layers` holds LayerRouting-like objects with numpy fields (batch dim removed)."""
    path = Path(path)
    arrays = {"affine": np.asarray(affine, np.float64), "shape": np.asarray(shape, np.int32),
              "predicted_age": np.asarray(predicted_age, np.float64)}
    for i, layer in enumerate(layers):
        arrays[f"layer{i}_index"] = np.asarray(layer.layer, np.int32)
        arrays[f"layer{i}_expert_index"] = np.asarray(layer.expert_index, np.int16)
        arrays[f"layer{i}_gates"] = np.asarray(layer.gates, np.float16)
        arrays[f"layer{i}_probs"] = np.asarray(layer.probs, np.float16)
        arrays[f"layer{i}_grid"] = np.asarray(layer.grid, np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_routing(path: str | Path) -> SavedRouting:
    with np.load(path) as data:
        count = len([k for k in data.files if k.endswith("_expert_index")])
        layers = [{"layer": int(data[f"layer{i}_index"]),
                   "expert_index": data[f"layer{i}_expert_index"].astype(np.int64),
                   "gates": data[f"layer{i}_gates"].astype(np.float32),
                   "probs": data[f"layer{i}_probs"].astype(np.float32),
                   "grid": tuple(int(g) for g in data[f"layer{i}_grid"])} for i in range(count)]
        return SavedRouting(data["affine"], tuple(int(s) for s in data["shape"]), float(data["predicted_age"]),
                            layers)

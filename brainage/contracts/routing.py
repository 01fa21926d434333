"""The routing record: which experts each patch token of one scan went to, in numpy, the one form in which routing
leaves the model. `brainage predict --save-routing DIR` writes one record per scan and `brainage report` reads them;
the report's collect stage builds the same records from a live model.

A record saved and loaded is equal to the original, field for field and dtype for dtype. On disk: one compressed
`.npz` per scan, written atomically, with keys `affine` (4, 4) model-grid voxel -> MNI mm, `shape` (3,) model grid,
`predicted_age` (), and per MoE layer L: `layer{L}_expert_index` (n, k), `layer{L}_gates` (n, k), `layer{L}_probs`
(n, e), `layer{L}_grid` (3,), `layer{L}_index` () the block index. Files written before this module (int16 indices,
float16 gates and probabilities) still load.

Letters: n patch tokens, k chosen experts, e experts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainage.contracts.atomic import atomic_path

__all__ = ["LayerRecord", "ScanRouting", "layer_records", "load_routing", "routing_filename", "save_routing"]

MAX_NAME = 200  # bytes of a routing file name (file systems allow 255)


@dataclass(frozen=True, eq=False)
class LayerRecord:
    """Routing of one MoE block for one scan; arrays are normalised to int64 / float32."""

    layer: int  # block index in the ViT
    expert_index: np.ndarray  # (n, k) int64, chosen experts, ordered by gate descending
    gates: np.ndarray  # (n, k) float32, renormalised over the chosen k
    probs: np.ndarray  # (n, e) float32, router softmax over all experts
    grid: tuple[int, int, int]  # token grid (gx, gy, gz); token n = (i * gy + j) * gz + l

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", int(self.layer))
        object.__setattr__(self, "expert_index", np.asarray(self.expert_index, dtype=np.int64))
        object.__setattr__(self, "gates", np.asarray(self.gates, dtype=np.float32))
        object.__setattr__(self, "probs", np.asarray(self.probs, dtype=np.float32))
        object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerRecord) and self.layer == other.layer and self.grid == other.grid and all(
            np.array_equal(getattr(self, f), getattr(other, f)) for f in ("expert_index", "gates", "probs"))


@dataclass(frozen=True, eq=False)
class ScanRouting:
    """Routing of every MoE block for one scan, with the geometry that places its tokens in MNI space."""

    affine: np.ndarray  # (4, 4) float64 model-grid voxel -> MNI mm
    shape: tuple[int, int, int]  # model grid (X, Y, Z)
    predicted_age: float
    layers: tuple[LayerRecord, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "affine", np.asarray(self.affine, dtype=np.float64))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "predicted_age", float(self.predicted_age))
        object.__setattr__(self, "layers", tuple(self.layers))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ScanRouting) and np.array_equal(self.affine, other.affine)
                and self.shape == other.shape and self.predicted_age == other.predicted_age
                and self.layers == other.layers)


def layer_records(routing: Sequence, item: int) -> list[LayerRecord]:
    """Records of batch element `item` from the model's per-layer routing (`brainage.model.LayerRouting`: tensors
    with a leading batch dimension)."""
    def numpy(t) -> np.ndarray:
        return t[item].detach().cpu().numpy()  # (b, n, ...) -> (n, ...)

    return [LayerRecord(r.layer, numpy(r.expert_index), numpy(r.gates), numpy(r.probs), r.grid) for r in routing]


def routing_filename(subject_id: str, session: str = "", index: int | None = None) -> str:
    """A safe, unique file name for one scan (user ids may hold any character and any length)."""
    stem = "_".join(part for part in (subject_id, session) if part)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-") or "scan"
    suffix = f"{'' if index is None else f'__{index}'}.npz"
    if len(stem) + len(suffix) > MAX_NAME:  # keep it unique and under the file-name limit
        digest = hashlib.sha1(stem.encode()).hexdigest()[:12]
        stem = f"{stem[:MAX_NAME - len(suffix) - 13]}-{digest}"
    return f"{stem}{suffix}"


def save_routing(path: str | Path, scan: ScanRouting) -> Path:
    """Write one scan's record atomically."""
    arrays = {"affine": scan.affine, "shape": np.asarray(scan.shape, np.int32),
              "predicted_age": np.asarray(scan.predicted_age, np.float64)}
    for i, layer in enumerate(scan.layers):
        arrays[f"layer{i}_index"] = np.asarray(layer.layer, np.int32)
        arrays[f"layer{i}_expert_index"] = layer.expert_index
        arrays[f"layer{i}_gates"] = layer.gates
        arrays[f"layer{i}_probs"] = layer.probs
        arrays[f"layer{i}_grid"] = np.asarray(layer.grid, np.int32)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return Path(path)


def load_routing(path: str | Path) -> ScanRouting:
    """Read one scan's record (ValueError naming the file when it is not a routing map)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            count = len([k for k in data.files if k.endswith("_expert_index")])
            layers = [LayerRecord(int(data[f"layer{i}_index"]), data[f"layer{i}_expert_index"],
                                  data[f"layer{i}_gates"], data[f"layer{i}_probs"],
                                  tuple(data[f"layer{i}_grid"])) for i in range(count)]
            return ScanRouting(data["affine"], tuple(data["shape"]), float(data["predicted_age"]), tuple(layers))
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a brainage routing map ({type(err).__name__}: {err}); expected an .npz "
                         f"written by `brainage predict --save-routing`") from None

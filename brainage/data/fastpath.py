"""Faster equivalents of two steps of `Preprocessing.deterministic`, swapped in by `accelerate` for prediction.

Decoding a 1 mm MNI .nii.gz (182 x 218 x 182 float32) and resampling it to 1.5 mm costs about 0.55 s on one core
with the reference MONAI chain; two steps take most of it:

- **gzip inflate** (~85 ms of nibabel's ~100 ms load). `IsalNibabelReader` inflates with ISA-L (`isal`, about 2x
  faster than zlib) and hands the bytes to nibabel and MONAI's `NibabelReader`, so header handling, dtype, affine
  and metadata are MONAI's own and the array is bit-identical. It inflates the header first and then no more than
  the header claims (as nibabel reads), so a stream longer than its header says cannot blow up memory. Without
  `isal` installed, or for anything it does not recognise (not a single-file NIfTI-1/2, corrupt or truncated data),
  it falls back to the reference reader, so errors read exactly as before.
- **`Spacingd` resampling** (~260 ms: an affine `grid_sample` in float64 over the whole output grid). After
  `Orientationd(RAS)` an axis-aligned input maps onto the output grid by a per-axis scale and shift, and trilinear
  interpolation with border padding then factorises into three 1D linear interpolations (one per axis).
  `AxisAlignedSpacingd` does those (same output shape and affine, from MONAI's own geometry helpers) and falls back
  to the wrapped `Spacingd` for oblique grids (anything whose voxel map is not exactly diagonal) and other modes. The values agree with MONAI
  to float32 rounding (tests/data/test_fastpath.py); an input already at the target spacing is returned unchanged by
  MONAI itself, and stays on that path.

Everything else in the chain is left as it is. `accelerate` only swaps objects in a built `Compose`, so the chain
stays declared in one place (`brainage.data.transforms`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.image_reader import NibabelReader
from monai.data.utils import compute_shape_offset, correct_nifti_header_if_necessary, to_affine_nd, zoom_affine
from monai.networks.utils import to_norm_affine
from monai.transforms import Compose, LoadImage, MapTransform, Spacingd

from brainage.data.transforms import claimed_bytes, nifti_header

try:  # ISA-L inflate, about 2x zlib; optional (stdlib gzip via nibabel when missing)
    from isal import isal_zlib
except ImportError:  # pragma: no cover - exercised only where isal is not installed
    isal_zlib = None

__all__ = [
    "HAVE_ISAL",
    "AxisAlignedSpacingd",
    "IsalNibabelReader",
    "accelerate",
    "axis_aligned_resample",
    "nifti_loader",
    "source_coordinates",
]

HAVE_ISAL = isal_zlib is not None
_IMAGE_CLASS = {nib.Nifti1Header: nib.Nifti1Image, nib.Nifti2Header: nib.Nifti2Image}


class IsalNibabelReader(NibabelReader):
    """MONAI's `NibabelReader` with ISA-L gzip inflate for single-file `.nii.gz` (and plain `.nii` read whole).

    Falls back to `NibabelReader.read` (nibabel + zlib) whenever the fast path does not apply or fails.
    """

    def read(self, data, **kwargs):
        names = [data] if isinstance(data, (str, Path)) else list(data)  # LoadImage passes a tuple of paths
        name = names[0] if len(names) == 1 else None
        if name is None or kwargs or self.kwargs or not HAVE_ISAL:
            return super().read(data, **kwargs)
        try:
            img = self._read_one(str(name))
        except Exception:  # noqa: BLE001 - any failure takes the reference path, which raises the usual error
            img = None
        if img is None:
            return super().read(data, **kwargs)
        self.filenames = (name,)
        return img

    @staticmethod
    def _read_one(name: str) -> nib.Nifti1Image | None:
        lower = name.lower()
        if not lower.endswith((".nii", ".nii.gz")):
            return None
        raw = Path(name).read_bytes()
        gz = lower.endswith(".gz")
        header = nifti_header(isal_zlib.decompressobj(wbits=47).decompress(raw, 540) if gz else raw[:540])
        if header is None:
            return None
        size = int(header["vox_offset"]) + claimed_bytes(header)[1]  # what nibabel would read: no more
        if gz:
            raw = isal_zlib.decompressobj(wbits=47).decompress(raw, size)  # 32 + 15: gzip or zlib header
        if len(raw) < size:  # truncated or several gzip members: the reference reader handles (and words) it
            return None
        return correct_nifti_header_if_necessary(_IMAGE_CLASS[type(header)].from_bytes(raw[:size]))


def source_coordinates(xform: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[torch.Tensor]:
    """Per axis, the input voxel coordinate each output voxel samples, computed as MONAI + `grid_sample` do.

    MONAI turns the voxel map into a normalised one (`to_norm_affine`, align_corners=False), `affine_grid` evaluates
    it on the output grid's normalised centres and `grid_sample` maps back to voxels and clamps to the volume (border
    padding). The same float64 operations in the same order give the same coordinates, so a weight that is exactly
    0 there (an output centre on an input centre) is exactly 0 here too; this matters because
    `NormalizeIntensityd(nonzero=True)` counts every voxel that is not exactly 0.
    """
    theta = to_norm_affine(torch.as_tensor(xform, dtype=torch.float64)[None], in_shape, out_shape,
                           align_corners=False)[0]  # (4, 4) normalised output -> normalised input
    coords = []
    for axis, (n_in, n_out) in enumerate(zip(in_shape, out_shape)):
        base = torch.linspace(-1, 1, n_out, dtype=torch.float64) * (n_out - 1) / n_out  # affine_grid's centres
        grid = base * theta[axis, axis] + theta[axis, 3]
        coords.append((((grid + 1) * n_in - 1) / 2).clamp(0, n_in - 1))  # grid_sample: unnormalise, border clip
    return coords


def axis_aligned_resample(image: torch.Tensor, xform: np.ndarray, out_shape: tuple[int, ...]) -> torch.Tensor:
    """Trilinear resampling with border padding for a diagonal voxel map, as three 1D linear interpolations.

    Args:
        image: (C, X, Y, Z) float input.
        xform: (4, 4) output voxel -> input voxel map with a positive diagonal 3 x 3 part.
        out_shape: (X', Y', Z') output grid.

    Returns:
        (C, X', Y', Z') float32. Output voxel i samples the input at xform @ i clamped to the volume, as
        `grid_sample(mode="bilinear", padding_mode="border", align_corners=False)` does; weights are float64 (so
        exact zeros stay exact), the products and sums float32 (MONAI: float64, then rounded to float32), which
        keeps the values within a few float32 ulps of MONAI's at a sixth of the cost.
    """
    out = image.to(torch.float32)
    for axis, coord in enumerate(source_coordinates(xform, tuple(image.shape[1:]), tuple(out_shape))):
        n_in = out.shape[axis + 1]
        lo = coord.floor().long()
        hi = (lo + 1).clamp(max=n_in - 1)  # at the last voxel the upper weight is exactly 0
        shape = [1] * out.ndim
        shape[axis + 1] = len(coord)
        w_lo = (lo + 1 - coord).reshape(shape).to(torch.float32)  # grid_sample's weights: (lo + 1 - x), (x - lo)
        w_hi = (coord - lo).reshape(shape).to(torch.float32)
        out = out.index_select(axis + 1, lo) * w_lo + out.index_select(axis + 1, hi) * w_hi
    return out


class AxisAlignedSpacingd(MapTransform):
    """`Spacingd(mode="bilinear")` for inputs whose voxel axes are aligned with the output grid's.

    Args:
        reference: the `Spacingd` it replaces (one key, its default settings otherwise); used as is for oblique,
            flipped or already-resampled grids, pending lazy operations and any setting this path does not cover.
    """

    def __init__(self, reference: Spacingd) -> None:
        super().__init__(reference.keys, reference.allow_missing_keys)
        self.reference = reference
        spacing = reference.spacing_transform
        self.pixdim = np.asarray(spacing.pixdim, dtype=np.float64)
        self.supported = (
            len(reference.keys) == 1 and self.pixdim.size == 3 and not spacing.diagonal
            and not spacing.recompute_affine and not spacing.lazy and not reference.lazy
            and np.isnan(spacing.min_pixdim).all() and np.isnan(spacing.max_pixdim).all()
            and [str(getattr(m, "value", m)) for m in reference.mode] == ["bilinear"]
            and [str(getattr(p, "value", p)) for p in reference.padding_mode] == ["border"]
            and list(reference.align_corners) == [False] and list(reference.scale_extent) == [False]
            and [np.dtype(t) for t in reference.dtype] == [np.float64])

    def plan(self, img: object) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]] | None:
        """(output affine, output voxel -> input voxel map, output shape), or None where the reference must run."""
        if not (self.supported and isinstance(img, MetaTensor) and img.ndim == 4 and not img.pending_operations):
            return None
        src = to_affine_nd(3, np.asarray(img.affine, dtype=np.float64))
        dst = zoom_affine(src, self.pixdim, diagonal=False)  # as monai.transforms.Spacing does
        out_shape, offset = compute_shape_offset(img.shape[1:], src, dst, False)
        dst[:3, -1] = offset[:3]
        xform = np.linalg.solve(src, dst)
        linear = xform[:3, :3]
        # Exactly diagonal only: for an oblique input the map carries ~1e-17 cross terms, and MONAI's sampling
        # positions then differ in the last bit, which moves voxels in or out of the non-zero mask downstream.
        if ((linear != np.diag(np.diag(linear))).any() or (np.diag(linear) <= 0).any()
                or np.allclose(xform, np.eye(4), atol=1e-3)):  # oblique, flipped, or unchanged (a MONAI no-op)
            return None
        return dst, xform, tuple(int(s) for s in out_shape)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            plan = self.plan(img)
            if plan is None:
                return self.reference(data)
            dst, xform, out_shape = plan
            values = axis_aligned_resample(img.as_tensor(), xform, out_shape)  # (C, X', Y', Z') float32
            meta = {k: v for k, v in img.meta.items() if k != "affine"}  # the new affine replaces it
            d[key] = MetaTensor(values, affine=torch.as_tensor(dst, dtype=torch.float64), meta=meta)
        return d


def nifti_loader() -> LoadImage:
    """`LoadImage(image_only=True)` that reads NIfTI with `IsalNibabelReader` when `isal` is installed.

    The reader is registered rather than passed as `reader=`, so LoadImage keeps choosing by file suffix and a
    reader's error propagates as is (with `reader=` it would try every reader and wrap their tracebacks).
    """
    loader = LoadImage(image_only=True)
    if HAVE_ISAL:
        loader.register(IsalNibabelReader())  # tried first: LoadImage walks its readers last-registered first
    return loader


def accelerate(chain: Compose) -> Compose:
    """A copy of a built deterministic chain with the fast equivalents swapped in (see the module docstring).

    NIfTI loading (`LoadVolumed`'s `nifti` loader) gets `IsalNibabelReader` when `isal` is installed; every
    `Spacingd` is wrapped in `AxisAlignedSpacingd`. Other transforms are shared with `chain`, not copied.
    """
    steps = []
    for step in chain.transforms:
        if isinstance(step, Spacingd):
            step = AxisAlignedSpacingd(step)
        elif HAVE_ISAL and isinstance(getattr(step, "nifti", None), LoadImage):
            step = copy.copy(step)
            step.nifti = nifti_loader()
        steps.append(step)
    return Compose(steps)

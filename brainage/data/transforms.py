"""Preprocessing as MONAI dictionary transforms: one definition shared by fit, validate, test and predict.

Deterministic part (cacheable): LoadVolumed (NIfTI via MONAI LoadImage, OpenBHB `.npy` on the 1 mm MNI grid)
-> ValidateT1d -> EnsureChannelFirstd -> Orientationd(RAS) -> Spacingd
-> NormalizeIntensityd(nonzero) -> ResizeWithPadOrCropd -> EnsureTyped. Random augmentation runs after it, on the
cached tensors: cheap flips/intensity/noise by default, optional small RandAffined and RandBiasFieldd (off by default:
a bilinear 3D warp costs ~1 vol/s per CPU core). Input contract: T1w, skull-stripped (zero background), affinely
aligned to MNI152.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImage,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ResizeWithPadOrCropd,
    Spacingd,
    Transform,
)

__all__ = ["ImageError", "LoadVolumed", "MNI_1MM_AFFINE", "NPY_GRIDS", "Preprocessing", "ValidateT1", "ValidateT1d"]

# OpenBHB quasi-raw arrays lie on the 1 mm MNI grid of FSL's MNI152 (182 x 218 x 182); voxel (0, 0, 0) is at
# (-90, -126, -72) mm and axes run R, A, S (RAS affine; the arrays are stored in that order).
MNI_1MM_AFFINE = np.array([[1.0, 0, 0, -90], [0, 1.0, 0, -126], [0, 0, 1.0, -72], [0, 0, 0, 1]])
NPY_GRIDS: dict[tuple[int, int, int], np.ndarray] = {(182, 218, 182): MNI_1MM_AFFINE}


class ImageError(ValueError):
    """A scan that cannot be used: the message names the file, what was found and what was expected."""


class ValidateT1(Transform):
    """Check one loaded T1 volume (a MONAI MetaTensor or array with an affine) and squeeze a single-volume 4D image.

    Rejects: not 3D (2D, or 4D with several volumes), non-finite values, constant images, implausible voxel sizes
    and degenerate affines. Errors name the file, what was found and what was expected.
    """

    def __init__(self, min_voxel_mm: float = 0.1, max_voxel_mm: float = 10.0) -> None:
        self.min_voxel_mm, self.max_voxel_mm = min_voxel_mm, max_voxel_mm

    def __call__(self, img: torch.Tensor, name: str = "image") -> torch.Tensor:
        shape = tuple(img.shape)
        if img.ndim == 4 and shape[-1] == 1:
            img = img[..., 0]
        if img.ndim != 3:
            raise ImageError(f"{name}: found an image of shape {shape}; expected a 3D volume (or 4D with one volume)")
        if min(img.shape) < 8:
            raise ImageError(f"{name}: found shape {tuple(img.shape)}; expected a 3D volume at least 8 voxels a side")
        affine = np.asarray(getattr(img, "affine", np.eye(4)), dtype=float)
        linear = affine[:3, :3]
        if not np.isfinite(affine).all() or abs(np.linalg.det(linear)) < 1e-6:
            raise ImageError(f"{name}: found a degenerate affine {affine.tolist()}; expected an invertible "
                             "voxel-to-world")
        voxel = np.sqrt((linear**2).sum(axis=0))
        if not ((voxel >= self.min_voxel_mm) & (voxel <= self.max_voxel_mm)).all():
            raise ImageError(f"{name}: found voxel size {np.round(voxel, 3).tolist()} mm; expected "
                             f"{self.min_voxel_mm}-{self.max_voxel_mm} mm")
        data = torch.as_tensor(img)
        if not torch.isfinite(data).all():
            bad = int((~torch.isfinite(data)).sum())
            raise ImageError(f"{name}: found {bad} NaN/inf voxels; expected finite intensities")
        if float(data.max()) == float(data.min()):
            raise ImageError(f"{name}: found a constant image (every voxel = {float(data.min()):g}); "
                             "expected a T1 scan")
        return img


class LoadVolumed(MapTransform):
    """Load a file path into a MetaTensor with its affine: NIfTI through MONAI's LoadImage, `.npy` (OpenBHB) as an
    array on a known MNI grid (`NPY_GRIDS`; a leading channel of 1 is squeezed), so later transforms are shared."""

    def __init__(self, keys: str | list[str] = "image") -> None:
        super().__init__(keys)
        self.nifti = LoadImage(image_only=True)

    @staticmethod
    def load_npy(path: str) -> MetaTensor:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        shape = tuple(array.shape)
        array = array[0] if array.ndim == 4 and shape[0] == 1 else array  # (1, X, Y, Z) -> (X, Y, Z)
        if tuple(array.shape) not in NPY_GRIDS:
            raise ImageError(f"{path}: found an array of shape {shape}; expected one of "
                             f"{[(1, *grid) for grid in NPY_GRIDS]} (OpenBHB quasi-raw on the 1 mm MNI grid)")
        data = torch.from_numpy(np.asarray(array, dtype=np.float32))  # (X, Y, Z); copies out of the mmap
        return MetaTensor(data, affine=torch.as_tensor(NPY_GRIDS[tuple(array.shape)]),
                          meta={"filename_or_obj": str(path)})

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            if not path.lower().endswith(".npy"):
                d[key] = self.nifti(path)
            elif not Path(path).is_file():
                raise FileNotFoundError(f"{path}: file not found")
            else:
                d[key] = self.load_npy(path)
        return d


class ValidateT1d(MapTransform):
    """Dictionary wrapper of `ValidateT1`; names the file from the image's metadata."""

    def __init__(self, keys: str = "image", **kwargs: float) -> None:
        super().__init__(keys)
        self.validate = ValidateT1(**kwargs)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", {})
            d[key] = self.validate(d[key], name=str(meta.get("filename_or_obj", key)))
        return d


@dataclass(frozen=True)
class Preprocessing:
    """The model's input contract and the transforms that enforce it.

    Args:
        spacing: isotropic voxel size in mm after resampling (published recipes use 1, 1.5 or 2 mm).
        shape: fixed (X, Y, Z) grid after centre crop or pad; must be divisible by the model's patch size.
        augment: random flips, intensity scale/shift and noise for training (applied after the cache); False turns
            every augmentation off, including the two below.
        affine_prob: probability of a small random affine (+-0.1 rad rotation, +-5 % scale; bilinear) per volume;
            0 = off (the default: ~1 vol/s per CPU core at 160 x 192 x 160; use it on GPU-side pipelines).
        bias_field_prob: probability of a smooth multiplicative bias field (degree 3, coefficients <= 0.1).
    """

    spacing: float = 3.0
    shape: tuple[int, int, int] = (56, 64, 56)
    augment: bool = True
    affine_prob: float = 0.0
    bias_field_prob: float = 0.0
    keys: tuple[str, ...] = field(default=("image",), repr=False)

    def __post_init__(self) -> None:
        if not 0.25 <= float(self.spacing) <= 8.0:
            raise ValueError(f"spacing={self.spacing} mm is implausible; expected 0.25-8 mm (e.g. 1, 1.5 or 2)")
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise ValueError(f"shape={self.shape} must be three sizes >= 8 voxels, e.g. (56, 64, 56)")
        for name in ("affine_prob", "bias_field_prob"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} is not a probability; expected 0-1")

    def loader(self) -> Compose:
        """File path -> validated 3D MetaTensor (no resampling): the header and data checks of `deterministic`."""
        keys = list(self.keys)
        return Compose([LoadVolumed(keys=keys), ValidateT1d(keys=keys[0])])

    def cache_config(self) -> dict:
        """Everything that changes the output of `deterministic` (the persistent cache key)."""
        return {"spacing": float(self.spacing), "shape": [int(s) for s in self.shape], "keys": list(self.keys)}

    def deterministic(self) -> Compose:
        """File path -> model-ready (1, X, Y, Z) float32 MetaTensor whose `.affine` maps voxels to MNI mm."""
        keys = list(self.keys)
        return Compose([
            *self.loader().transforms,
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
            Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd(keys=keys, pixdim=(self.spacing,) * 3, mode="bilinear"),
            NormalizeIntensityd(keys=keys, nonzero=True),
            ResizeWithPadOrCropd(keys=keys, spatial_size=tuple(self.shape)),
            EnsureTyped(keys=keys, dtype=torch.float32),
        ])

    def augmentation(self) -> Compose:
        """Cheap random augmentation on cached tensors (no resampling: spatial warps cost ~1 vol/s/core on CPU)."""
        keys = list(self.keys)
        if not self.augment:
            return Compose([])
        spatial = [RandAffined(keys=keys, prob=self.affine_prob, rotate_range=(0.1,) * 3, scale_range=(0.05,) * 3,
                               mode="bilinear", padding_mode="zeros")] if self.affine_prob > 0 else []
        bias = [RandBiasFieldd(keys=keys, prob=self.bias_field_prob, degree=3, coeff_range=(0.0, 0.1))
                ] if self.bias_field_prob > 0 else []
        return Compose([
            *spatial,
            *bias,
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
            RandScaleIntensityd(keys=keys, factors=0.1, prob=0.5),
            RandShiftIntensityd(keys=keys, offsets=0.1, prob=0.5),
            RandGaussianNoised(keys=keys, prob=0.3, std=0.05),
        ])

    def contract(self) -> dict:
        """The input contract recorded in the model card."""
        return {
            "modality": "T1w",
            "skull_stripped": True,
            "space": "MNI152 (affine alignment)",
            "orientation": "RAS",
            "spacing_mm": float(self.spacing),
            "shape": [int(s) for s in self.shape],
            "normalisation": "z-score over non-zero (brain) voxels",
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("keys")
        d["shape"] = list(d["shape"])
        return d

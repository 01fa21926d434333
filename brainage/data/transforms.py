"""Preprocessing as MONAI dictionary transforms: one definition shared by fit, validate, test and predict.

Deterministic part (cacheable): LoadImaged -> ValidateT1d -> EnsureChannelFirstd -> Orientationd(RAS) -> Spacingd
-> NormalizeIntensityd(nonzero) -> ResizeWithPadOrCropd -> EnsureTyped. Random augmentation runs after it, on the
cached tensors. Input contract: T1w, skull-stripped (zero background), affinely aligned to MNI152.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ResizeWithPadOrCropd,
    Spacingd,
    Transform,
)

__all__ = ["ImageError", "Preprocessing", "ValidateT1", "ValidateT1d"]


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
            raise ImageError(f"{name}: found a degenerate affine {affine.tolist()}; expected an invertible voxel-to-world")
        voxel = np.sqrt((linear**2).sum(axis=0))
        if not ((voxel >= self.min_voxel_mm) & (voxel <= self.max_voxel_mm)).all():
            raise ImageError(f"{name}: found voxel size {np.round(voxel, 3).tolist()} mm; expected "
                             f"{self.min_voxel_mm}-{self.max_voxel_mm} mm")
        data = torch.as_tensor(img)
        if not torch.isfinite(data).all():
            bad = int((~torch.isfinite(data)).sum())
            raise ImageError(f"{name}: found {bad} NaN/inf voxels; expected finite intensities")
        if float(data.max()) == float(data.min()):
            raise ImageError(f"{name}: found a constant image (every voxel = {float(data.min()):g}); expected a T1 scan")
        return img


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
        augment: random flips, intensity scale/shift and noise for training (applied after the cache).
    """

    spacing: float = 3.0
    shape: tuple[int, int, int] = (56, 64, 56)
    augment: bool = True
    keys: tuple[str, ...] = field(default=("image",), repr=False)

    def __post_init__(self) -> None:
        if not 0.25 <= float(self.spacing) <= 8.0:
            raise ValueError(f"spacing={self.spacing} mm is implausible; expected 0.25-8 mm (e.g. 1, 1.5 or 2)")
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise ValueError(f"shape={self.shape} must be three sizes >= 8 voxels, e.g. (56, 64, 56)")

    def deterministic(self) -> Compose:
        """File path -> model-ready (1, X, Y, Z) float32 MetaTensor whose `.affine` maps voxels to MNI mm."""
        keys = list(self.keys)
        return Compose([
            LoadImaged(keys=keys, image_only=True),
            ValidateT1d(keys=keys[0]),
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
            Orientationd(keys=keys, axcodes="RAS"),
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
        return Compose([
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

"""brainage's own dictionary transforms, used in the declared preprocessing chains (`brainage.data.preprocessing`):
LoadVolumed (NIfTI via MONAI LoadImage, OpenBHB `.npy` on the 1 mm MNI grid) and ValidateT1d (the input checks).
Input contract: T1w, skull-stripped (zero background), affinely aligned to MNI152.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, Transform

__all__ = ["ImageError", "LoadVolumed", "MNI_1MM_AFFINE", "NPY_GRIDS", "ValidateT1", "ValidateT1d"]

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

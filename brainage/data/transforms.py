"""brainage's own dictionary transforms, used in the declared preprocessing chains (`brainage.data.preprocessing`):
LoadVolumed (NIfTI via MONAI LoadImage, OpenBHB `.npy` on the 1 mm MNI grid), ValidateT1d (the input checks) and
RegisterToTemplated (optional nonlinear normalisation to ICBM152, `brainage.data.registration`).
Input contract: T1w, skull-stripped (zero background), affinely aligned to MNI152.

Bounded memory per scan (our choice of limits): before a NIfTI file is decoded, `check_claimed_size` reads only its
header (inflating at most 540 bytes of a .nii.gz) and refuses a file whose header claims more than `max_voxels`
voxels (all volumes counted; a 4D image with one volume counts as 3D) or more than 16 MiB of header extensions. A
1.4 MB .nii.gz can claim 1000^3 voxels: without the check it is inflated whole (11 GB peak). The default, 512^3 =
134 M voxels, is 26x a 1 mm MNI head (182 x 218 x 182) and 4x a 0.5 mm one; decoded as float32 that is 0.5 GB.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, Transform

from brainage.data.registration import TemplateRegistration

__all__ = ["DEFAULT_MAX_VOXELS", "MAX_EXTENSION_BYTES", "MNI_1MM_AFFINE", "NPY_GRIDS", "ImageError", "LoadVolumed",
           "RegisterToTemplated", "ValidateT1", "ValidateT1d", "check_claimed_size", "claimed_bytes", "nifti_header"]

DEFAULT_MAX_VOXELS = 512**3
MAX_EXTENSION_BYTES = 16 * 2**20  # NIfTI header extensions (vox_offset) accepted before the image data
_HEADER_BYTES = 540  # a NIfTI-2 header; NIfTI-1 needs 348
_NIFTI_BY_HEADER_SIZE = {348: nib.Nifti1Header, 540: nib.Nifti2Header}  # sizeof_hdr, the first int32 of the file

# OpenBHB quasi-raw arrays lie on the 1 mm MNI grid of FSL's MNI152 (182 x 218 x 182); voxel (0, 0, 0) is at
# (-90, -126, -72) mm and axes run R, A, S (RAS affine; the arrays are stored in that order).
MNI_1MM_AFFINE = np.array([[1.0, 0, 0, -90], [0, 1.0, 0, -126], [0, 0, 1.0, -72], [0, 0, 0, 1]])
NPY_GRIDS: dict[tuple[int, int, int], np.ndarray] = {(182, 218, 182): MNI_1MM_AFFINE}


class ImageError(ValueError):
    """A scan that cannot be used: the message names the file, what was found and what was expected."""


def nifti_header(block: bytes) -> nib.Nifti1Header | None:
    """The NIfTI-1 or NIfTI-2 header at the start of `block` (either byte order), or None when it does not start
    like one or its shape and data type cannot be read."""
    for order in ("little", "big"):
        klass = _NIFTI_BY_HEADER_SIZE.get(int.from_bytes(block[:4], order))
        if klass is not None and len(block) >= klass.template_dtype.itemsize:
            try:
                header = klass(binaryblock=block[:klass.template_dtype.itemsize], check=False)
                header.get_data_shape(), header.get_data_dtype()
            except Exception:  # noqa: BLE001 - a header nibabel cannot read: the loader reports it
                return None
            return header
    return None


def claimed_bytes(header: nib.Nifti1Header) -> tuple[int, int]:
    """(voxels, bytes) of the image data a header claims."""
    voxels = math.prod(int(d) for d in header.get_data_shape())
    return voxels, voxels * header.get_data_dtype().itemsize


def _read_header_block(path: str) -> bytes:
    """The first 540 bytes of a .nii, or of the inflated stream of a .nii.gz (gzip or zlib), inflating no more."""
    with open(path, "rb") as handle:
        if not path.lower().endswith(".gz"):
            return handle.read(_HEADER_BYTES)
        inflater, block = zlib.decompressobj(47), b""  # 32 + 15: gzip or zlib header, auto-detected
        while len(block) < _HEADER_BYTES and not inflater.eof:
            data = inflater.unconsumed_tail or handle.read(1 << 16)
            if not data:
                break
            block += inflater.decompress(data, _HEADER_BYTES - len(block))
        return block


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{nbytes / 1e3:,.1f} kB"


def _claim(voxels: int, nbytes: int) -> str:
    return f"header claims {voxels:,} voxels ({_size(nbytes)})"


def check_claimed_size(path: str, max_voxels: int = DEFAULT_MAX_VOXELS) -> str:
    """Raise ImageError when the NIfTI header of `path` claims more than `max_voxels` voxels or more than 16 MiB of
    extensions; reads and inflates only the header. Returns the claim in words ("header claims N voxels (X GB)"; ""
    for files that are not single-file NIfTI or whose header cannot be read: the loader reports those)."""
    if not path.lower().endswith((".nii", ".nii.gz")):
        return ""
    try:
        header = nifti_header(_read_header_block(path))
    except (OSError, zlib.error):
        return ""  # missing, unreadable or corrupt: the loader's error names it
    if header is None:
        return ""
    voxels, nbytes = claimed_bytes(header)
    if voxels > max_voxels:
        raise ImageError(f"{path}: {_claim(voxels, nbytes)}; limit {max_voxels:,} voxels "
                         f"(shape {list(header.get_data_shape())}; expected a head scan; a larger limit: predict "
                         f"--max-voxels, or LoadVolumed max_voxels)")
    offset = float(header["vox_offset"])
    if not offset <= MAX_EXTENSION_BYTES:  # also refuses NaN
        raise ImageError(f"{path}: header claims the image data start at byte {offset:,.0f}; expected at most "
                         f"{MAX_EXTENSION_BYTES:,} bytes of header extensions")
    return _claim(voxels, nbytes)


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
    array on a known MNI grid (`NPY_GRIDS`; a leading channel of 1 is squeezed), so later transforms are shared.

    Args:
        max_voxels: refuse, from the header and before decoding, a NIfTI file claiming more voxels than this
            (`check_claimed_size`).
    """

    def __init__(self, keys: str | list[str] = "image", max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
        super().__init__(keys)
        if not (isinstance(max_voxels, int) and max_voxels >= 1):
            raise ValueError(f"max_voxels={max_voxels!r}; expected a positive integer")
        self.max_voxels = max_voxels
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
                claim = check_claimed_size(path, self.max_voxels)
                try:
                    d[key] = self.nifti(path)
                except MemoryError:
                    raise ImageError(f"{path}: out of memory while decoding it ({claim or 'size unknown'})") from None
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


class RegisterToTemplated(MapTransform):
    """Nonlinear normalisation of a (1, X, Y, Z) RAS image to the ICBM152 T1 (`TemplateRegistration`: affine + FFD);
    the output lies on the MNI grid at ``spacing`` mm. Deterministic, so it belongs in the cached chain, after
    Orientationd and before Spacingd. A fit that ends below ``min_correlation`` raises ImageError naming the file.

    Args: those of `brainage.data.registration.TemplateRegistration`.
    """

    def __init__(self, keys: str | list[str] = "image", control_points: list[int] | tuple[int, int, int] = (7, 8, 7),
                 smoothness: float = 0.01, iterations: int = 60, fit_spacing: float = 4.0, spacing: float = 2.0,
                 min_correlation: float = 0.5) -> None:
        super().__init__(keys)
        self.register = TemplateRegistration(tuple(control_points), smoothness, iterations, fit_spacing, spacing,
                                             min_correlation)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = dict(getattr(img, "meta", {}))
            name = str(meta.get("filename_or_obj", key))
            if img.ndim != 4 or img.shape[0] != 1:
                raise ImageError(f"{name}: found an image of shape {tuple(img.shape)} before registration; expected "
                                 "(1, X, Y, Z) (put RegisterToTemplated after EnsureChannelFirstd)")
            out = self.register(torch.as_tensor(img)[0], np.asarray(img.affine, dtype=np.float64))
            if not out.correlation >= self.register.min_correlation:  # also refuses NaN
                raise ImageError(f"{name}: registration to the ICBM152 T1 ended at correlation {out.correlation:.3f}; "
                                 f"expected >= {self.register.min_correlation} (a skull-stripped T1 affinely near "
                                 "MNI152, see the input contract)")
            meta.pop("affine", None)
            d[key] = MetaTensor(out.image[None], affine=torch.as_tensor(out.affine), meta=meta)  # (1, X, Y, Z)
        return d

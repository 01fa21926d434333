"""The preprocessing steps of ``brainage prepare``: N4 bias correction, skull stripping, registration, resampling.

- N4 (Tustison et al. 2010, IEEE TMI 29:1310), SimpleITK, fitted on a ~5 mm shrunken copy (3 fitting levels,
  40/30/20 iterations) inside an Otsu head mask; the full-resolution log bias field is then divided out.
- Skull stripping: deepbet (Fisch et al. 2024, Comput Biol Med, doi 10.1016/j.compbiomed.2024.108845; MIT; its
  weights ship inside its wheel, nothing is downloaded; run on the CPU with one torch thread), or
  ``template``: a first registration of the whole head, the ICBM152 brain mask (dilated 2 voxels of 2 mm) mapped
  back to the subject, and a second (affine) registration of the stripped brain started from the first.
- Affine registration to the ICBM152 2009a T1 and resampling: :mod:`brainage.prepare.register`.

Research use only, not for diagnosis.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from brainage.data.manifest import SkullStrip
from brainage.prepare.register import (affine_register, from_sitk, resample_to_grid, template_sitk, to_sitk,
                                       transform_to_ras)

__all__ = ["PreparedImage", "deepbet_available", "n4_correct", "prepare_image", "skull_strip_deepbet",
           "skull_strip_template"]

_N4_SHRINK_MM = 5.0  # N4 is fitted on a copy shrunk to about this voxel size (the bias field is smooth)


@dataclass(frozen=True)
class PreparedImage:
    """Output of :func:`prepare_image`: the brain on the MNI grid and the fitted transform."""

    data: np.ndarray  # (X, Y, Z) float32 on mni_grid(spacing), 0 outside the brain
    mni_to_world: np.ndarray  # (4, 4) RAS: MNI mm -> raw image world mm (the affine registration)


def deepbet_available() -> bool:
    """True when deepbet and its packaged weights can be imported (no network needed)."""
    try:
        from deepbet.utils import DATA_PATH
    except ImportError:
        return False
    return (Path(DATA_PATH) / "models" / "model.pt").is_file()


def n4_correct(image: sitk.Image) -> sitk.Image:
    """Bias-corrected float32 copy of ``image`` (negative values clipped to 0 first)."""
    image = sitk.Cast(sitk.Threshold(sitk.Cast(image, sitk.sitkFloat32), 0.0, 1e30, 0.0), sitk.sitkFloat32)
    head = sitk.OtsuThreshold(image, 0, 1, 128)
    shrink = [max(1, int(round(_N4_SHRINK_MM / s))) for s in image.GetSpacing()]
    small, small_head = sitk.Shrink(image, shrink), sitk.Shrink(head, shrink)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([40, 30, 20])
    n4.Execute(small, small_head)
    log_bias = n4.GetLogBiasFieldAsImage(image)
    return sitk.Cast(image / sitk.Exp(log_bias), sitk.sitkFloat32)


@functools.lru_cache(maxsize=1)
def _deepbet_model():
    from deepbet import BrainExtraction

    return BrainExtraction(no_gpu=True)


def skull_strip_deepbet(image: sitk.Image) -> sitk.Image:
    """``image`` with voxels outside the deepbet brain mask set to 0.

    deepbet runs with one torch thread (reproducible CPU kernels; parallelism comes from worker processes); the
    caller's thread count is restored afterwards.
    """
    import torch

    data, affine = from_sitk(image)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, mask, _ = _deepbet_model().run(nib.Nifti1Image(data, affine))
    finally:
        torch.set_num_threads(threads)
    keep = np.asarray(mask.dataobj) > 0
    return to_sitk(np.where(keep, data, 0.0).astype(np.float32), affine)


def skull_strip_template(image: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """``image`` with voxels outside the template brain mask (dilated 2 mm), mapped through ``transform``, set to 0.

    ``transform`` maps template points to ``image`` points (as :func:`affine_register` returns it).
    """
    _, mask = template_sitk()
    inverse = transform.GetInverse()
    mapped = sitk.Resample(mask, image, inverse, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.Mask(image, mapped)


def prepare_image(data: np.ndarray, affine: np.ndarray, spacing: float,
                  skull_strip: SkullStrip = "deepbet") -> PreparedImage:
    """Raw T1 (X, Y, Z) + RAS ``affine`` -> N4 -> skull strip -> affine to ICBM152 -> MNI grid at ``spacing`` mm."""
    if skull_strip not in ("deepbet", "template"):
        raise ValueError(f"skull_strip {skull_strip!r} is not one of ('deepbet', 'template')")
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3D T1 volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    corrected = n4_correct(to_sitk(data, affine))
    if skull_strip == "deepbet":
        brain, initial = skull_strip_deepbet(corrected), None
    else:
        initial = affine_register(corrected)  # whole head: only needed to map the template brain mask back
        brain = skull_strip_template(corrected, initial)
    transform = affine_register(brain, initial)
    out = resample_to_grid(brain, transform, spacing)
    return PreparedImage(data=out.astype(np.float32), mni_to_world=transform_to_ras(transform))

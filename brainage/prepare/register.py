"""SimpleITK image plumbing and affine registration to the ICBM152 2009a T1 (Lowekamp et al. 2013, Front
Neuroinform 7:45; Yaniv et al. 2018, J Digit Imaging 31:290).

Registration: centre-of-mass initialisation, then a similarity (7 dof) and a full affine (12 dof) stage, each
multi-resolution (shrink 4/2/1 over a 2 mm template, Gaussian smoothing 2/1/0 voxels), Mattes mutual information
(Mattes et al. 2003, IEEE TMI 22:120) on a fixed, seeded regular sample inside the dilated template brain, regular-step
gradient descent with scales from physical shift. Determinism: the sampling seed is fixed and every ITK filter runs
with the thread count set by :func:`set_threads` (one per worker process by default), so the same input gives the same
bits. Nibabel arrays are RAS voxel -> mm; ITK images are LPS: :func:`to_sitk` / :func:`from_sitk` convert.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from brainage.reference.templates import icbm152_on_grid, mni_grid

__all__ = ["REGISTRATION_SPACING_MM", "SAMPLING_SEED", "affine_register", "from_sitk", "resample_to_grid",
           "set_threads", "template_sitk", "to_sitk", "transform_to_ras"]

REGISTRATION_SPACING_MM = 2.0  # the fixed (template) image of the registration
SAMPLING_SEED = 20240611  # fixed metric sampling seed: same input -> same samples -> same transform
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS world flip (its own inverse)


def set_threads(n: int) -> None:
    """Run every SimpleITK filter in this process with ``n`` threads (results are reproducible for a fixed ``n``)."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))


def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """float32 SimpleITK image of a nibabel-style (X, Y, Z) array with a RAS voxel -> mm ``affine``."""
    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing[None, :]
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ValueError(f"affine {np.round(affine, 4).tolist()} has shear; expected rotation x zoom (a NIfTI "
                         "qform/sform without shear)")
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(data (X, Y, Z), RAS affine) of a SimpleITK image (inverse of :func:`to_sitk`)."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (Z, Y, X) -> (X, Y, Z)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())[None, :]
    lps[:3, 3] = image.GetOrigin()
    return np.ascontiguousarray(data), _LPS @ lps


def template_sitk(spacing: float = REGISTRATION_SPACING_MM) -> tuple[sitk.Image, sitk.Image]:
    """(template T1, brain mask dilated by 2 voxels) as SimpleITK images at ``spacing`` mm."""
    t1, affine = icbm152_on_grid(spacing)
    mask = ndi.binary_dilation(t1 > 0.05, iterations=2).astype(np.uint8)
    return to_sitk(t1, affine), sitk.Cast(to_sitk(mask, affine), sitk.sitkUInt8)


def _stage(fixed: sitk.Image, moving: sitk.Image, fixed_mask: sitk.Image, initial: sitk.Transform,
           iterations: int, sampling: float) -> sitk.Transform:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(sampling, SAMPLING_SEED)
    method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def affine_register(moving: sitk.Image, initial: sitk.AffineTransform | None = None, iterations: int = 100,
                    sampling: float = 0.25) -> sitk.AffineTransform:
    """Affine transform mapping template (MNI, LPS) points to ``moving`` points (ITK convention).

    ``moving`` is a T1 in any orientation (ideally bias-corrected; skull-stripped or not). Without ``initial``, a
    centre-of-mass alignment starts a similarity stage; the affine stage always follows.
    """
    fixed, fixed_mask = template_sitk()
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    if initial is None:
        start = sitk.CenteredTransformInitializer(fixed, moving, sitk.Similarity3DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.MOMENTS)
        similarity = sitk.Similarity3DTransform(_unwrap(_stage(fixed, moving, fixed_mask, start, iterations, sampling)))
        initial = sitk.AffineTransform(similarity.GetMatrix(), similarity.GetTranslation(), similarity.GetCenter())
    result = _stage(fixed, moving, fixed_mask, sitk.AffineTransform(initial), iterations, sampling)
    return sitk.AffineTransform(_unwrap(result))


def _unwrap(transform: sitk.Transform) -> sitk.Transform:
    """The single transform inside the CompositeTransform that ``ImageRegistrationMethod.Execute`` returns."""
    if isinstance(transform, sitk.CompositeTransform) or transform.GetName() == "CompositeTransform":
        transform = sitk.CompositeTransform(transform)
        if transform.GetNumberOfTransforms() != 1:
            raise RuntimeError(f"expected one transform from the registration, got {transform.GetNumberOfTransforms()}")
        return transform.GetNthTransform(0).Downcast()
    return transform.Downcast()


def transform_to_ras(transform: sitk.AffineTransform) -> np.ndarray:
    """(4, 4) RAS mm map of an ITK affine (LPS): MNI mm -> moving image world mm."""
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    centre = np.asarray(transform.GetCenter())
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = centre + np.asarray(transform.GetTranslation()) - matrix @ centre
    return _LPS @ lps @ _LPS


def resample_to_grid(moving: sitk.Image, transform: sitk.Transform, spacing: float) -> np.ndarray:
    """``moving`` resampled onto :func:`mni_grid` ``(spacing)`` through ``transform`` (linear, 0 outside).

    The moving image is first smoothed with FWHM^2 = spacing^2 - voxel^2 when the output grid is coarser.
    """
    shape, grid = mni_grid(spacing)
    voxel = min(moving.GetSpacing())
    if spacing > voxel:
        sigma_mm = np.sqrt(spacing**2 - voxel**2) / 2.355
        moving = sitk.SmoothingRecursiveGaussian(moving, float(sigma_mm))
    reference = to_sitk(np.zeros(shape, dtype=np.float32), grid)
    out = sitk.Resample(moving, reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return from_sitk(out)[0]

"""The reference image that attribution compares each scan with: what a young brain looks like on the model grid.

- ``young`` (our choice since the first report): the voxel-wise mean of the youngest third of the scans with a known
  age (at least 2), the same idea as the baseline input of integrated gradients (Sundararajan et al. 2017): a region's
  contribution is then the number of years its deviation from a young brain adds, with the sign of ageing.
- ``young_matched`` (default of :mod:`brainage.report.attribute`): the young reference mapped to each scan by an
  affine intensity fit ``a * ref + b`` over brain voxels (trimmed least squares: the ``TRIM`` share of voxels with the
  smallest residuals, refitted twice). Per-subject z-scoring inside the brain makes every voxel of an old scan an
  affine function of its young counterpart when only some regions changed (a larger ventricle lowers the brain mean
  and widens its spread), so an unmatched reference lets untouched regions carry age. Matching removes that global
  shift and keeps regional differences; the attribution benchmark measures both.
- ``young_scans``: one individual young scan per subject (subject s gets young scan ``s mod y``, never itself),
  intensity-matched as above. A mean image is smoother than any scan (it averages away noise and anatomical
  variation), so replacing a large part of a scan by it leaves the scans the model was trained on; individual scans
  stay on that manifold, and averaging over subjects averages over the young scans (as SHAP's background samples).
- ``cohort``: the voxel-wise mean of all scans (old and young scans then move in opposite directions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import numpy as np

__all__ = [
    "MIN_YOUNG",
    "TRIM",
    "Reference",
    "matched_reference",
    "reference_image",
    "subject_baselines",
    "young_indices",
]

Reference = Literal["young_matched", "young", "young_scans", "cohort"]
MIN_YOUNG = 2  # scans in the young reference at the least
TRIM = 0.8  # share of brain voxels kept by each trimmed least-squares pass of matched_reference


def young_indices(ages: Sequence[float | None], count: int) -> np.ndarray:
    """Indices of the youngest third (at least ``MIN_YOUNG``) of ``count`` scans with a known age; empty when fewer
    than 3 ages are known."""
    ages = np.asarray([math.nan if a is None else float(a) for a in ages], dtype=np.float64)
    if len(ages) != count:
        raise ValueError(f"need one age per image: {len(ages)} ages for {count} images")
    known = np.flatnonzero(~np.isnan(ages))
    if len(known) < 3:
        return np.zeros(0, dtype=np.int64)
    return known[np.argsort(ages[known], kind="stable")][: max(MIN_YOUNG, len(known) // 3)]


def reference_image(images: np.ndarray, ages: Sequence[float | None], kind: str = "young") -> tuple[np.ndarray, str]:
    """The reference (X, Y, Z) of a stack (s, X, Y, Z) and a sentence describing it.

    ``young``: voxel-wise mean of the youngest third of the scans with a known age (at least 2); falls back to the
    cohort mean when fewer than 3 ages are known. ``cohort``: voxel-wise mean of all scans.
    """
    if kind not in ("young", "cohort"):
        raise ValueError(f"occlusion reference must be 'young' or 'cohort', got {kind!r}")
    young = young_indices(ages, len(images))
    if kind == "cohort" or len(young) == 0:
        why = "" if kind == "cohort" else " (fewer than 3 known ages: no young reference)"
        return images.mean(axis=0), f"the voxel-wise mean of the {len(images)} occluded scans{why}"
    known = np.asarray([math.nan if a is None else float(a) for a in ages])[young]
    return images[young].mean(axis=0), (f"the voxel-wise mean of the {len(young)} youngest occluded scans (ages "
                                        f"{known.min():.0f}-{known.max():.0f} y)")


def intensity_fit(reference: np.ndarray, image: np.ndarray, passes: int = 2) -> tuple[float, float]:
    """(a, b) of ``image ~ a * reference + b`` over voxels non-zero in both (both (X, Y, Z)), by least squares on the
    ``TRIM`` share of voxels with the smallest residuals (``passes`` refits)."""
    reference, image = np.asarray(reference, dtype=np.float64), np.asarray(image, dtype=np.float64)
    if reference.shape != image.shape:
        raise ValueError(f"reference {reference.shape} and image {image.shape} must share one grid")
    both = (reference != 0) & (image != 0)
    if both.sum() < 10:
        raise ValueError(f"only {int(both.sum())} voxels are non-zero in both the reference and the image; expected "
                         "two brain images on one grid")
    r, x = reference[both], image[both]
    keep = np.ones(len(r), dtype=bool)
    for _ in range(passes + 1):
        a, b = np.polyfit(r[keep], x[keep], 1)
        residual = np.abs(x - (a * r + b))
        keep = residual <= np.quantile(residual, TRIM)
    return float(a), float(b)


def matched_reference(reference: np.ndarray, image: np.ndarray, passes: int = 2) -> np.ndarray:
    """The reference mapped onto ``image``'s intensities, ``a * reference + b`` (:func:`intensity_fit`); 0 where
    ``reference`` is 0."""
    a, b = intensity_fit(reference, image, passes)
    return np.where(np.asarray(reference) != 0, a * np.asarray(reference, dtype=np.float64) + b, 0.0).astype(
        np.float32)


def subject_baselines(images: np.ndarray, ages: Sequence[float | None], reference: Reference = "young_matched"
                      ) -> tuple[Callable[[int], np.ndarray], np.ndarray, str]:
    """The baseline of each subject, the young scans and a sentence describing the reference.

    With fewer than 3 known ages there are no young scans: ``young`` and ``young_matched`` fall back to the cohort mean
    (said in the description), ``young_scans`` raises.

    Returns:
        (``baseline(s)`` -> (X, Y, Z) float32, young indices (y,), possibly empty, description).
    """
    if reference not in get_args(Reference):
        raise ValueError(f"reference must be one of {list(get_args(Reference))}, got {reference!r}")
    young = young_indices(ages, len(images))
    if len(young) == 0 and reference == "young_scans":
        raise ValueError("the young_scans reference needs at least 3 scans with a known age")
    if reference == "young_scans":
        ages_known = np.asarray([math.nan if a is None else float(a) for a in ages])[young]

        def scan(s: int) -> np.ndarray:
            choice = [y for y in young if y != s]
            return matched_reference(images[choice[s % len(choice)]], images[s])

        return scan, young, (f"one of the {len(young)} youngest scans per subject (ages {ages_known.min():.0f}-"
                             f"{ages_known.max():.0f} y, never the scan itself), intensity-matched to the scan")
    mean, described = reference_image(images, ages, "cohort" if reference == "cohort" else "young")
    mean = mean.astype(np.float32)
    if reference != "young_matched":
        return (lambda s: mean), young, described
    return (lambda s: matched_reference(mean, images[s])), young, described + (
        ", intensity-matched to each scan (a * ref + b, trimmed least squares over the brain)")

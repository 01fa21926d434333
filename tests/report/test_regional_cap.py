"""The report's regional age models cap each region at MAX_VOXELS interior voxels from CAP_FROM_SUBJECTS scans on and
use every interior voxel below (docs/report.md, "Size matching at fewer scans"): the fitted errors equal the capped or
uncapped fit of the same voxels, and the sentence the page prints says which."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from brainage.attribution.contraction import SlopeMaps
from brainage.attribution.mapping import RegionIndex
from brainage.attribution.regional import CAP_FROM_SUBJECTS, MAX_VOXELS, fit_regional_models, interior_rows, voxel_cap
from brainage.report.collect import _fit_regional
from brainage.report.progress import StageProgress
from brainage.report.settings import ReportSettings

INDEX = RegionIndex.from_names({1: "L-large", 2: "R-small"})


@pytest.mark.parametrize("subjects", [CAP_FROM_SUBJECTS - 1, CAP_FROM_SUBJECTS])
def test_the_report_caps_the_voxels_only_from_cap_from_subjects_scans(subjects):
    rng = np.random.default_rng(0)
    ages = rng.uniform(20, 80, subjects)
    regions = np.full((14, 14, 14), -1)
    regions[:9], regions[11:13, 5:8, 5:8] = 0, 1  # a region with more interior voxels than the cap, one with fewer
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    images = rng.normal(size=(subjects, 14, 14, 14)).astype(np.float32)
    images[:, regions == 0] += (ages[:, None] - 50) / 40  # a weak change over many voxels
    voxels = [image[regions >= 0] for image in images]
    settings = ReportSettings(inputs=("unused",), out=Path("unused"))
    slopes = SlopeMaps()
    for image, age in zip(images, ages):
        slopes.add(image, age)
    models, described = _fit_regional(voxels, ages, slopes, regions, affine, INDEX, settings,
                                      StageProgress(["regional age models"], stream=io.StringIO()), "in the test")
    inner = interior_rows(regions, affine)[regions >= 0]
    assert (inner == 0).sum() > MAX_VOXELS >= (inner == 1).sum() > 0
    capped = subjects >= CAP_FROM_SUBJECTS
    assert voxel_cap(subjects) == (MAX_VOXELS if capped else None)
    expected = fit_regional_models(np.stack(voxels), ages, regions[regions >= 0], INDEX, seed=settings.seed,
                                   interior=inner, max_voxels=MAX_VOXELS if capped else None)
    other = fit_regional_models(np.stack(voxels), ages, regions[regions >= 0], INDEX, seed=settings.seed,
                                interior=inner, max_voxels=None if capped else MAX_VOXELS)
    np.testing.assert_array_equal(models.errors, expected.errors)
    assert not np.allclose(models.errors[:, 0], other.errors[:, 0])  # the large region's models differ
    np.testing.assert_array_equal(models.errors[:, 1], other.errors[:, 1])  # the small one is never capped
    assert (f"at most {MAX_VOXELS} of them per model" in described) == capped
    assert ("no voxel cap" in described) == (not capped)
    assert models.contraction is None  # no lateral ventricles in this atlas: no shares

"""Captum region attribution against analytic answers: on a linear model f(x) = sum(w * x) + c every method's region
contribution is sum over the region of w * (x - baseline), exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainage.attribution.mapping import RegionIndex
from brainage.attribution.masks import VoxelSets, band_sets, colour_classes, null_sets, region_sets
from brainage.attribution.reference import matched_reference
from brainage.report.attribute import (
    ablation_contributions,
    attribute_methods,
    attribute_regions,
    gradient_map,
    set_contributions,
    shapley_contributions,
)
from brainage.report.settings import METHODS

SHAPE = (12, 10, 8)


def _toy(seed: int = 0, subjects: int = 6):
    """Three box regions inside a box brain, random weights, scans, ages."""
    rng = np.random.default_rng(seed)
    regions = np.full(SHAPE, -1)
    regions[2:5, 2:8, 2:6] = 0
    regions[6:9, 2:5, 2:6] = 1
    regions[6:9, 6:8, 2:6] = 2
    brain = np.zeros(SHAPE, dtype=bool)
    brain[1:11, 1:9, 1:7] = True
    weight = torch.as_tensor(rng.normal(size=SHAPE).astype(np.float32) * brain)
    images = (rng.normal(1.0, 0.5, size=(subjects, *SHAPE)) * brain).astype(np.float32)

    def forward(x: torch.Tensor, s: int) -> torch.Tensor:  # (m, 1, X, Y, Z) -> (m,)
        return (x[:, 0] * weight).sum(dim=(1, 2, 3)) + 40.0 + s

    return forward, weight.numpy().astype(np.float64), images, regions, brain, np.linspace(20, 80, subjects)


def _expected(weight: np.ndarray, image: np.ndarray, baseline: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sum((weight * (image - baseline))[mask]))


def test_ablation_matches_the_analytic_linear_answer_for_overlapping_sets():
    forward, weight, images, regions, brain, _ = _toy()
    baseline = images[:2].mean(axis=0)
    masks = [regions == 0, regions == 1, (regions == 0) | (regions == 1), brain & (regions < 0)]  # sets 0, 2 overlap
    sets = VoxelSets.from_masks(masks, SHAPE)
    assert len(colour_classes(sets)) == 2
    got = ablation_contributions(forward, images[3], sets, baseline, subject=3, batch_size=2)
    expected = [_expected(weight, images[3], baseline, m) for m in masks]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_shap"])
def test_gradient_maps_of_a_linear_model_are_weight_times_difference(method):
    forward, weight, images, _, _, _ = _toy()
    baseline = images[0]
    given = baseline if method == "integrated_gradients" else baseline[None]  # one SHAP baseline: exact
    voxel = gradient_map(forward, images[4], given, subject=4, method=method, n_steps=8, batch_size=4)
    np.testing.assert_allclose(voxel, weight * (images[4] - baseline), atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_the_analytic_region_contributions(method):
    forward, weight, images, regions, brain, ages = _toy(subjects=6)
    index = RegionIndex((1, 2, 3), ("L-a", "R-a", "B-c"))
    out = attribute_regions(forward, images, ages, regions, index, method, reference="young", spacing=1.0,
                            band_mm=1.0, n_null=5, n_steps=4, batch_size=4)
    young = images[np.argsort(ages)[:2]].mean(axis=0)  # youngest third of 6 scans
    bands, _shells = band_sets(regions, 3, brain, 1.0, 1.0)
    for s in range(len(images)):
        if method == "gradient_shap":  # expectation over the young scans: exact for a linear model in expectation
            continue
        for r in range(3):
            own = _expected(weight, images[s], young, regions == r)
            assert out.own[s, r] == pytest.approx(own, abs=1e-3)
            if method.startswith("band_"):
                assert out.values[s, r] == pytest.approx(_expected(weight, images[s], young, bands.mask(r)), abs=1e-3)
                assert out.shell[s, r] == pytest.approx(out.values[s, r] - out.own[s, r], abs=1e-9)
            else:
                assert out.values[s, r] == pytest.approx(own, abs=1e-3)
    assert out.null_values.shape == (6, 5) and np.all(out.null_sizes > 0) and out.seconds_per_subject > 0
    if method == "gradient_shap":  # mean over subjects of the young-scan expectation: close to the mean baseline
        expected = np.mean([[_expected(weight, images[s], young, regions == r) for r in range(3)] for s in range(6)],
                           axis=0)
        np.testing.assert_allclose(out.values.mean(axis=0), expected, atol=0.35 * np.abs(expected).max())


def test_matched_reference_undoes_a_global_affine_intensity_change():
    rng = np.random.default_rng(1)
    reference = np.zeros(SHAPE, dtype=np.float32)
    reference[1:11, 1:9, 1:7] = rng.normal(0, 1, size=(10, 8, 6))
    image = np.where(reference != 0, 0.7 * reference - 0.3, 0).astype(np.float32)
    changed = np.zeros(SHAPE, dtype=bool)
    changed[2:4, 2:4, 2:4] = True  # a local effect (8 of 480 brain voxels) must not bend the fit
    image[changed] += 3.0
    matched = matched_reference(reference, image)
    np.testing.assert_allclose(matched[~changed], image[~changed], atol=1e-4)
    assert np.all(image[changed] - matched[changed] > 2.9) and np.all(matched[reference == 0] == 0)
    with pytest.raises(ValueError, match="share one grid"):
        matched_reference(reference, image[:-1])


def test_null_sets_are_shape_matched_copies_inside_the_brain():
    _, _, _, regions, brain, _ = _toy()
    sets = region_sets(regions, 3)
    nulls, source = null_sets(sets, brain, count=20, seed=3)
    assert len(nulls) == 20 and set(source) <= {0, 1, 2}
    for i in range(20):
        mask = nulls.mask(i)
        assert mask.sum() >= 0.9 * sets.sizes[source[i]] and not (mask & ~brain).any()


def test_bad_arguments_are_named():
    forward, _, images, regions, _, ages = _toy()
    index = RegionIndex((1, 2, 3), ("a", "b", "c"))
    with pytest.raises(ValueError, match="attribution method"):
        attribute_regions(forward, images, ages, regions, index, "saliency")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="region grid"):
        attribute_regions(forward, images[:, :-1], ages, regions, index)
    with pytest.raises(ValueError, match="at least 3 scans with a known age"):
        attribute_regions(forward, images, [None] * len(images), regions, index, "gradient_shap")
    with pytest.raises(ValueError, match="at least 3 scans with a known age"):
        attribute_regions(forward, images, [None] * len(images), regions, index, reference="young_scans")


def test_without_known_ages_the_young_reference_falls_back_to_the_cohort_mean():
    forward, weight, images, regions, _, _ = _toy(subjects=4)
    index = RegionIndex((1, 2, 3), ("L-a", "R-a", "B-c"))
    out = attribute_regions(forward, images, [None, 30.0, None, None], regions, index, "occlusion",
                            reference="young", n_null=2)
    mean = images.mean(axis=0)
    assert "fewer than 3 known ages" in out.reference
    assert out.values[2, 1] == pytest.approx(_expected(weight, images[2], mean, regions == 1), abs=1e-3)


def test_methods_computed_together_equal_methods_computed_alone():
    forward, _, images, regions, _, ages = _toy(subjects=5)
    index = RegionIndex((1, 2, 3), ("L-a", "R-a", "B-c"))
    options = {"reference": "young_matched", "spacing": 1.0, "band_mm": 1.0, "n_null": 4, "n_steps": 4, "batch_size": 3}
    together = attribute_methods(forward, images, ages, regions, index, METHODS, **options)
    assert list(together) == list(METHODS)
    for method in METHODS:
        alone = attribute_regions(forward, images, ages, regions, index, method, **options)
        np.testing.assert_allclose(together[method].values, alone.values, atol=1e-4)
        np.testing.assert_allclose(together[method].null_values, alone.null_values, atol=1e-4)
    np.testing.assert_allclose(together["band_occlusion"].own, together["occlusion"].values, atol=1e-4)
    np.testing.assert_allclose(together["band_integrated_gradients"].own, together["integrated_gradients"].values,
                               atol=1e-4)


def test_set_contributions_occlude_each_named_set_at_once():
    forward, weight, images, regions, _, ages = _toy(subjects=6)
    index = RegionIndex((1, 2, 3), ("L-a", "R-a", "B-c"))
    sets = {"a": ["L-a", "R-a"], "c": ["B-c"], "unknown": ["X-missing"]}
    values, voxels, described = set_contributions(forward, images, ages, regions, index, sets, reference="young")
    young = images[:2].mean(axis=0)
    for s in range(6):
        assert values[s, 0] == pytest.approx(_expected(weight, images[s], young, np.isin(regions, [0, 1])), abs=1e-3)
        assert values[s, 1] == pytest.approx(_expected(weight, images[s], young, regions == 2), abs=1e-3)
    assert np.isnan(values[:, 2]).all() and voxels[2] == 0 and "2 youngest" in described


def test_a_subset_of_subjects_keeps_the_reference_of_all_scans():
    forward, _, images, regions, _, ages = _toy(subjects=6)
    index = RegionIndex((1, 2, 3), ("L-a", "R-a", "B-c"))
    options = {"reference": "young", "spacing": 1.0, "n_null": 3, "n_steps": 4}
    full = attribute_methods(forward, images, ages, regions, index, ["occlusion", "integrated_gradients"], **options)
    part = attribute_methods(forward, images, ages, regions, index, ["occlusion", "integrated_gradients"],
                             subjects=[4, 1], keep_maps=True, **options)
    for method in ("occlusion", "integrated_gradients"):
        np.testing.assert_allclose(part[method].values, full[method].values[[4, 1]], atol=1e-4)
    assert part["integrated_gradients"].maps.shape == (2, *SHAPE) and part["occlusion"].maps is None
    with pytest.raises(ValueError, match="subjects must index"):
        attribute_methods(forward, images, ages, regions, index, ["occlusion"], subjects=[6], **options)


def test_young_scan_references_are_individual_matched_scans_never_the_scan_itself():
    from brainage.attribution.reference import subject_baselines

    _, _, images, _, _, ages = _toy(subjects=7)  # youngest third: scans 0 and 1
    baseline, young, described = subject_baselines(images, ages, "young_scans")
    assert list(young) == [0, 1] and "never the scan itself" in described
    np.testing.assert_allclose(baseline(0), matched_reference(images[1], images[0]), atol=1e-6)
    np.testing.assert_allclose(baseline(1), matched_reference(images[0], images[1]), atol=1e-6)
    picked = {int(np.argmin([np.abs(baseline(s) - matched_reference(images[y], images[s])).max() for y in (0, 1)]))
              for s in range(2, 7)}
    assert picked == {0, 1}  # the older scans cycle through both young scans


def _interacting(weight: torch.Tensor, regions: np.ndarray):
    """A model whose regions interact: f = (w . x on region 0) * (w . x on region 1) + tanh(w . x on region 2)."""
    masks = [torch.as_tensor(regions == r) for r in range(3)]

    def forward(x: torch.Tensor, s: int) -> torch.Tensor:  # (m, 1, X, Y, Z) -> (m,)
        a, b, c = ((x[:, 0] * weight * m).sum(dim=(1, 2, 3)) for m in masks)
        return a * b + torch.tanh(c) + s

    return forward


def test_shapley_sampling_matches_captum_exact_shapley_values_and_adds_up():
    from captum.attr import ShapleyValues

    _, weight, images, regions, brain, _ = _toy()
    forward = _interacting(torch.as_tensor(weight, dtype=torch.float32), regions)
    baseline = images[:2].mean(axis=0)
    sets, nulls = region_sets(regions, 3), VoxelSets.from_masks([brain & (regions < 0)], SHAPE)
    x, b = torch.as_tensor(images[3])[None, None], torch.as_tensor(baseline)[None, None]
    feature = torch.as_tensor(regions + 1)[None, None]  # feature 0 = outside the regions, kept from the scan
    exact = ShapleyValues(lambda t: forward(t, 3)).attribute(x, baselines=torch.where(feature > 0, b, x),
                                                             feature_mask=feature)
    exact = np.array([float(exact[0, 0][torch.as_tensor(regions == r)][0]) for r in range(3)])
    # The toy's interactions are pairwise (regions 0 and 1), and in every antithetic pair one order puts region 0
    # before region 1 and the other after: so sampled pairs give the exact values, whichever orders are drawn.
    values, null = shapley_contributions(forward, images[3], sets, nulls, baseline, subject=3, permutations=60)
    np.testing.assert_allclose(values, exact, rtol=1e-4, atol=1e-4)
    full = forward(x, 3).item()
    empty = forward(torch.where(torch.as_tensor(regions >= 0)[None, None], b, x), 3).item()
    few, _ = shapley_contributions(forward, images[3], sets, nulls, baseline, subject=3, permutations=2, seed=5)
    assert few.sum() == pytest.approx(full - empty, abs=1e-4)  # efficiency holds for every sampled order
    assert null[0] == pytest.approx(0.0, abs=1e-6)  # the model never reads voxels outside the regions
    assert abs(values[0]) > 1e-3 and abs(values[2]) > 1e-3


def test_shapley_null_sets_are_valued_as_extra_players():
    _, weight, images, regions, _, _ = _toy()
    forward = _interacting(torch.as_tensor(weight, dtype=torch.float32), regions)
    baseline = images[:2].mean(axis=0)
    sets = region_sets(regions, 3)
    nulls = VoxelSets.from_masks([regions == 2], SHAPE)  # a null set equal to region 2, which interacts with nothing
    values, null = shapley_contributions(forward, images[1], sets, nulls, baseline, subject=1, permutations=4)
    assert null[0] == pytest.approx(values[2], abs=1e-4)  # additive part: the same marginal at every position
    with pytest.raises(ValueError, match="disjoint"):
        shapley_contributions(forward, images[1], VoxelSets.from_masks([regions == 0, regions >= 0], SHAPE), nulls,
                              baseline)

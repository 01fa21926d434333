"""Enrichment, mutual information vs shuffled baseline, occlusion sensitivity and ground-truth validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from brainage.attribution.mapping import RegionIndex
from brainage.attribution.occlusion import (
    occlusion_deltas,
    rank_sensitivity,
    reference_image,
    set_occlusion_deltas,
)
from brainage.attribution.stats import enrichment, mutual_information, shuffled_mutual_information, top_regions
from brainage.attribution.validation import find_ground_truth, load_ground_truth, precision_at_k

REGIONS = RegionIndex.from_names({1: "A", 2: "B", 3: "C"})


def test_mutual_information_bounds():
    assert mutual_information(np.eye(4) * 7) == pytest.approx(2.0)  # one expert per region: log2(4) bits
    assert mutual_information(np.outer([1, 2, 3], [4, 1])) == pytest.approx(0.0, abs=1e-12)  # independent
    with pytest.raises(ValueError, match="empty"):
        mutual_information(np.zeros((2, 2)))


def test_shuffled_baseline_is_far_below_a_specialised_routing():
    rng = np.random.default_rng(0)
    n, r, e = 64, 4, 4
    token_regions = [np.eye(r)[rng.integers(0, r, n)] * 8 for _ in range(3)]  # (n, r): 8 voxels in one region
    top1 = [tr.argmax(axis=1) for tr in token_regions]  # expert = region: perfect specialisation
    test = shuffled_mutual_information(token_regions, top1, e, n_shuffles=50, seed=1)
    assert test.observed == pytest.approx(mutual_information(sum(tr.T @ np.eye(e)[t] for tr, t in zip(token_regions,
                                                                                                     top1))))
    assert test.observed > 1.5 and test.shuffled_mean < 0.2 and test.p_value == pytest.approx(1 / 51)
    random_top1 = [rng.integers(0, e, n) for _ in range(3)]
    null = shuffled_mutual_information(token_regions, random_top1, e, n_shuffles=50, seed=1)
    assert null.p_value > 0.01 and null.ratio < 3


def test_enrichment_matches_scipy_and_ranks_the_planted_cell():
    counts = np.array([[80.0, 20.0], [20.0, 80.0], [50.0, 50.0]])  # voxels; 2 voxels per token
    table = enrichment(counts, REGIONS, voxels_per_token=2.0)
    assert len(table) == 6
    cell = table[(table.region == "A") & (table.expert == 0)].iloc[0]
    tokens = counts / 2
    a = tokens[0, 0]
    b, c = tokens[0].sum() - a, tokens[:, 0].sum() - a
    d = tokens.sum() - a - b - c
    chi2, p, _, _ = sps.chi2_contingency([[a, b], [c, d]], correction=False)
    assert cell.chi2 == pytest.approx(chi2) and cell.p_value == pytest.approx(p)
    assert cell.log_odds == pytest.approx(np.log((a + 0.5) * (d + 0.5) / ((b + 0.5) * (c + 0.5))))
    assert cell.share_in_region == pytest.approx(0.8) and cell.share_overall == pytest.approx(0.5)
    assert top_regions(table, 0).region.tolist() == ["A"]
    assert top_regions(table, 1).region.tolist() == ["B"]
    assert (table.q_value >= table.p_value - 1e-12).all()


def test_occlusion_recovers_a_linear_model_and_ranks_the_ageing_region_first():
    rng = np.random.default_rng(2)
    shape = (4, 4, 4)
    regions = np.full(shape, -1)
    regions[:2] = 0  # region A: x < 2, noise the model reads but with no age direction
    regions[2:, :2] = 1  # region B: brightens with age, read by the model
    regions[2:, 2:, :2] = 2  # region C: brightens with age, read weakly
    ages = np.array([20.0, 70.0, 35.0, 80.0, 50.0, 25.0])
    ageing = np.where(regions == 1, 0.05, 0.0) + np.where(regions == 2, 0.05, 0.0)  # (X, Y, Z) per year
    images = [(rng.normal(size=shape) * (regions == 0) * 30 + a * ageing).astype(np.float32) for a in ages]
    weights = np.where(regions == 0, 0.5, 0.0) + np.where(regions == 1, 1.0, 0.0) + np.where(regions == 2, 0.2, 0.0)

    def predict(batch: np.ndarray, s: int) -> np.ndarray:
        return 40.0 + s + np.tensordot(batch, weights, axes=3)  # (m, X, Y, Z) -> (m,)

    reference, described = reference_image(np.stack(images), ages, "young")
    np.testing.assert_allclose(reference, np.mean([images[0], images[5]], axis=0))  # youngest third: 20 and 25 y
    assert "2 youngest" in described and "20-25 y" in described
    deltas = occlusion_deltas(predict, images, regions, 3, batch_size=2, progress=False, reference=reference)
    for s, image in enumerate(images):  # a linear model: delta = sum of weights x (reference - image) in the region
        for r in range(3):
            expected = np.sum(weights[regions == r] * (reference - image)[regions == r])
            assert deltas[s, r] == pytest.approx(expected, rel=1e-4, abs=1e-4)
    ranked = rank_sensitivity(deltas, REGIONS, voxels=np.array([32, 16, 8]))
    assert ranked.region.tolist() == ["B", "C", "A"] and ranked["rank"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(ranked["age_contribution"], -np.nanmean(deltas, axis=0)[[1, 2, 0]])
    np.testing.assert_allclose(ranked["contribution_per_1000_voxels"], 1000 * ranked["age_contribution"] / [16, 8, 32])
    assert ranked.set_index("region").loc["A", "rank_abs"] == 1  # noise moves predictions most, without age direction
    assert precision_at_k(ranked.region, ["B"]) == 1.0
    cohort_mean, text = reference_image(np.stack(images), [np.nan] * 5 + [30.0], "young")
    np.testing.assert_allclose(cohort_mean, np.mean(images, axis=0), rtol=1e-6)
    assert "fewer than 3 known ages" in text
    joint = set_occlusion_deltas(predict, images, regions, [[1, 2], [0]], batch_size=1, progress=False,
                                 reference=reference)  # linear model: a set's change is the sum of its regions'
    np.testing.assert_allclose(joint, np.stack([deltas[:, 1] + deltas[:, 2], deltas[:, 0]], axis=1), rtol=1e-4,
                               atol=1e-3)
    with pytest.raises(ValueError, match="do not match"):
        occlusion_deltas(predict, [np.zeros((2, 2, 2))], regions, 3)
    with pytest.raises(ValueError, match="'young' or 'cohort'"):
        reference_image(np.stack(images), ages, "old")


def test_ground_truth_formats_and_precision(tmp_path):
    (tmp_path / "ground_truth.json").write_text(
        json.dumps({"regions": [{"name": "L-lateral-ventricle", "label": 201}, "R-hippocampus"], "null_regions": []})
    )
    truth = load_ground_truth(find_ground_truth([str(tmp_path / "participants.tsv")]))
    assert truth.regions == ("L-lateral-ventricle", "R-hippocampus")
    assert precision_at_k(["R-hippocampus", "x", "L-lateral-ventricle"], truth.regions) == 0.5
    assert precision_at_k(["R-hippocampus", "x", "L-lateral-ventricle"], truth.regions, k=3) == pytest.approx(2 / 3)
    (tmp_path / "synth.json").write_text(json.dumps({"signal_regions": {"L-hippocampus": 40}, "null_regions": {"A": 1},
                                                     "indirect_regions": {"L-caudate": 36},
                                                     "effects": [{"name": "atrophy",
                                                                  "regions": {"L-hippocampus": 40}, "kind": "atrophy",
                                                                  "displaced": {"L-caudate": 36}},
                                                                 {"name": "wm", "regions": {}}]}))
    synth = load_ground_truth(tmp_path / "synth.json")
    assert (synth.regions, synth.null_regions, synth.indirect_regions) == (("L-hippocampus",), ("A",), ("L-caudate",))
    assert synth.effects == (("atrophy", ("L-hippocampus",)), ("wm", ()))
    assert synth.kinds == (("atrophy", "atrophy"),) and synth.displaced == (("atrophy", ("L-caudate",)),)
    (tmp_path / "bad.json").write_text(json.dumps({"regions": [{"label": 3}]}))
    with pytest.raises(ValueError, match="no region name"):
        load_ground_truth(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_ground_truth(tmp_path / "nope.json")

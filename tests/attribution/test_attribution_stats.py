"""Enrichment, mutual information vs shuffled baseline, the young reference image and ground-truth validation (the
attribution methods themselves: tests/report/test_attribute.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from brainage.attribution.mapping import RegionIndex
from brainage.attribution.reference import reference_image
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


def test_young_reference_is_the_mean_of_the_youngest_third_else_the_cohort_mean():
    rng = np.random.default_rng(2)
    images = rng.normal(size=(6, 4, 4, 4)).astype(np.float32)
    ages = np.array([20.0, 70.0, 35.0, 80.0, 50.0, 25.0])
    reference, described = reference_image(images, ages, "young")
    np.testing.assert_allclose(reference, images[[0, 5]].mean(axis=0))  # youngest third: 20 and 25 y
    assert "2 youngest" in described and "20-25 y" in described
    cohort_mean, text = reference_image(images, [np.nan] * 5 + [30.0], "young")
    np.testing.assert_allclose(cohort_mean, images.mean(axis=0), rtol=1e-6)
    assert "fewer than 3 known ages" in text
    with pytest.raises(ValueError, match="'young' or 'cohort'"):
        reference_image(images, ages, "old")
    with pytest.raises(ValueError, match="one age per image"):
        reference_image(images, ages[:5], "young")


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

"""Geometry of attribution: token grid -> voxels -> atlas regions, checked against brute-force loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from brainage.attribution.aggregate import RoutingAggregator
from brainage.attribution.mapping import (
    RegionIndex,
    gated_expert_weights,
    one_hot,
    patch_shape,
    token_grid_to_voxels,
    token_region_counts,
    top1_expert,
)
from brainage.model.routing import LayerRouting
from brainage.reference.atlas import Atlas

GRID, SHAPE = (2, 3, 2), (4, 6, 8)  # patch (2, 2, 4): not cubic, to catch axis mix-ups


def _token_of_voxel(x: int, y: int, z: int, grid=GRID, shape=SHAPE) -> int:
    px, py, pz = (s // g for s, g in zip(shape, grid))
    i, j, l = x // px, y // py, z // pz
    return (i * grid[1] + j) * grid[2] + l


def test_patch_shape_per_axis_and_bad_grid():
    assert patch_shape(SHAPE, GRID) == (2, 2, 4)
    with pytest.raises(ValueError, match="does not tile"):
        patch_shape((5, 6, 8), GRID)
    with pytest.raises(ValueError, match="3D"):
        patch_shape((4, 6), (2, 3))


def test_token_grid_to_voxels_matches_the_token_order_of_the_model():
    n = int(np.prod(GRID))
    values = np.arange(n) * 10 + 3  # (n,)
    voxels = token_grid_to_voxels(values, GRID, SHAPE)
    assert voxels.shape == SHAPE
    for x, y, z in itertools.product(*(range(s) for s in SHAPE)):
        assert voxels[x, y, z] == values[_token_of_voxel(x, y, z)]
    # trailing dims ride along: (n, e) -> (X, Y, Z, e)
    two = token_grid_to_voxels(np.stack([values, -values], axis=1), GRID, SHAPE)
    assert two.shape == (*SHAPE, 2) and np.array_equal(two[..., 1], -voxels)
    with pytest.raises(ValueError, match="expected 12 token values"):
        token_grid_to_voxels(np.arange(11), GRID, SHAPE)


def test_top1_uses_the_largest_gate_not_the_first_slot():
    expert_index = np.array([[2, 0], [1, 3], [0, 1]])
    gates = np.array([[0.3, 0.7], [0.9, 0.1], [0.5, 0.5]])
    assert top1_expert(expert_index, gates).tolist() == [0, 1, 0]


def test_gated_weights_match_a_loop():
    rng = np.random.default_rng(0)
    n, k, e = 50, 3, 5
    expert_index = np.stack([rng.choice(e, size=k, replace=False) for _ in range(n)])  # (n, k)
    gates = rng.dirichlet(np.ones(k), size=n)  # (n, k) rows sum to 1
    weights = gated_expert_weights(expert_index, gates, e)
    reference = np.zeros((n, e))
    for t in range(n):
        for slot in range(k):
            reference[t, expert_index[t, slot]] += gates[t, slot]
    np.testing.assert_allclose(weights, reference)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match=r"expert ids must lie in \[0, 5\)"):
        gated_expert_weights(expert_index + 1, gates, e)
    assert one_hot(np.array([0, 4]), e).tolist() == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]


def test_region_index_maps_labels_to_rows_and_unknown_to_background():
    index = RegionIndex.from_names({0: "background", 17: "L-hippocampus", 4: "L-lateral-ventricle"})
    assert index.labels == (4, 17) and index.names == ("L-lateral-ventricle", "L-hippocampus")
    labels = np.array([[[0, 4, 17, 99]]])
    assert index.columns(labels).tolist() == [[[-1, 0, 1, -1]]]
    with pytest.raises(ValueError, match="no region"):
        RegionIndex.from_names({0: "background"})


def test_token_region_counts_match_a_voxel_loop():
    rng = np.random.default_rng(1)
    regions = rng.integers(-1, 4, size=SHAPE)  # (X, Y, Z) rows, -1 background
    counts = token_region_counts(regions, GRID, 4)
    reference = np.zeros((int(np.prod(GRID)), 4))
    for x, y, z in itertools.product(*(range(s) for s in SHAPE)):
        if regions[x, y, z] >= 0:
            reference[_token_of_voxel(x, y, z), regions[x, y, z]] += 1
    np.testing.assert_array_equal(counts, reference)


# --- atlas geometry and cohort aggregation (real Atlas, real routing records) ---------------------------------------

def _hand_atlas() -> Atlas:
    """1 mm atlas, voxel i -> i - 10 mm on every axis; region 7 is the cube [4, 7] mm, region 11 the cube [-8, -5]."""
    labels = np.zeros((20, 20, 20), dtype=np.int32)
    labels[14:18, 14:18, 14:18] = 7
    labels[2:6, 2:6, 2:6] = 11
    affine = np.eye(4)
    affine[:3, 3] = -10
    return Atlas(labels=labels, affine=affine, names={7: "L-hippocampus", 11: "<b>R-thalamus</b>"})


def _routing(top1: np.ndarray, num_experts: int, layer: int = 3, grid=(4, 4, 4)) -> LayerRouting:
    """k=2 routing whose largest gate picks ``top1`` (second slot: the next expert, gate 0.25)."""
    expert_index = np.stack([top1, (top1 + 1) % num_experts], axis=1)  # (n, 2)
    gates = np.tile([0.75, 0.25], (len(top1), 1)).astype(np.float32)  # (n, 2)
    probs = np.full((len(top1), num_experts), 1.0 / num_experts, dtype=np.float32)
    return LayerRouting(layer, expert_index, gates, probs, grid)


@pytest.mark.parametrize("flip_x", [False, True])
def test_planted_token_lands_in_its_atlas_region(flip_x):
    # model grid 8^3 at 2 mm, token grid 4^3 (patch 2): voxel i -> 2 i - 8 mm (or x -> 6 - 2 i when flipped)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -8
    if flip_x:
        affine[0, 0], affine[0, 3] = -2.0, 6.0
    planted_i = 0 if flip_x else 3  # the token whose voxels sit at x in {4, 6} mm
    token = (planted_i * 4 + 3) * 4 + 3
    top1 = np.zeros(64, dtype=np.int64)
    top1[token] = 2
    aggregator = RoutingAggregator(_hand_atlas(), num_experts=3)
    aggregator.add("sub-01", (8, 8, 8), affine, [_routing(top1, 3)])
    table = aggregator.table(3, "top1").set_index("region")
    assert table.loc["L-hippocampus", "expert_2"] == 8  # all 2^3 voxels of the planted token
    assert table.loc["L-hippocampus", "expert_0"] == 0 and table.loc["L-hippocampus", "fraction_2"] == 1.0
    gated = aggregator.table(3, "gated").set_index("region")
    assert gated.loc["L-hippocampus", "expert_2"] == pytest.approx(6.0)  # 8 voxels x gate 0.75
    assert gated.loc["L-hippocampus", "expert_0"] == pytest.approx(2.0)  # second slot: (2 + 1) % 3 = 0, gate 0.25
    maps = aggregator.frequency_maps(3)
    x = slice(0, 2) if flip_x else slice(6, 8)
    assert maps.shape == (8, 8, 8, 3) and np.all(maps[x, 6:8, 6:8, 2] == 1) and maps[..., 2].sum() == 8


def test_aggregated_tables_match_a_brute_force_voxel_loop():
    rng = np.random.default_rng(3)
    atlas, e, grid, shape = _hand_atlas(), 4, (2, 2, 4), (4, 4, 8)
    affines = [np.diag([4.0, 4.0, 2.0, 1.0]), np.diag([-4.0, 4.0, 2.0, 1.0])]
    affines[0][:3, 3] = [-9, -9, -9]
    affines[1][:3, 3] = [8, -8, -8]
    aggregator = RoutingAggregator(atlas, num_experts=e)
    rows = {7: 0, 11: 1}
    top1_ref, gated_ref = np.zeros((2, e)), np.zeros((2, e))
    for s, affine in enumerate([affines[0], affines[1], affines[0]]):
        n = int(np.prod(grid))
        expert_index = np.stack([rng.choice(e, size=2, replace=False) for _ in range(n)])  # (n, 2)
        gates = rng.dirichlet([1, 1], size=n).astype(np.float32)  # (n, 2)
        routing = LayerRouting(5, expert_index, gates, np.zeros((n, e), np.float32), grid)
        subject = aggregator.add(f"sub-{s}", shape, affine, [routing])
        labels = atlas.resample_to(shape, affine)
        subject_ref = np.zeros((2, e))
        for x, y, z in itertools.product(*(range(v) for v in shape)):
            if labels[x, y, z] in rows:
                t, r = _token_of_voxel(x, y, z, grid, shape), rows[labels[x, y, z]]
                best = expert_index[t, np.argmax(gates[t])]
                top1_ref[r, best] += 1
                subject_ref[r, best] += 1
                for slot in range(2):
                    gated_ref[r, expert_index[t, slot]] += gates[t, slot]
        np.testing.assert_array_equal(aggregator.subject_counts(subject, 5), subject_ref)
    assert top1_ref.sum() > 0
    np.testing.assert_array_equal(aggregator.counts(5, "top1"), top1_ref)
    np.testing.assert_allclose(aggregator.counts(5, "gated"), gated_ref, rtol=1e-6)
    assert len(aggregator.geometries) == 2 and aggregator.main_geometry() == 0
    with pytest.raises(ValueError, match="no routing recorded for MoE layer 4"):
        aggregator.table(4)
    with pytest.raises(ValueError, match="does not tile"):
        aggregator.add("bad", (5, 4, 8), affines[0], [routing])

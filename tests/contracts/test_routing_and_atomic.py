"""The routing record saves and loads unchanged; old files load; file names stay valid; writes are atomic."""

from __future__ import annotations

import numpy as np
import pytest

from brainage.contracts.atomic import atomic_path, write_text_atomic
from brainage.contracts.routing import (
    MAX_NAME,
    LayerRecord,
    ScanRouting,
    load_routing,
    routing_filename,
    save_routing,
)


def _scan(seed: int = 0) -> ScanRouting:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(4), size=8)  # (n=8, e=4)
    index = np.argsort(-probs, axis=1)[:, :2]  # (n, k=2)
    gates = np.take_along_axis(probs, index, 1)
    layers = tuple(LayerRecord(layer, index, gates / gates.sum(1, keepdims=True), probs, (2, 2, 2))
                   for layer in (1, 3))
    return ScanRouting(np.diag([4.0, 4.0, 4.0, 1.0]), (16, 16, 16), 61.25, layers)


def test_saved_and_loaded_record_is_unchanged(tmp_path):
    scan = _scan()
    loaded = load_routing(save_routing(tmp_path / "a.npz", scan))
    assert loaded == scan
    assert loaded.layers[0].expert_index.dtype == np.int64 and loaded.layers[0].probs.dtype == np.float32
    assert loaded != _scan(seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_files_of_the_earlier_format_still_load(tmp_path):
    """Before the record type, predict wrote int16 indices and float16 gates/probabilities."""
    scan = _scan()
    arrays = {"affine": scan.affine, "shape": np.asarray(scan.shape, np.int32), "predicted_age": np.float64(61.25)}
    for i, layer in enumerate(scan.layers):
        arrays |= {f"layer{i}_index": np.int32(layer.layer), f"layer{i}_expert_index": layer.expert_index.astype(np.int16),
                   f"layer{i}_gates": layer.gates.astype(np.float16), f"layer{i}_probs": layer.probs.astype(np.float16),
                   f"layer{i}_grid": np.asarray(layer.grid, np.int32)}
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    old = load_routing(tmp_path / "old.npz")
    assert [layer.layer for layer in old.layers] == [1, 3]
    np.testing.assert_array_equal(old.layers[1].expert_index, scan.layers[1].expert_index)
    np.testing.assert_allclose(old.layers[1].probs, scan.layers[1].probs, atol=1e-3)


def test_not_a_routing_map_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a brainage routing map"):
        load_routing(bad)


def test_file_names_are_safe_unique_and_short():
    assert routing_filename("sub-01", "ses-1", 3) == "sub-01_ses-1__3.npz"
    assert routing_filename("../../etc/passwd") == "etc-passwd.npz"
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    names = {routing_filename(long_a, "", 0), routing_filename(long_b, "", 0)}
    assert len(names) == 2 and all(len(n.encode()) <= MAX_NAME for n in names)


def test_atomic_writes_leave_the_old_file_on_error(tmp_path):
    target = write_text_atomic(tmp_path / "t.csv", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")  # writers that choose the format by extension still work
        tmp.write_bytes(b"1")
    assert (tmp_path / "x.nii.gz").read_bytes() == b"1"

"""Bounded memory per scan (issue 16, point 5): the header's claimed size is checked against a limit before anything
is inflated, and a header that lies small cannot make the fast reader inflate more than it claims."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from monai.transforms import Compose

from brainage.data.fastpath import accelerate
from brainage.data.transforms import DEFAULT_MAX_VOXELS, ImageError, LoadVolumed
from tests.helpers.bombs import write_claiming


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _loader(fast: bool) -> LoadVolumed:
    """LoadVolumed as declared, or as `accelerate` swaps it in for prediction (ISA-L inflate)."""
    return accelerate(Compose([LoadVolumed()])).transforms[0] if fast else LoadVolumed()


def _load(path, **kwargs):
    return LoadVolumed(**kwargs)({"image": str(path)})["image"]


@pytest.mark.parametrize("fast", [False, True])
def test_bomb_is_refused_from_its_header_without_inflating(tmp_path, fast):
    bomb = write_claiming(tmp_path / "bomb.nii.gz", (600, 600, 600))  # 216 MB of voxels in ~0.2 MB
    assert bomb.stat().st_size < 2**20 and DEFAULT_MAX_VOXELS == 512**3
    load_volume = _loader(fast)

    def load():
        with pytest.raises(ImageError, match=r"bomb.nii.gz: header claims 216,000,000 voxels \(216.0 MB\); limit "
                                             r"134,217,728 voxels"):
            load_volume({"image": str(bomb)})

    assert _peak_bytes(load) < 8 * 2**20


def test_four_d_counts_every_volume_and_single_volume_4d_counts_once(tmp_path):
    many = write_claiming(tmp_path / "many.nii.gz", (20, 20, 20, 3), np.float32)
    one = write_claiming(tmp_path / "one.nii.gz", (20, 20, 20, 1), np.float32)
    with pytest.raises(ImageError, match="header claims 24,000 voxels"):
        _load(many, max_voxels=23_999)
    assert tuple(_load(one, max_voxels=8_000).shape)[:3] == (20, 20, 20)
    with pytest.raises(ImageError, match="limit 7,999 voxels"):
        _load(one, max_voxels=7_999)
    with pytest.raises(ValueError, match="max_voxels"):
        LoadVolumed(max_voxels=0)


@pytest.mark.parametrize("fast", [False, True])
def test_a_header_that_lies_small_inflates_only_what_it_claims(tmp_path, fast):
    """20^3 float32 claimed (32 kB), 256 MB of zeros actually in the stream: only the claimed bytes are read."""
    liar = write_claiming(tmp_path / "liar.nii.gz", (20, 20, 20), np.float32, data_bytes=256 * 2**20)
    load_volume = _loader(fast)
    shapes = []
    peak = _peak_bytes(lambda: shapes.append(tuple(load_volume({"image": str(liar)})["image"].shape)))
    assert shapes == [(20, 20, 20)]
    assert peak < 16 * 2**20, peak

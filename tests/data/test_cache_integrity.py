"""The preprocessed-volume cache under hostile conditions (issue 16, points 2 and 3).

- A cache that cannot be written (full disk, a cache_dir below a file) fails setup with one clear error; it never
  turns into "bad scans" that silently shrink the training set.
- Every entry carries a checksum and the content key it belongs to: a bit-flipped, zeroed, swapped or truncated
  entry is detected on read and rebuilt from the source file, never used (no NaN reaches training, no crash mid-fit).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brainage.data.cache import CacheWriteError, VolumeCache
from brainage.data.datamodule import BrainAgeDataModule
from brainage.data.preprocessing import Preprocessing
from tests.helpers.cohort import bids_cohort
from tests.helpers.filesystem import small_tmpfs

PRE = Preprocessing(spacing=8.0, shape=(16, 16, 16), augment=False)
KWARGS = {"spacing": 8.0, "shape": (16, 16, 16), "augment": False, "batch_size": 2, "val_fraction": 0.25,
          "test_fraction": 0.25, "preprocess_threads": 2}


@pytest.fixture
def small_filesystem(tmp_path):
    with small_tmpfs(tmp_path, "64k") as mount:
        yield mount


def test_full_cache_disk_fails_setup_loudly_and_drops_no_scan(tmp_path, write_nifti, brain_like, small_filesystem):
    root = bids_cohort(write_nifti, brain_like, 12)  # 12 entries of ~10 KiB: more than 64 KiB
    dm = BrainAgeDataModule(root, cache_dir=str(small_filesystem / "cache"), **KWARGS)
    with pytest.raises(CacheWriteError) as caught:
        dm.setup("fit")
    message = str(caught.value)
    assert str(small_filesystem / "cache") in message and "No space left on device" in message, message
    assert "\n" not in message and "cache_dir" in message  # one line that says what to do
    assert not dm.datasets  # no training set was built from the scans that happened to fit
    assert not [d for d in dm.dropped if "sub-" in str(d["subject_id"])]  # no scan was reported as bad


def test_cache_dir_below_a_file_fails_setup_loudly(tmp_path, write_nifti, brain_like):
    root = bids_cohort(write_nifti, brain_like, 6)
    (tmp_path / "not_a_folder").write_text("x")
    dm = BrainAgeDataModule(root, cache_dir=str(tmp_path / "not_a_folder" / "cache"), **KWARGS)
    with pytest.raises(CacheWriteError, match="not_a_folder/cache.*cannot write"):
        dm.setup("fit")
    assert not dm.datasets and not dm.dropped


def _entry(tmp_path: Path, write_nifti, name: str = "a.nii.gz", seed: int = 0):
    from tests.conftest import brain_like

    source = write_nifti(name, brain_like(seed=seed))
    cache = VolumeCache(tmp_path / "cache", PRE.cache_config())
    return cache, source, cache.ensure(source, PRE.deterministic())


def _flip_bit(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x10]) + data[offset + 1:]


DAMAGE = {
    # the image payload sits in the middle of the zip archive that torch.save writes
    "bit flip in the image": lambda data, other: _flip_bit(data, len(data) // 2),
    "bit flip in every 512th byte": lambda data, other: bytes(b ^ 1 if i % 512 == 7 else b for i, b in enumerate(data)),
    "zeroed": lambda data, other: bytes(len(data)),
    "truncated": lambda data, other: data[: len(data) * 2 // 3],
    "empty": lambda data, other: b"",
    "swapped (another scan's entry)": lambda data, other: other,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_is_detected_rebuilt_and_never_used(tmp_path, write_nifti, damage):
    cache, source, entry = _entry(tmp_path, write_nifti)
    _, _, other = _entry(tmp_path, write_nifti, "b.nii.gz", seed=1)
    good = VolumeCache.read(entry).as_tensor().clone()
    entry.write_bytes(DAMAGE[damage](entry.read_bytes(), other.read_bytes()))
    with pytest.raises(OSError, match=f"{entry.name}"):  # reading it directly names the damaged entry
        VolumeCache.read(entry)
    before = cache.misses
    image = cache.load(source, PRE.deterministic())  # the next use rebuilds it from the source
    assert cache.misses == before + 1
    torch.testing.assert_close(image.as_tensor(), good, atol=0, rtol=0)
    torch.testing.assert_close(VolumeCache.read(entry).as_tensor(), good, atol=0, rtol=0)  # and the file is good again


def test_damaged_entries_during_fit_are_rebuilt_per_item(tmp_path, write_nifti, brain_like):
    """Entries damaged after setup (between epochs) are rebuilt when the item is read: finite batches, no crash."""
    root = bids_cohort(write_nifti, brain_like, 8)
    dm = BrainAgeDataModule(root, cache_dir=str(tmp_path / "cache"), **KWARGS)
    dm.setup("fit")
    reference = [dm.datasets["train"][i]["image"].clone() for i in range(len(dm.datasets["train"]))]
    entries = dm.datasets["train"].images
    nan = torch.load(entries[0], weights_only=True)
    nan["image"].fill_(float("nan"))  # a NaN-filled entry with the old checksum: the checksum no longer matches
    torch.save(nan, entries[0])
    entries[1].write_bytes(entries[1].read_bytes()[:500])
    entries[2].write_bytes(entries[3].read_bytes())  # a valid entry of another scan under this key
    for i, want in enumerate(reference):
        got = dm.datasets["train"][i]["image"]
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_setup_rebuilds_a_damaged_entry_instead_of_counting_a_hit(tmp_path, write_nifti, brain_like):
    root = bids_cohort(write_nifti, brain_like, 6)
    first = BrainAgeDataModule(root, cache_dir=str(tmp_path / "cache"), **KWARGS)
    first.setup("fit")
    entries = sorted(first.cache.folder.glob("*/*.pt"))
    entries[0].write_bytes(entries[0].read_bytes()[:-64])  # truncated
    data = bytearray(entries[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    entries[1].write_bytes(bytes(data))
    second = BrainAgeDataModule(root, cache_dir=str(tmp_path / "cache"), **KWARGS)
    second.setup("fit")
    assert (second.cache.hits, second.cache.misses) == (4, 2)
    assert sum(len(d) for d in second.datasets.values()) == 6


def test_an_entry_names_its_scan_and_carries_a_checksum(tmp_path, write_nifti):
    _, _, entry = _entry(tmp_path, write_nifti)
    stored = torch.load(entry, weights_only=True)
    assert set(stored) == {"image", "affine", "key", "crc32"}
    assert stored["key"] == entry.stem and stored["image"].dtype == torch.float16

from __future__ import annotations

import json
import multiprocessing
import shutil
from importlib import metadata

import numpy as np
import pytest
import torch

from brainage.data.cache import KEYED_PACKAGES, VolumeCache, file_digest, load_volume
from brainage.data.preprocessing import Preprocessing

PRE = Preprocessing(spacing=8.0, shape=(16, 16, 16), augment=False)


class CountingTransform:
    """The real deterministic preprocessing, counting how often it decodes a file."""

    def __init__(self, preprocessing: Preprocessing = PRE) -> None:
        self.transform, self.calls = preprocessing.deterministic(), 0

    def __call__(self, data: dict) -> dict:
        self.calls += 1
        return self.transform(data)


def test_hit_skips_decoding_and_matches_fresh_preprocessing(tmp_path, write_nifti):
    path = write_nifti("a.nii.gz")
    counting = CountingTransform()
    first = VolumeCache(tmp_path / "cache", PRE.cache_config()).load(path, counting)
    again = VolumeCache(tmp_path / "cache", PRE.cache_config())  # a new process/run would build a new instance
    second = again.load(path, counting)
    assert counting.calls == 1 and (again.hits, again.misses) == (1, 0)
    fresh = PRE.deterministic()({"image": str(path)})["image"]
    assert second.dtype == torch.float32 and tuple(second.shape) == (1, 16, 16, 16)
    torch.testing.assert_close(second.as_tensor(), fresh.as_tensor(), atol=2e-2, rtol=1e-3)  # float16 storage
    torch.testing.assert_close(first.as_tensor(), second.as_tensor(), atol=0, rtol=0)
    np.testing.assert_allclose(np.asarray(second.affine), np.asarray(fresh.affine))
    # the key is the content, not the name: a renamed copy hits
    shutil.copy(path, tmp_path / "renamed.nii.gz")
    again.load(tmp_path / "renamed.nii.gz", counting)
    assert counting.calls == 1


def test_content_change_invalidates(tmp_path, write_nifti, brain_like):
    path = write_nifti("a.nii.gz")
    cache, counting = VolumeCache(tmp_path / "cache", PRE.cache_config()), CountingTransform()
    before = cache.load(path, counting)
    write_nifti("a.nii.gz", brain_like(seed=1) * 2 + 5)  # same name, new content
    after = cache.load(path, counting)
    assert counting.calls == 2 and not torch.equal(before.as_tensor(), after.as_tensor())
    assert len(list(cache.folder.glob("*/*.pt"))) == 2


def test_config_change_invalidates(tmp_path, write_nifti):
    path = write_nifti("a.nii.gz")
    other = Preprocessing(spacing=6.0, shape=(16, 16, 16), augment=False)
    counting, counting_other = CountingTransform(), CountingTransform(other)
    a = VolumeCache(tmp_path / "cache", PRE.cache_config())
    b = VolumeCache(tmp_path / "cache", other.cache_config())
    a.load(path, counting)
    b.load(path, counting_other)
    assert counting_other.calls == 1 and a.folder != b.folder
    # augmentation settings do not change the cached (deterministic) output: same key
    augmented = Preprocessing(spacing=8.0, shape=(16, 16, 16), augmentation=[
        {"class_path": "monai.transforms.RandBiasFieldd", "init_args": {"prob": 0.5}}])
    c = VolumeCache(tmp_path / "cache", augmented.cache_config())
    assert c.folder == a.folder


@pytest.mark.parametrize("package", KEYED_PACKAGES)
def test_a_new_version_of_a_library_that_computes_the_entries_invalidates(tmp_path, write_nifti, monkeypatch,
                                                                          package):
    """An upgrade of any keyed library (registration's SimpleITK and template included) writes a new folder, so an
    entry computed by the old version is never read; the folder's config.json names every version."""
    path = write_nifti("a.nii.gz")
    before = VolumeCache(tmp_path / "cache", PRE.cache_config())
    before.load(path, CountingTransform())
    assert before.config["versions"] == {name: metadata.version(name) for name in KEYED_PACKAGES}
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "99.0" if name == package else real(name))  # an upgrade
    after, counting = VolumeCache(tmp_path / "cache", PRE.cache_config()), CountingTransform()
    after.load(path, counting)
    assert after.folder != before.folder and counting.calls == 1 and (after.hits, after.misses) == (0, 1)
    assert json.loads((after.folder / "config.json").read_text())["versions"][package] == "99.0"


def test_missing_and_bad_files_are_reasons_and_not_cached(tmp_path):
    cache = VolumeCache(tmp_path / "cache", PRE.cache_config())
    image, reason = load_volume(PRE.deterministic(), str(tmp_path / "gone.nii.gz"), cache)
    assert image is None and "gone.nii.gz" in reason and "not found" in reason
    flat = tmp_path / "flat.nii"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), flat)
    image, reason = load_volume(PRE.deterministic(), str(flat), cache)
    assert image is None and "constant image" in reason
    assert not list(cache.folder.glob("*/*.pt"))


def _hammer(folder: str, path: str, image: torch.Tensor, barrier, rounds: int) -> None:
    cache = VolumeCache(folder, PRE.cache_config())
    target = cache.entry(path)
    barrier.wait()
    for _ in range(rounds):  # both processes rewrite the same entry as fast as they can
        cache.write(target, image)
        VolumeCache.read(target)  # a reader never sees a partial file


def test_two_processes_writing_the_same_entry_leave_a_valid_entry(tmp_path, write_nifti):
    path = str(write_nifti("a.nii.gz"))
    image = PRE.deterministic()({"image": path})["image"]
    # fork: the children only write and read small files (no torch thread pools), and skip a slow re-import
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_hammer, args=(str(tmp_path / "cache"), path, image, barrier, 50))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    cache = VolumeCache(tmp_path / "cache", PRE.cache_config())
    entry = cache.entry(path)
    torch.testing.assert_close(VolumeCache.read(entry).as_tensor(), image.as_tensor(), atol=2e-2, rtol=1e-3)
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # no temporary files left behind
    assert file_digest(path) == entry.stem


def test_damaged_entry_is_reported_naming_it(tmp_path, write_nifti):
    cache = VolumeCache(tmp_path / "cache", PRE.cache_config())
    entry = cache.ensure(write_nifti("a.nii.gz"), PRE.deterministic())
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.raises(OSError, match=f"{entry.name} is unreadable"):
        VolumeCache.read(entry)

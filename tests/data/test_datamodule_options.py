from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brainage.data.datamodule import BrainAgeDataModule
from tests.helpers.cohort import bids_cohort


def _cohort(write_nifti, brain_like, n=8):
    return bids_cohort(write_nifti, brain_like, n, age=lambda i: 20 + 7 * i, sites=2)


def test_datamodule_cache_dir_second_setup_decodes_nothing(tmp_path, write_nifti, brain_like):
    root = _cohort(write_nifti, brain_like)
    kwargs = dict(spacing=8.0, shape=(16, 16, 16), augment=False, batch_size=2, val_fraction=0.25, test_fraction=0.25)
    first = BrainAgeDataModule(root, cache_dir=str(tmp_path / "cache"), **kwargs)
    first.setup("fit")
    assert (first.cache.hits, first.cache.misses) == (0, 8)
    second = BrainAgeDataModule(root, cache_dir=str(tmp_path / "cache"), **kwargs)
    second.setup("fit")
    assert (second.cache.hits, second.cache.misses) == (8, 0)
    assert all(isinstance(image, Path) for image in second.datasets["train"].images)  # read per item, not held in RAM
    memory = BrainAgeDataModule(root, **kwargs)
    memory.setup("fit")
    cached_batch, memory_batch = next(iter(second.val_dataloader())), next(iter(memory.val_dataloader()))
    assert type(cached_batch["image"]) is torch.Tensor and cached_batch["image"].dtype == torch.float32
    assert tuple(cached_batch["image"].shape) == (2, 1, 16, 16, 16)
    assert cached_batch["subject_id"] == memory_batch["subject_id"]
    torch.testing.assert_close(cached_batch["image"], memory_batch["image"], atol=2e-2, rtol=1e-3)
    assert second.train_ages().shape == (len(second.datasets["train"]),)


@pytest.mark.parametrize("fold", [0, 1])
def test_datamodule_folds_and_leave_site_out(tmp_path, write_nifti, brain_like, fold):
    root = _cohort(write_nifti, brain_like)
    kwargs = dict(spacing=8.0, shape=(16, 16, 16), augment=False, preprocess_threads=1)
    dm = BrainAgeDataModule(root, fold=fold, num_folds=2, leave_site_out="S1", **kwargs)
    table = dm.prepare_table()
    assert set(table.loc[table["split"] == "test", "site"]) == {"S1"}
    assert set(table.loc[table["split"] != "test", "site"]) == {"S0"}
    assert (table["split"] == "val").sum() == 2


def test_datamodule_outer_folds_no_leakage(tmp_path, write_nifti, brain_like):
    root = _cohort(write_nifti, brain_like, n=9)
    kwargs = dict(spacing=8.0, shape=(16, 16, 16), augment=False, preprocess_threads=1, batch_size=2,
                  val_fraction=0.34, num_folds=3)
    tested = []
    for fold in range(3):
        dm = BrainAgeDataModule(root, test_fold=fold, **kwargs)
        dm.setup("fit")
        ids = {s: set(dm.datasets[s].rows["subject_id"]) for s in ("train", "val", "test")}
        assert len(ids["test"]) == 3 and len(ids["val"]) == 2 and len(ids["train"]) == 4
        assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
        assert {s for batch in dm.test_dataloader() for s in batch["subject_id"]} == ids["test"]
        tested += sorted(ids["test"])
    assert sorted(tested) == [f"sub-{i:02d}" for i in range(9)]


def test_in_place_augmentation_leaves_held_volumes_intact(write_nifti, brain_like):
    # RandCoarseDropoutd writes its holes into the tensor it is given: the volumes held in memory must not collect
    # holes epoch after epoch
    root = _cohort(write_nifti, brain_like)
    cutout = {"class_path": "monai.transforms.RandCoarseDropoutd",
              "init_args": {"holes": 2, "spatial_size": 4, "fill_value": -7.0, "prob": 1.0}}  # a value no voxel has
    dm = BrainAgeDataModule(root, spacing=8.0, shape=(16, 16, 16), augmentation=[cutout], preprocess_threads=1,
                            val_fraction=0.25, test_fraction=0.25)
    dm.setup("fit")
    train = dm.datasets["train"]
    held = train.images[0].clone()
    first, second = train[0]["image"], train[0]["image"]
    torch.testing.assert_close(train.images[0], held)  # the held volume is unchanged
    assert (held == -7.0).sum() == 0 and (first == -7.0).sum() > 0  # the holes are there, in the copy only
    # (a hole is visible wherever it lands: a fill of 0 could fall on the zero background and go unseen)
    assert not torch.equal(first, second)  # and drawn afresh per item

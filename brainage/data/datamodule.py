"""LightningDataModule: a dataset folder or manifest -> validated, cached, augmented batches.

Every image is validated and preprocessed once in `setup` (in parallel threads); a file that fails is dropped with
its reason logged, so nothing crashes mid-epoch. Without `cache_dir` the preprocessed tensors are held in memory;
with it they are written once to a persistent on-disk cache (`brainage.data.cache`) and read per item, so later runs
skip decoding and the cohort need not fit in RAM. A cache that cannot be written stops `setup` with
`CacheWriteError` (never a dropped scan); an entry that fails its checksum when an item is read is rebuilt from the
source file. Random augmentation runs on the cached tensors.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from brainage.contracts.atomic import atomic_path

__all__ = ["BrainAgeDataModule", "CachedVolumes"]

log = logging.getLogger(__name__)

# MONAI (and the mlflow it pulls in: ~6 s) is imported inside the methods that use it, never at import time: the
# LightningCLI imports this module to build `brainage fit --help`. (No TYPE_CHECKING block either: jsonargparse runs
# those when it reads the signature.)


class CachedVolumes(Dataset):
    """Preprocessed volumes (in-memory tensors, or entries of `cache` read and checked per item, rebuilt from the row's
    `path` with `transform` when damaged) with per-item random augmentation."""

    def __init__(self, rows: pd.DataFrame, images: list[torch.Tensor | Path], augmentation, cache=None,
                 transform=None) -> None:
        # cache: brainage.data.cache.VolumeCache | None; transform: the deterministic chain (dict -> dict)
        self.rows, self.images, self.augmentation = rows.reset_index(drop=True), images, augmentation
        self.cache, self.transform = cache, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        from brainage.data.inputs import sex_code

        row = self.rows.iloc[index]
        image = self.images[index]
        if isinstance(image, Path):
            image = self.cache.fetch(image, row["path"], self.transform).as_tensor()  # (1, X, Y, Z)
        image = self.augmentation({"image": image})["image"]
        image = image.as_tensor() if hasattr(image, "as_tensor") else image  # MONAI MetaTensor -> plain tensor
        return {
            "image": image.float(),  # (1, X, Y, Z)
            "age": torch.tensor(float(row["age"]), dtype=torch.float32),
            "sex": torch.tensor(sex_code(row["sex"]), dtype=torch.float32),
            "subject_id": str(row["subject_id"]),
            "site": "" if row["site"] is None or row["site"] != row["site"] else str(row["site"]),
        }


class BrainAgeDataModule(pl.LightningDataModule):
    """Brain-age data from a BIDS, IXI or OpenBHB folder, a plain folder or a CSV/TSV manifest.

    Args:
        root: dataset folder (BIDS with participants.tsv, IXI with IXI.csv/IXI.xls, OpenBHB with participants.tsv and
            quasi-raw .npy) or manifest CSV/TSV with path, age[, sex, site] columns.
        preprocessing: the deterministic chain, MONAI dictionary transforms as [{class_path, init_args}] (LoadVolumed
            -> ValidateT1d -> ... Orientationd(RAS) -> Spacingd -> normalisation -> ResizeWithPadOrCropd; see
            `brainage.data.preprocessing`); cached, stored in the checkpoint and rebuilt by predict. None = the
            default chain at 3 mm, 56 x 64 x 56.
        augmentation: random transforms on the cached training tensors, same format (None = flips, intensity
            scale/shift, noise). RandAffined / RandBiasFieldd belong here (a warp costs ~1 vol/s per CPU core).
        spacing: shorthand: sets the chain's Spacingd pixdim to this isotropic voxel size in mm (None = as declared).
        shape: shorthand: sets the chain's ResizeWithPadOrCropd spatial_size (None = as declared).
        augment: False turns the augmentation chain off.
        batch_size: volumes per batch.
        num_workers: DataLoader worker processes (0 = main process; the cache makes loading cheap).
        preprocess_threads: threads that decode and preprocess NIfTI files during setup.
        val_fraction: share of subjects for validation (checkpoint selection, bias correction).
        test_fraction: share of subjects held out for `brainage test` (ignored with leave_site_out).
        seed: split seed.
        cache_dir: persistent preprocessed-volume cache shared across runs and processes (None = in memory only).
        fold: k-fold cross-validation: subjects outside the test split are dealt into `num_folds` stratified folds
            and fold `fold` is the validation split (None = a single val_fraction split).
        num_folds: number of folds when `fold` or `test_fold` is set.
        leave_site_out: every subject scanned at this site forms the test split (site generalisation).
        test_fold: outer k-fold cross-validation: subjects are dealt into `num_folds` stratified folds and fold
            `test_fold` is the test split (every subject is tested once over the folds); `val_fraction` is then the
            share of the OTHER subjects used for validation, and `test_fraction` is unused.
        include_failed: also train on scans that `brainage prepare` flagged in its manifest (qc_status=fail); by
            default they are left out and listed with the reason, as in predict, report and calibrate.
        progress: progress bar (stderr) while the cohort is preprocessed in setup: None = when the Trainer shows
            its progress bar (`trainer.enable_progress_bar`) and stderr is a terminal; True = always; False = never.
    """

    def __init__(self, root: str, preprocessing: list[dict] | None = None, augmentation: list[dict] | None = None,
                 spacing: float | None = None, shape: tuple[int, int, int] | None = None,
                 augment: bool = True, batch_size: int = 8, num_workers: int = 0, preprocess_threads: int = 2,
                 val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 42,
                 cache_dir: str | None = None, fold: int | None = None, num_folds: int = 5,
                 leave_site_out: str | None = None, test_fold: int | None = None,
                 include_failed: bool = False, progress: bool | None = None) -> None:
        from brainage.data.preprocessing import Preprocessing

        super().__init__()
        self.save_hyperparameters(ignore=["progress"])
        self.root = root
        self.progress = progress
        self.preprocessing = Preprocessing(preprocessing, augmentation, spacing=spacing,
                                           shape=None if shape is None else tuple(shape), augment=augment)
        self.batch_size, self.num_workers, self.preprocess_threads = batch_size, num_workers, preprocess_threads
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.fold, self.num_folds, self.leave_site_out, self.test_fold = fold, num_folds, leave_site_out, test_fold
        self.cache_dir = cache_dir
        self.include_failed = include_failed
        self.cache = None  # brainage.data.cache.VolumeCache, built in setup
        self.table: pd.DataFrame | None = None
        self.dropped: list[dict] = []
        self.datasets: dict[str, CachedVolumes] = {}
        self.grid_affine: np.ndarray | None = None  # (4, 4) voxel -> world of the first preprocessed scan, in setup

    def prepare_table(self) -> pd.DataFrame:
        """Read the manifest, drop rows without age, and assign subject-level splits."""
        from brainage.data.inputs import read_inputs
        from brainage.data.splits import split_subjects

        if not Path(self.root).exists():
            raise FileNotFoundError(f"data root {self.root!r} does not exist; expected a BIDS folder or a manifest")
        table = read_inputs([self.root], include_failed=self.include_failed)
        self.dropped = list(table.attrs.get("dropped", []))
        no_age = table["age"].isna()
        self.dropped += [{"source": self.root, "subject_id": r.subject_id, "path": r.path,
                          "reason": "no age: needed for training"} for r in table[no_age].itertuples()]
        table = table[~no_age].reset_index(drop=True)
        if len(table) < 3:
            raise ValueError(f"{self.root}: found {len(table)} images with a known age; expected at least 3")
        table["split"] = split_subjects(table, self.val_fraction, self.test_fraction, self.seed, fold=self.fold,
                                        num_folds=self.num_folds, leave_site_out=self.leave_site_out,
                                        test_fold=self.test_fold)
        return table

    def show_progress(self) -> bool:
        """Whether setup shows a progress bar (see `progress`)."""
        if self.progress is not None:
            return self.progress
        trainer = getattr(self, "trainer", None)
        return (trainer is None or trainer.progress_bar_callback is not None) and sys.stderr.isatty()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        from monai.transforms import Compose

        from brainage.data.cache import CacheWriteError, VolumeCache, failure_reason, load_volume
        from brainage.data.inputs import skipped_lines

        table = self.prepare_table()
        transform = self.preprocessing.deterministic()
        if self.cache_dir:
            self.cache = VolumeCache(self.cache_dir, self.preprocessing.cache_config())

        def ensure(path: str) -> tuple[Path | None, str | None]:
            try:
                return self.cache.ensure(path, transform), None
            except CacheWriteError:
                raise  # the cache's problem, not the scan's
            except Exception as err:  # noqa: BLE001 - as in load_volume
                return None, failure_reason(path, err)

        # (MetaTensor | None, reason) in memory, (entry Path | None, reason) with the cache
        prepare = partial(load_volume, transform) if self.cache is None else ensure
        with ThreadPoolExecutor(max(1, self.preprocess_threads)) as pool:
            try:
                results = list(tqdm(pool.map(prepare, table["path"]), total=len(table), desc="preprocess",
                                    unit="scan", disable=not self.show_progress(), file=sys.stderr))
            except CacheWriteError:
                pool.shutdown(cancel_futures=True)  # stop decoding the rest: the run cannot go on
                raise
        ok = [image is not None for image, _ in results]
        for (image, reason), row in zip(results, table.itertuples()):
            if image is None:
                self.dropped.append({"source": self.root, "subject_id": row.subject_id, "path": row.path,
                                     "reason": reason})
        for line in skipped_lines(self.dropped):
            log.warning(line)
        self.table = table[ok].reset_index(drop=True)
        self.write_splits()
        first = next((image for image, _ in results if image is not None), None)
        if first is not None:
            first = self.cache.read(first) if isinstance(first, Path) else first
            self.grid_affine = np.asarray(first.affine, dtype=np.float64)
        # in memory: drop MONAI metadata; cached: keep the entry paths
        images = [image if isinstance(image, Path) else image.as_tensor() for image, _ in results if image is not None]
        for split in ("train", "val", "test"):
            index = [i for i, s in enumerate(self.table["split"]) if s == split]
            augmentation = self.preprocessing.augmentation() if split == "train" else Compose([])
            self.datasets[split] = CachedVolumes(self.table.iloc[index], [images[i] for i in index], augmentation,
                                                 self.cache, transform)
        for split, minimum in (("train", 2), ("val", 2)):
            if len(self.datasets[split]) < minimum:
                raise ValueError(f"{self.root}: the {split} split has {len(self.datasets[split])} usable scans; "
                                 f"expected at least {minimum} (more subjects or a larger {split}_fraction)")

    def write_splits(self) -> None:
        """Record the split as a manifest (`splits.csv`, plus `test.csv` of the held-out subjects) next to the run,
        so `brainage predict --input .../test.csv` evaluates on subjects the model never saw."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.global_rank != 0:
            return
        folder = Path(trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        columns = ["subject_id", "session", "path", "age", "sex", "site", "split"]
        for name, rows in (("splits.csv", self.table), ("test.csv", self.table[self.table["split"] == "test"])):
            rows = rows.assign(path=rows["path"].map(lambda p: str(Path(p).resolve())))[columns]
            with atomic_path(folder / name) as tmp:
                rows.to_csv(tmp, index=False)

    def train_ages(self) -> torch.Tensor:
        return torch.tensor(self.datasets["train"].rows["age"].to_numpy(), dtype=torch.float32)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          drop_last=shuffle and len(self.datasets[split]) > self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

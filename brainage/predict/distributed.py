"""Prediction on several devices or nodes with Lightning DDP (`Trainer.predict` + a `BasePredictionWriter`).

No DistributedSampler (it pads and duplicates): every process reads the journals, then takes its own slice
`remaining[rank::world_size]` of the inputs still to do, and a writer appends each finished batch to the process's
own journal shard `<output>.partial.rank<r>` (flushed and fsynced). After a barrier, rank 0 merges the shards in
input order; the merge checks that every input has exactly one row. Multi-node: run the same command on every node
(e.g. `srun` under SLURM, which Lightning reads) with `--num-nodes`; the output folder must be shared.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from brainage.predict.model import LoadedModel
from brainage.predict.output import Journal, journal_path, read_journals, record, row_key
from brainage.predict.stream import SubjectResult, predict_batch, scan_loader

__all__ = ["ShardWriter", "ShardedPrediction", "predict_distributed"]


class ShardedPrediction(pl.LightningModule):
    """Wraps a LoadedModel; each process predicts its own slice of the inputs not yet in a journal."""

    def __init__(self, model: LoadedModel, table: pd.DataFrame, output: Path, settings: dict, batch_size: int = 4,
                 num_workers: int | None = None, tta: bool = False, return_routing: bool = False) -> None:
        super().__init__()
        self.loaded, self.net = model, model.net
        self.rows = table.to_dict("records")
        self.output, self.settings = output, settings
        self.batch_size, self.num_workers, self.tta, self.return_routing = batch_size, num_workers, tta, return_routing
        self.mine: list[int] = []

    def setup(self, stage: str) -> None:
        done = read_journals(self.output, self.settings)
        self.trainer.strategy.barrier("journals-read")  # no process writes before every process has read
        remaining = [i for i, row in enumerate(self.rows) if row_key(row) not in done]
        self.mine = remaining[self.global_rank::self.trainer.world_size]

    def predict_dataloader(self) -> DataLoader:
        if not self.mine:  # Lightning needs a batch on every process: one empty batch, no rows
            return DataLoader([[]], batch_size=None)
        return scan_loader(self.loaded, [str(r["path"]) for r in self.rows], self.mine, self.batch_size,
                           self.num_workers)

    def transfer_batch_to_device(self, batch: list[dict], device: object, dataloader_idx: int) -> list[dict]:
        return batch  # predict_batch moves the images itself

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[SubjectResult]:
        self.loaded.device = self.device
        return predict_batch(self.loaded, batch, self.rows, self.return_routing, tta=self.tta)


class ShardWriter(BasePredictionWriter):
    """Appends each finished batch to this process's journal shard (and saves routing maps when asked)."""

    def __init__(self, output: Path, settings: dict, routing_dir: Path | None, shape: tuple[int, int, int]) -> None:
        super().__init__(write_interval="batch")
        self.output, self.settings, self.routing_dir, self.shape = output, settings, routing_dir, shape
        self.journal: Journal | None = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.journal = Journal(journal_path(self.output, trainer.global_rank), self.settings)

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: list,
                           batch_indices: object, batch: object, batch_idx: int, dataloader_idx: int) -> None:
        record(self.journal, prediction, self.routing_dir, self.shape)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.journal.close()


def predict_distributed(model: LoadedModel, table: pd.DataFrame, output: Path, settings: dict, *,
                        accelerator: str = "auto", devices: int | str = "auto", num_nodes: int = 1,
                        batch_size: int = 4, num_workers: int | None = None, tta: bool = False,
                        routing_dir: Path | None = None, progress: bool = False) -> bool:
    """Run DDP prediction into journal shards; returns True on the process that should merge (global rank 0)."""
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp",
                         use_distributed_sampler=False, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=progress, inference_mode=True,
                         callbacks=[ShardWriter(output, settings, routing_dir, model.preprocessing.shape)],
                         default_root_dir=str(output.parent))
    module = ShardedPrediction(model, table, output, settings, batch_size, num_workers, tta, routing_dir is not None)
    trainer.predict(module, return_predictions=False)
    trainer.strategy.barrier("shards-written")  # here, not in a hook: a process with nothing to do skips the loop
    return trainer.is_global_zero

"""Callbacks: ERMoE routing diagnostics per epoch, and the end-of-fit export to the model card and MLflow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_only

from brainage import tracking
from brainage.model.diagnostics import collect_diagnostics

__all__ = ["RoutingDiagnostics", "FitSummary", "TrackedConfig"]


class RoutingDiagnostics(pl.Callback):
    """Log the theory's per-layer MoE diagnostics (load CV, routing entropy, coherence, greedy gap) each epoch.

    Args:
        max_tokens: tokens sampled for the greedy-vs-exhaustive gap.
    """

    def __init__(self, max_tokens: int = 256) -> None:
        self.max_tokens = max_tokens
        self.last: dict[str, float] = {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or trainer.sanity_checking:
            return
        was_training = pl_module.net.training
        with torch.no_grad():
            self.last = collect_diagnostics(pl_module.net, batch["image"], batch.get("sex"), self.max_tokens)
        pl_module.net.train(was_training)
        if self.last:
            pl_module.log_dict({f"moe/{k}": float(v) for k, v in self.last.items()}, on_step=False, on_epoch=True,
                               batch_size=batch["image"].shape[0], rank_zero_only=True)


class FitSummary(pl.Callback):
    """At the end of fit: write the best checkpoint's model card next to it and log card + checkpoint to MLflow."""

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best or not Path(best).exists():
            return
        card = torch.load(best, map_location="cpu", weights_only=True)["brainage"]["card"]
        card_path = Path(best).with_suffix(".card.json")
        tmp = card_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(card, indent=2))
        os.replace(tmp, card_path)
        if tracking.is_tracker(trainer.logger):
            tracking.log_file(trainer.logger, best, "checkpoints")
            tracking.log_file(trainer.logger, card_path, "model")
        val = card["validation_metrics"]
        print(f"best checkpoint: {best}")
        print(f"model card:      {card_path}")
        if "val/mae" in val:
            print(f"validation MAE:  {val['val/mae']:.2f} years")
        if tracking.is_tracker(trainer.logger):
            print(f"MLflow run:      {trainer.logger.run_url()}")


class TrackedConfig(SaveConfigCallback):
    """Save the resolved config as `<default_root_dir>/config.yaml` and log it to MLflow as `config.yaml`."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.global_rank != 0:
            return
        text = self.parser.dump(self.config, skip_none=False)
        folder = Path(trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".config.yaml.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / self.config_filename)
        if tracking.is_tracker(trainer.logger):
            tracking.log_text(trainer.logger, text, "config.yaml")

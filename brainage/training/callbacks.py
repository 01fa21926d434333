"""Callbacks: ERMoE routing diagnostics and throughput per epoch; at the end of fit the bias correction, model card
and MLflow export."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from brainage import tracking
from brainage.contracts.atomic import write_text_atomic
from brainage.contracts.bias import fit_bias_correction
from brainage.contracts.card import write_card_json
from brainage.contracts.checkpoint import read_checkpoint, update_card
from brainage.model.diagnostics import basis_coherence, collect_diagnostics

__all__ = ["RoutingDiagnostics", "FitSummary", "TrackedConfig", "Throughput", "validation_predictions"]


class RoutingDiagnostics(pl.Callback):
    """Log the theory's per-layer MoE diagnostics (load CV, routing entropy, coherence, greedy gap) each epoch, and the
    mutual coherence of the scored expert bases before the first step (``moe/layer{i}/coherence_max_init``,
    ``coherence_mean_init``; fresh runs only, not on resume) and at the end of training (``..._final``), so that a
    run shows whether training lowered it.

    Args:
        max_tokens: tokens sampled for the greedy-vs-exhaustive gap.
    """

    def __init__(self, max_tokens: int = 256) -> None:
        self.max_tokens = max_tokens
        self.last: dict[str, float] = {}
        self.initial: dict[str, float] = {}
        self.final: dict[str, float] = {}

    @staticmethod
    def _log_coherence(trainer: pl.Trainer, pl_module: pl.LightningModule, suffix: str) -> dict[str, float]:
        values = basis_coherence(pl_module.net)
        if values and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({f"moe/{k}_{suffix}": v for k, v in values.items()}, step=trainer.global_step)
        return values

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == 0:
            self.initial = self._log_coherence(trainer, pl_module, "init")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.final = self._log_coherence(trainer, pl_module, "final")

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


class Throughput(pl.Callback):
    """Log training throughput per epoch: `perf/volumes_per_s` (all ranks) and `perf/data_wait_fraction`, the share
    of step time spent waiting for the dataloader (time from one batch's end to the next batch's start).

    On GPU each step is synchronised before it is timed, so the numbers are true wall time.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.wait = self.compute = 0.0
        self.volumes = 0
        self._last_end: float | None = None
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()
        if self._last_end is not None:
            self.wait += self._start - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._last_end = time.perf_counter()
        self.compute += self._last_end - self._start
        self.volumes += int(batch["image"].shape[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = self.wait + self.compute
        if total > 0 and self.volumes:
            pl_module.log_dict({"perf/volumes_per_s": self.volumes / total,
                                "perf/data_wait_fraction": self.wait / total},
                               on_step=False, on_epoch=True, rank_zero_only=True)


class FitSummary(pl.Callback):
    """At the end of fit, on rank 0: fit the age-bias correction, write the model card, log both to MLflow.

    The correction (de Lange & Cole 2020) is fitted on the validation split's predictions made with the BEST
    checkpoint's weights (never on the test split), stored in `best.ckpt` (rewritten atomically, still
    weights_only-loadable) and in `best.card.json`, and logged to MLflow (`bias_correction/slope|intercept`).

    Args:
        min_slope: refuse a correction whose fitted slope is at or below this (the model has not learned age).
    """

    def __init__(self, min_slope: float = 0.05) -> None:
        self.min_slope = min_slope

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best or not Path(best).exists():
            return
        dm = trainer.datamodule
        note = None
        try:
            age, predicted = validation_predictions(pl_module.net, best, dm.datasets["val"], dm.batch_size,
                                                    pl_module.device)
            correction = fit_bias_correction(age, predicted, fit_on=f"validation split, n={len(age)}, best "
                                                                    f"checkpoint {Path(best).name}",
                                             min_slope=self.min_slope)
        except ValueError as err:  # too few validation subjects or predictions that do not follow age
            correction, note = None, f"not fitted: {err}"
            print(f"bias correction {note}")
        card = update_card(best, best, bias_correction=correction, bias_correction_note=note)
        pl_module.bias_correction = correction
        card_path = write_card_json(card, Path(best).with_suffix(".card.json"))
        if tracking.is_tracker(trainer.logger):
            tracking.log_file(trainer.logger, best, "checkpoints")
            tracking.log_file(trainer.logger, card_path, "model")
            if correction:
                trainer.logger.log_metrics({"bias_correction/slope": correction["slope"],
                                            "bias_correction/intercept": correction["intercept"]})
        val = card["validation_metrics"]
        print(f"best checkpoint: {best}")
        print(f"model card:      {card_path}")
        if "val/mae" in val:
            print(f"validation MAE:  {val['val/mae']:.2f} years")
        if correction:
            print(f"bias correction: pred = {correction['slope']:.3f} * age + {correction['intercept']:.2f} "
                  f"(fitted on {correction['fit_on']})")
        if tracking.is_tracker(trainer.logger):
            print(f"MLflow run:      {trainer.logger.run_url()}")


def validation_predictions(net: torch.nn.Module, checkpoint: str | Path, dataset, batch_size: int,
                           device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(ages, predicted ages) of every sample of `dataset` with the weights of `checkpoint`, on one process."""
    ckpt = read_checkpoint(checkpoint)
    net = copy.deepcopy(net).to(device).eval()  # the live module keeps its weights (Lightning's convention)
    net.load_state_dict(ckpt.net_state)
    mean, std = ckpt.target_mean, ckpt.target_std
    ages, predicted = [], []
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=batch_size):
            out = net(batch["image"].to(device), sex=batch["sex"].to(device))
            predicted.append(out.pred.float().cpu() * std + mean)  # (b,) years
            ages.append(batch["age"])
    return torch.cat(ages).double().numpy(), torch.cat(predicted).double().numpy()


class TrackedConfig(SaveConfigCallback):
    """Save the resolved config as `<default_root_dir>/config.yaml` and log it to MLflow as `config.yaml`."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.global_rank != 0:
            return
        text = self.parser.dump(self.config, skip_none=False)
        write_text_atomic(Path(trainer.default_root_dir) / self.config_filename, text)
        if tracking.is_tracker(trainer.logger):
            tracking.log_text(trainer.logger, text, "config.yaml")

"""BrainAgeModule: an injected brain-age net trained on age in years, with field-standard metrics.

The target is standardised with the training cohort's mean and std (stored in the checkpoint). Loss: L1 by
default (MSE, Huber configurable) plus the net's own auxiliary loss (Switch balance or the optional ERMoE
orthogonality regulariser; zero for plain ERMoE, which needs no balancing loss, arXiv 2511.10971). ERMoE bases are
re-orthonormalised by QR retraction after every optimizer step, outside `forward`.
"""

from __future__ import annotations

import math
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, PearsonCorrCoef, R2Score

from brainage.model import orthonormalize_
from brainage.training.card import checkpoint_metadata

__all__ = ["BrainAgeModule"]

_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss, "huber": F.smooth_l1_loss}


def _metrics(prefix: str) -> MetricCollection:
    return MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
                             "r": PearsonCorrCoef(), "r2": R2Score()}, prefix=prefix)


class BrainAgeModule(pl.LightningModule):
    """Train and evaluate a brain-age regressor.

    Args:
        net: the network (e.g. `brainage.model.BrainAgeViT`, `brainage.model.SFCN`), given as class_path/init_args.
        loss: regression loss on the standardised age: "l1" (default), "mse" or "huber".
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay on matrices (not on norms, biases or spectra).
        warmup_epochs: linear warm-up length in epochs (fractional allowed), then cosine decay to min_lr_ratio * lr.
        min_lr_ratio: final learning rate as a fraction of lr.
        aux_loss_weight: multiplier on the net's auxiliary loss (already weighted inside the MoE config).
    """

    def __init__(self, net: nn.Module, loss: Literal["l1", "mse", "huber"] = "l1", lr: float = 1e-3,
                 weight_decay: float = 0.05, warmup_epochs: float = 1.0, min_lr_ratio: float = 0.01,
                 aux_loss_weight: float = 1.0) -> None:
        super().__init__()
        if loss not in _LOSSES:
            raise ValueError(f"loss={loss!r}; expected one of {sorted(_LOSSES)}")
        if lr <= 0:
            raise ValueError(f"lr={lr} must be > 0")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.register_buffer("age_mean", torch.tensor(50.0))
        self.register_buffer("age_std", torch.tensor(20.0))
        # ModuleDict keys cannot be "train" (nn.Module.train), hence the "_metrics" suffix
        self.metrics = nn.ModuleDict({f"{s}_metrics": _metrics(f"{s}/") for s in ("train", "val", "test")})

    # -- data-dependent set-up ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and hasattr(dm, "train_ages"):
            ages = dm.train_ages()
            self.age_mean.fill_(float(ages.mean()))
            self.age_std.fill_(float(ages.std()) if len(ages) > 1 and float(ages.std()) > 0 else 1.0)
        img_size = getattr(self.net, "init_args", {}).get("img_size")
        if dm is not None and img_size is not None and tuple(img_size) != tuple(dm.preprocessing.shape):
            raise ValueError(f"model img_size={tuple(img_size)} does not match data shape="
                             f"{tuple(dm.preprocessing.shape)}; set both to the same grid")

    # -- steps ----------------------------------------------------------------------------------------------------
    def forward(self, image: torch.Tensor, sex: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted age in years, (b,)."""
        return self.net(image, sex=sex).pred * self.age_std + self.age_mean

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        out = self.net(batch["image"], sex=batch.get("sex"))
        target = (batch["age"] - self.age_mean) / self.age_std  # (b,)
        loss = _LOSSES[self.hparams.loss](out.pred.float(), target)
        total = loss + self.hparams.aux_loss_weight * out.aux_loss
        predicted = out.pred.detach().float() * self.age_std + self.age_mean  # (b,) years
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(predicted, batch["age"])
        batch_size = batch["age"].shape[0]
        self.log(f"{stage}/loss", total, on_step=stage == "train", on_epoch=True, batch_size=batch_size,
                 sync_dist=stage != "train", prog_bar=stage == "train")
        if stage == "train":
            self.log("train/aux_loss", out.aux_loss, on_step=False, on_epoch=True, batch_size=batch_size)
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=batch_size, prog_bar=stage == "val")
        return total

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        orthonormalize_(self.net)  # QR retraction of every ERMoE basis after the optimizer step

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    # -- optimisation ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        decay = [p for n, p in self.net.named_parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for n, p in self.net.named_parameters() if p.requires_grad and p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = max(1, int(self.hparams.warmup_epochs * steps_per_epoch))
        floor = self.hparams.min_lr_ratio

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoint metadata --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        train = dm.datasets["train"].rows
        cohort = {"n_train": int(len(train)), "n_val": int(len(dm.datasets["val"])),
                  "age_min": float(train["age"].min()), "age_max": float(train["age"].max()),
                  "age_mean": float(train["age"].mean())}
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        checkpoint["brainage"] = checkpoint_metadata(
            self.net, dm.preprocessing.to_dict(), dm.preprocessing.contract(), float(self.age_mean),
            float(self.age_std), cohort, metrics, bias_correction=None)

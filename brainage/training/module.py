"""BrainAgeModule: an injected brain-age net trained on age in years, with field-standard metrics.

Metrics (brainage.training.metrics): MAE, RMSE, Pearson r, R^2, mean BAG and r(BAG, age) per stage, per site when
sites are known, and bias-corrected (de Lange & Cole 2020) when the checkpoint holds a correction; gathered over all
ranks under DDP.

The target is standardised with the training cohort's mean and std (stored in the checkpoint). Loss: L1 by
default (MSE, Huber configurable) plus the net's own auxiliary loss (Switch balance or the optional ERMoE
orthogonality regulariser; zero for plain ERMoE, which needs no balancing loss, arXiv 2511.10971). ERMoE bases are
re-orthonormalised by QR retraction after every optimizer step, outside `forward`. Optimiser (AdamW or SGD),
weight-decay groups and the warm-up + cosine schedule: `brainage.training.optim`. `predict_step` returns per-subject
predictions (`Trainer.predict`), as the comparison pipeline reads them.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import RandomSampler

from brainage.model import orthonormalize_
from brainage.contracts.checkpoint import checkpoint_metadata
from brainage.training.metrics import BrainAgeMetrics
from brainage.training.optim import build_optimizer, warmup_cosine
from brainage.training.region_swap import RegionSwap

__all__ = ["BrainAgeModule"]

_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss, "huber": F.smooth_l1_loss}
STAGES = ("train", "val", "test")


class BrainAgeModule(pl.LightningModule):
    """Train and evaluate a brain-age regressor.

    Args:
        net: the network (e.g. `brainage.model.BrainAgeViT`, `brainage.model.SFCN`), given as class_path/init_args.
        loss: regression loss on the standardised age: "l1" (default), "mse" or "huber".
        lr: peak learning rate.
        weight_decay: decay on weight matrices only (never on biases, norms, embeddings, spectra or bases; the rule is
            in `brainage.training.optim`); decoupled for AdamW, an L2 term for SGD.
        warmup_epochs: linear warm-up length in epochs (fractional allowed), then cosine decay to min_lr_ratio * lr.
        min_lr_ratio: final learning rate as a fraction of lr.
        aux_loss_weight: multiplier on the net's auxiliary loss (already weighted inside the MoE config).
        optimizer: "adamw" (default) or "sgd" (with `momentum`; Peng et al. 2021 trained SFCN with SGD).
        momentum: SGD momentum (unused by AdamW).
        region_swap: batch augmentation swapping whole atlas regions between training scans
            (`brainage.training.region_swap.RegionSwap`; None = off), for models whose attribution must see every
            regional effect; set on the nonlinearly normalised chain.
    """

    def __init__(self, net: nn.Module, loss: Literal["l1", "mse", "huber"] = "l1", lr: float = 1e-3,
                 weight_decay: float = 0.05, warmup_epochs: float = 1.0, min_lr_ratio: float = 0.01,
                 aux_loss_weight: float = 1.0, optimizer: Literal["adamw", "sgd"] = "adamw",
                 momentum: float = 0.9, region_swap: RegionSwap | None = None) -> None:
        super().__init__()
        if loss not in _LOSSES:
            raise ValueError(f"loss={loss!r}; expected one of {sorted(_LOSSES)}")
        if lr <= 0:
            raise ValueError(f"lr={lr} must be > 0")
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer={optimizer!r}; expected 'adamw' or 'sgd'")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum} must be in [0, 1)")
        self.save_hyperparameters(ignore=["net", "region_swap"])
        self.hparams["region_swap"] = None if region_swap is None else region_swap.settings()  # plain types only
        self.region_swap = region_swap
        self.net = net
        self.register_buffer("age_mean", torch.tensor(50.0))
        self.register_buffer("age_std", torch.tensor(20.0))
        self.bias_correction: dict | None = None  # set at the end of fit or from a loaded checkpoint
        self._subject_code: dict[str, int] = {}
        self._make_metrics(sites=(), deduplicate=False)

    def _make_metrics(self, sites, deduplicate: bool) -> None:
        # ModuleDict keys cannot be "train" (nn.Module.train), hence the "_metrics" suffix
        self.metrics = nn.ModuleDict({f"{s}_metrics": BrainAgeMetrics(sites, deduplicate) for s in STAGES})

    # -- data-dependent set-up ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and hasattr(dm, "train_ages"):
            ages = dm.train_ages()
            self.age_mean.fill_(float(ages.mean()))
            self.age_std.fill_(float(ages.std()) if len(ages) > 1 and float(ages.std()) > 0 else 1.0)
        if dm is not None and getattr(dm, "table", None) is not None:
            # the same vocabularies on every rank: all ranks read the same table
            self._subject_code = {s: i for i, s in enumerate(sorted(dm.table["subject_id"].astype(str).unique()))}
            sites = [str(s) for s in dm.table["site"].dropna().unique()]
            self._make_metrics(sites, deduplicate=self.trainer.world_size > 1)
        if dm is not None:
            self.check_data(dm)
        if stage == "fit" and self.region_swap is not None:
            affine = getattr(dm, "grid_affine", None)
            shape = getattr(getattr(dm, "preprocessing", None), "shape", None)
            if affine is None or shape is None:
                raise ValueError("region_swap needs a BrainAgeDataModule (its grid shape and affine place the atlas)")
            self.region_swap.set_grid(shape, affine)

    def check_data(self, dm) -> None:
        """ValueError when the net's input grid differs from the datamodule's preprocessed grid."""
        img_size = getattr(self.net, "init_args", {}).get("img_size")
        preprocessing = getattr(dm, "preprocessing", None)
        if img_size is not None and preprocessing is not None and tuple(img_size) != tuple(preprocessing.shape):
            raise ValueError(f"model img_size={tuple(img_size)} does not match data shape="
                             f"{tuple(preprocessing.shape)}; set both to the same grid")

    # -- steps ----------------------------------------------------------------------------------------------------
    def forward(self, image: torch.Tensor, sex: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted age in years, (b,)."""
        return self.net(image, sex=sex).pred * self.age_std + self.age_mean

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        image = batch["image"]  # (b, 1, X, Y, Z)
        if stage == "train" and self.region_swap is not None:
            image = self.region_swap(image)
        out = self.net(image, sex=batch.get("sex"))
        target = (batch["age"] - self.age_mean) / self.age_std  # (b,)
        loss = _LOSSES[self.hparams.loss](out.pred.float(), target)
        total = loss + self.hparams.aux_loss_weight * out.aux_loss
        predicted = out.pred.detach().float() * self.age_std + self.age_mean  # (b,) years
        keys = torch.tensor([self._subject_code.get(str(s), -1) for s in batch.get("subject_id", [])] or
                            [-1] * predicted.shape[0], device=predicted.device)  # (b,)
        self.metrics[f"{stage}_metrics"].update(predicted, batch["age"], batch.get("site", ()), keys)
        batch_size = batch["age"].shape[0]
        self.log(f"{stage}/loss", total, on_step=stage == "train", on_epoch=True, batch_size=batch_size,
                 sync_dist=stage != "train", prog_bar=stage == "train")
        if stage == "train":
            self.log("train/aux_loss", out.aux_loss, on_step=False, on_epoch=True, batch_size=batch_size)
        return total

    def _log_metrics(self, stage: str) -> None:
        """Compute the stage's metrics over all samples of all ranks (torchmetrics syncs the states) and log them."""
        metric = self.metrics[f"{stage}_metrics"]
        metric.correction = self.bias_correction if stage != "train" else None
        values = metric.compute()
        metric.reset()
        values = {f"{stage}/{k}": v for k, v in values.items() if not math.isnan(v)}
        mae = values.pop(f"{stage}/mae", None)
        self.log_dict(values, on_step=False, on_epoch=True)
        if mae is not None:
            self.log(f"{stage}/mae", mae, on_step=False, on_epoch=True, prog_bar=stage == "val")

    def on_train_epoch_end(self) -> None:
        self._log_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    # -- exact resume: every random draw of an epoch is a function of (seed, epoch) --------------------------------
    def _epoch_seed(self) -> int:
        return int(os.environ.get("PL_GLOBAL_SEED", 0)) + 1000 * self.current_epoch

    def on_train_epoch_start(self) -> None:
        # the shuffle (single process; DDP's DistributedSampler is already seeded per epoch) and the augmentation;
        # both are drawn lazily, after this hook, in a fresh and in a resumed run alike
        sampler = getattr(self.trainer.train_dataloader, "sampler", None)
        if isinstance(sampler, RandomSampler):
            sampler.generator = torch.Generator().manual_seed(self._epoch_seed())
        dm = getattr(self.trainer, "datamodule", None)
        augmentation = getattr(getattr(dm, "datasets", {}).get("train"), "augmentation", None)
        if hasattr(augmentation, "set_random_state"):
            augmentation.set_random_state(seed=self._epoch_seed() % 2**32)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # the model's own randomness (dropout, drop-path, router noise) after the loader has drawn its seeds;
        # one stream per rank
        if batch_idx == 0:
            torch.manual_seed(self._epoch_seed() + 1 + self.global_rank)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        orthonormalize_(self.net)  # QR retraction of every ERMoE basis after the optimizer step

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Per-subject predictions of a batch: subject_id (list), age and predicted age in years, (b,) each."""
        predicted = self(batch["image"], batch.get("sex")).float()  # (b,)
        return {"subject_id": list(batch["subject_id"]), "age": batch["age"].float().cpu(),
                "predicted": predicted.cpu()}

    # -- optimisation ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = build_optimizer(self.net, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = max(1, int(hp.warmup_epochs * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup, hp.min_lr_ratio))
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
            float(self.age_std), cohort, metrics, bias_correction=self.bias_correction)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """`brainage validate|test --ckpt_path` then also reports bias-corrected metrics."""
        card = (checkpoint.get("brainage") or {}).get("card") or {}
        self.bias_correction = card.get("bias_correction")

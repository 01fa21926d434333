"""Helpers of the training tests: the arguments of a tiny, fast `brainage fit` writing everything into one folder."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]  # the repository

# 24 x 32 x 24 voxels of 6 mm, a 2-layer ViT with 4 experts: about a second per epoch on one core
TINY_ARGS = [
    "--model.net.init_args.img_size", "[24, 32, 24]", "--model.net.init_args.embed_dim", "32",
    "--model.net.init_args.depth", "2", "--model.net.init_args.num_heads", "2",
    "--model.net.init_args.moe.num_experts", "4", "--model.net.init_args.moe.top_k", "2",
    "--data.spacing", "6.0", "--data.shape", "[24, 32, 24]", "--data.batch_size", "2",
    "--data.val_fraction", "0.34", "--data.test_fraction", "0.17", "--data.augment", "false",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]


def fit_args(cohort: Path, run_dir: Path, tracking_uri: str, epochs: int, min_slope: float = 0.05) -> list[str]:
    """`brainage fit` arguments (without the command) of a tiny run writing everything under run_dir."""
    callbacks = run_dir / "callbacks.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    callbacks.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(run_dir / "checkpoints"), "filename": "best", "monitor": "val/mae",
                       "mode": "min", "enable_version_counter": False}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(run_dir / "checkpoints"), "filename": "last", "save_top_k": 1,
                       "enable_version_counter": False}},
        {"class_path": "brainage.training.callbacks.RoutingDiagnostics"},
        {"class_path": "brainage.training.callbacks.Throughput"},
        {"class_path": "brainage.training.callbacks.FitSummary", "init_args": {"min_slope": min_slope}}]}}))
    return ["--config", str(ROOT / "configs/demo.yaml"), "--config", str(callbacks), *TINY_ARGS,
            "--data.root", str(cohort), "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir",
            str(run_dir), "--trainer.logger.init_args.tracking_uri", tracking_uri]

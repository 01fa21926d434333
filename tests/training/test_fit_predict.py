"""End to end on a tiny real synthetic cohort: LightningCLI fit -> MLflow run -> checkpoint -> predict CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from brainage.data.synth import synthesize_cohort
from brainage.predict import load_model, main as predict_main
from brainage.training.cli import BrainAgeCLI

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--model.net.init_args.img_size", "[24, 32, 24]", "--model.net.init_args.embed_dim", "32",
    "--model.net.init_args.depth", "2", "--model.net.init_args.num_heads", "2",
    "--model.net.init_args.moe.num_experts", "4", "--model.net.init_args.moe.top_k", "2",
    "--data.spacing", "6.0", "--data.shape", "[24, 32, 24]", "--data.batch_size", "2",
    "--data.val_fraction", "0.34", "--data.test_fraction", "0.17", "--data.augment", "false",
    "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    synthesize_cohort(out, n=6, seed=7, spacing=3.0, workers=1)
    return out


@pytest.fixture(scope="module")
def fitted(cohort, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    callbacks = run_dir / "callbacks.yaml"
    callbacks.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(run_dir / "checkpoints"), "filename": "best", "monitor": "val/mae",
                       "mode": "min", "save_last": True}},
        {"class_path": "brainage.training.callbacks.RoutingDiagnostics"},
        {"class_path": "brainage.training.callbacks.FitSummary"}]}}))
    args = ["fit", "--config", str(ROOT / "configs/demo.yaml"), "--config", str(callbacks), *TINY,
            "--data.root", str(cohort),
            "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.tracking_uri", uri,
            "--trainer.logger.init_args.experiment_name", "e2e"]
    cli = BrainAgeCLI(args=args)
    return run_dir, uri, cli


def test_fit_writes_checkpoint_card_and_split_manifests(fitted):
    run_dir, _, cli = fitted
    best = run_dir / "checkpoints" / "best.ckpt"
    assert best.exists() and (run_dir / "checkpoints" / "best.card.json").exists()
    meta = torch.load(best, map_location="cpu", weights_only=True)["brainage"]
    assert meta["net"]["name"] == "BrainAgeViT"
    assert meta["preprocessing"]["shape"] == [24, 32, 24]
    assert "not for diagnosis" in meta["card"]["intended_use"]
    assert meta["card"]["training_cohort"]["n_train"] == 3
    splits = list(csv.DictReader(open(run_dir / "splits.csv")))
    assert sorted(r["split"] for r in splits) == ["test", "train", "train", "train", "val", "val"]


def test_mlflow_run_holds_params_metrics_config_and_checkpoint(fitted):
    run_dir, uri, cli = fitted
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("e2e")
    (run,) = client.search_runs([experiment.experiment_id])
    assert float(run.data.params["lr"]) == pytest.approx(1e-3)
    history = client.get_metric_history(run.info.run_id, "val/mae")
    assert len(history) == 2  # one per epoch
    for key in ("val/rmse", "val/r", "train/mae", "moe/layer0/load_cv", "moe/layer0/coherence_max"):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints", "model"} <= artifacts
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(run_dir))
    assert "BrainAgeViT" in Path(config).read_text()


def test_predict_rows_and_error_rows(fitted, cohort, tmp_path):
    run_dir, _, _ = fitted
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    out = tmp_path / "pred.csv"
    code = predict_main(["--model", str(run_dir / "checkpoints/best.ckpt"), "--input", str(cohort), str(bad),
                         str(tmp_path / "missing.nii.gz"), "--output", str(out), "--workers", "0"])
    rows = list(csv.DictReader(open(out)))
    assert code == 1
    assert len(rows) == 8
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 6 and all(r["predicted_age"] and r["age"] and r["brain_age_gap"] for r in ok)
    errors = {r["subject_id"]: r["error"] for r in rows if r["status"] == "error"}
    assert "bad.nii.gz" in errors["bad"] and "not found" in errors["missing"]


def test_predict_refuses_non_brainage_and_pickled_files(tmp_path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(ValueError, match="not a brainage checkpoint"):
        load_model(plain)
    evil = tmp_path / "evil.ckpt"
    torch.save({"brainage": object()}, evil)
    with pytest.raises(ValueError, match="never unpickles"):
        load_model(evil)

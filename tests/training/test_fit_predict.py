"""End to end on a tiny real synthetic cohort: LightningCLI fit -> MLflow run -> checkpoint -> predict CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import pytest
import torch

from brainage.model.diagnostics import basis_coherence
from brainage.predict import load_model, main as predict_main
from brainage.contracts.checkpoint import read_checkpoint
from brainage.training.callbacks import RoutingDiagnostics
from brainage.training.cli import BrainAgeCLI
from tests.helpers.training import fit_args

pytestmark = pytest.mark.slow  # trains a model


@pytest.fixture(scope="module")
def cohort(cohort12) -> Path:
    return cohort12


@pytest.fixture(scope="module")
def fitted(cohort, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    cli = BrainAgeCLI(args=["fit", *fit_args(cohort, run_dir, uri, epochs=2),
                            "--trainer.logger.init_args.experiment_name", "e2e"])
    return run_dir, uri, cli


def test_fit_writes_checkpoint_card_and_split_manifests(fitted):
    run_dir, _, cli = fitted
    best = run_dir / "checkpoints" / "best.ckpt"
    assert best.exists() and (run_dir / "checkpoints" / "best.card.json").exists()
    meta = read_checkpoint(best).raw["brainage"]
    assert meta["net"]["name"] == "BrainAgeViT"
    assert meta["preprocessing"]["shape"] == [24, 32, 24]
    assert "not for diagnosis" in meta["card"]["intended_use"]
    assert meta["card"]["training_cohort"]["n_train"] == 6
    splits = list(csv.DictReader(open(run_dir / "splits.csv")))
    assert sorted(r["split"] for r in splits) == ["test"] * 2 + ["train"] * 6 + ["val"] * 4
    assert (run_dir / "checkpoints" / "last.ckpt").exists()


def test_predict_runs_the_chain_the_datamodule_trained_with(fitted):
    """The checkpoint stores the declared deterministic chain; predict rebuilds it, giving the same tensor."""
    run_dir, _, cli = fitted
    trained = cli.datamodule.preprocessing
    meta = read_checkpoint(run_dir / "checkpoints" / "best.ckpt").raw["brainage"]
    assert meta["preprocessing"]["deterministic"] == trained.spec
    model = load_model(run_dir / "checkpoints" / "best.ckpt")
    assert model.preprocessing.spec == trained.spec and model.preprocessing.augmentation_spec == []
    scan = str(cli.datamodule.table["path"].iloc[0])
    torch.testing.assert_close(model.transform({"image": scan})["image"].as_tensor(),
                               trained.deterministic()({"image": scan})["image"].as_tensor(), atol=0, rtol=0)


def test_mlflow_run_holds_params_metrics_config_and_checkpoint(fitted):
    run_dir, uri, cli = fitted
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("e2e")
    (run,) = client.search_runs([experiment.experiment_id])
    assert float(run.data.params["lr"]) == pytest.approx(1e-3)
    history = client.get_metric_history(run.info.run_id, "val/mae")
    assert len(history) == 2  # one per epoch
    for key in ("val/rmse", "val/r", "val/r2", "val/bag_mean", "val/r_bag_age", "val/n", "train/mae",
                "perf/volumes_per_s", "moe/layer0/load_cv", "moe/layer0/coherence_max",
                "moe/layer0/coherence_max_init", "moe/layer0/coherence_mean_init", "moe/layer0/coherence_max_final"):
        assert key in run.data.metrics, key
    # the coherence before the first step is logged at step 0, the final one equals the trained net's bases
    (init,) = client.get_metric_history(run.info.run_id, "moe/layer0/coherence_max_init")
    assert init.step == 0 and 0 < init.value <= 1 + 1e-6
    diagnostics = next(c for c in cli.trainer.callbacks if isinstance(c, RoutingDiagnostics))
    assert diagnostics.final == basis_coherence(cli.model.net)
    final = run.data.metrics["moe/layer0/coherence_max_final"]
    assert final == pytest.approx(diagnostics.final["layer0/coherence_max"])
    assert 0 <= run.data.metrics["perf/data_wait_fraction"] < 1
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
    assert len(rows) == 14
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 12 and all(r["predicted_age"] and r["age"] and r["brain_age_gap"] for r in ok)
    errors = {r["subject_id"]: r["error"] for r in rows if r["status"] == "error"}
    assert "bad.nii.gz" in errors["bad"] and "not found" in errors["missing"]

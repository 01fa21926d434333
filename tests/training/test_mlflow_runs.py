"""MLflow runs that compare: two seeded fits in one real sqlite store get distinct, meaningful names; the network
and Trainer settings are params; the best epoch's validation metrics and the held-out test metrics (best checkpoint,
after selection) are logged; the run id is written next to the run for `brainage report --mlflow-run`."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pytest
import torch

from brainage.training.callbacks import RUN_ID_FILE, validation_predictions
from brainage.training.cli import BrainAgeCLI
from tests.helpers.training import fit_args

pytestmark = pytest.mark.slow  # trains two tiny models


@pytest.fixture(scope="module")
def two_runs(cohort12, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    clis = [BrainAgeCLI(args=["fit", *fit_args(cohort12, folder / name, uri, epochs=3),
                              "--trainer.logger.init_args.experiment_name", "compare"]) for name in ("a", "b")]
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("compare").experiment_id],
                              order_by=["attributes.start_time ASC"])
    return folder, client, runs, clis


def test_runs_have_distinct_meaningful_names(two_runs):
    folder, _, runs, _ = two_runs
    names = [run.info.run_name for run in runs]
    assert len(names) == 2 and names[0] != names[1]  # both runs were seeded with 42
    for name in names:
        assert re.fullmatch(r"vit-eigen-e4k2-\d{8}-\d{6}-[0-9a-f]{4}", name), name
    assert [(folder / n / RUN_ID_FILE).read_text().strip() for n in ("a", "b")] == [r.info.run_id for r in runs]


def test_network_and_trainer_settings_are_params(two_runs):
    _, _, runs, _ = two_runs
    params = runs[0].data.params
    expected = {"net/name": "BrainAgeViT", "net/moe/router": "eigen", "net/moe/num_experts": "4",
                "net/moe/top_k": "2", "net/embed_dim": "32", "net/depth": "2", "net/pool": "grid",
                "net/moe_layers": "all", "net/mlp": "moe", "net/patch_size": "8", "trainer/max_epochs": "3",
                "trainer/precision": "32-true", "trainer/accelerator": "cpu", "trainer/gradient_clip_val": "1.0",
                "seed_everything": "42", "lr": "0.001", "batch_size": "2"}
    assert {k: params.get(k) for k in expected} == expected
    assert "net/moe/rank" in params and "net/img_size" in params


def test_best_validation_and_test_metrics(two_runs):
    _, client, runs, clis = two_runs
    run, cli = runs[0], clis[0]
    history = client.get_metric_history(run.info.run_id, "val/mae")
    assert len(history) == 3
    best = min(history, key=lambda m: m.value)
    metrics = run.data.metrics
    assert metrics["best/val_mae"] == pytest.approx(best.value, rel=1e-6)
    assert metrics["best/epoch"] == pytest.approx(sorted(history, key=lambda m: m.step).index(best))
    for key in ("best/val_rmse", "best/val_r", "test/mae", "test/rmse", "test/r"):
        assert key in metrics, key
    # test/mae is the best checkpoint's error on the held-out split, recomputed here from the checkpoint
    dm = cli.datamodule
    path = cli.trainer.checkpoint_callback.best_model_path
    age, predicted = validation_predictions(cli.model.net, path, dm.datasets["test"], 2, torch.device("cpu"))
    assert len(age) == 2 and metrics["test/mae"] == pytest.approx(float(np.abs(predicted - age).mean()), rel=1e-4)
    assert set(dm.datasets["test"].rows["subject_id"]).isdisjoint(dm.datasets["val"].rows["subject_id"])

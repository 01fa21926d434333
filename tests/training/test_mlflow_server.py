"""A real `mlflow server` (sqlite backend, proxied artifacts) on 127.0.0.1: train against it over HTTP, read the run
back, register the model in the registry and load it back for prediction."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from brainage import tracking
from brainage.data.inputs import read_inputs
from brainage.predict import load_model, predict_iter
from brainage.training.cli import BrainAgeCLI
from tests.helpers.training import fit_args

pytestmark = pytest.mark.slow  # a real `mlflow server` and training


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker: the group this test started
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def served_run(server, cohort12, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("served-run")
    BrainAgeCLI(args=["fit", *fit_args(cohort12, run_dir, server, epochs=2),
                      "--trainer.logger.init_args.experiment_name", "served"])
    client = mlflow.MlflowClient(tracking_uri=server)
    (run,) = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    return run_dir, run


def test_run_read_back_over_http(server, served_run):
    run_dir, run = served_run
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # artifacts travel through the server too
    client = mlflow.MlflowClient(tracking_uri=server)
    assert run.data.params["loss"] == "l1" and float(run.data.params["lr"]) == pytest.approx(1e-3)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mae")] == sorted(
        m.step for m in client.get_metric_history(run.info.run_id, "val/mae"))
    assert len(client.get_metric_history(run.info.run_id, "val/mae")) == 2
    for key in ("val/rmse", "val/r", "val/r2", "val/bag_mean", "val/r_bag_age", "train/mae", "moe/layer1/load_cv",
                "moe/layer0/routing_entropy", "moe/layer0/coherence_max", "moe/layer0/greedy_gap_mean"):
        assert key in run.data.metrics, key
    artifacts = set(tracking.run_artifacts(server, run.info.run_id))
    assert {"config.yaml", "checkpoints/best.ckpt", "model/best.card.json"} <= artifacts
    config = tracking.download_artifact(server, run.info.run_id, "config.yaml").read_text()
    assert "BrainAgeViT" in config and "embed_dim: 32" in config
    card = json.loads(tracking.download_artifact(server, run.info.run_id, "model/best.card.json").read_text())
    assert card["input_contract"]["modality"] == "T1w" and card["input_contract"]["shape"]
    assert card["training_cohort"]["n_train"] == 6 and card["training_cohort"]["age_max"] > 0
    assert "val/mae" in card["validation_metrics"] and "bias_correction" in card
    assert "not for diagnosis" in card["intended_use"] and card["versions"]["torch"] == torch.__version__


def test_register_and_load_back_for_prediction(server, served_run, cohort12):
    run_dir, run = served_run
    version = tracking.register_model(run.info.run_id, "brainage-tiny", tracking_uri=server)
    assert version == "1"
    registered = load_model(f"models:/brainage-tiny/{version}", tracking_uri=server)
    local = load_model(run_dir / "checkpoints" / "best.ckpt")
    table = read_inputs([str(cohort12)]).head(3)
    from_registry = [r.predicted_age for r in predict_iter(registered, table, num_workers=0)]
    from_disk = [r.predicted_age for r in predict_iter(local, table, num_workers=0)]
    assert np.all(np.isfinite(from_registry)) and from_registry == pytest.approx(from_disk, abs=1e-5)

"""MLflow tracking: the only brainage module that imports mlflow.

Default store: `sqlite:///mlflow.db` in the working directory (no server needed). Any tracking URI works, from the
config (`trainer.logger.init_args.tracking_uri`) or the `MLFLOW_TRACKING_URI` environment variable. mlflow itself is
imported inside the functions that use it (about 4 s), so that importing this module, e.g. for `brainage fit --help`,
stays cheap.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["DEFAULT_TRACKING_URI", "MLflowTracker", "resolve_tracking_uri", "log_text", "log_file", "log_json",
           "is_tracker", "name_run", "run_artifacts", "download_artifact", "fetch_model", "register_model",
           "log_directory", "latest_runs"]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI, else `MLFLOW_TRACKING_URI`, else the local sqlite store in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class MLflowTracker(MLFlowLogger):
    """Lightning's MLflow logger with brainage's default store.

    Args:
        experiment_name: MLflow experiment.
        run_name: optional run name.
        tracking_uri: store URI; None = `MLFLOW_TRACKING_URI` or `sqlite:///mlflow.db`.
        artifact_location: where new experiments keep artifacts (None = the store's default).
        tags: extra run tags.
    """

    def __init__(self, experiment_name: str = "brainage", run_name: str | None = None,
                 tracking_uri: str | None = None, artifact_location: str | None = None,
                 tags: dict[str, str] | None = None) -> None:
        super().__init__(experiment_name=experiment_name, run_name=run_name,
                         tracking_uri=resolve_tracking_uri(tracking_uri), artifact_location=artifact_location,
                         tags=tags, log_model=False)
        self.tracking_uri = resolve_tracking_uri(tracking_uri)

    def run_url(self) -> str:
        return f"{self.tracking_uri} experiment {self.experiment_id} run {self.run_id}"


def is_tracker(logger: object) -> bool:
    return isinstance(logger, MLFlowLogger)


def name_run(logger: MLFlowLogger, label: str) -> str | None:
    """Name the logger's run `<label>-<YYYYmmdd-HHMMSS>-<4 hex>` before it is created; a name the config gives (or an
    existing run) wins. Returns the name, or None when the run was already named.

    The hex comes from `secrets`: MLflow generates names with the `random` module, which `seed_everything` reseeds,
    so without a name every seeded run of a store was called alike.
    """
    if getattr(logger, "_run_name", None) is not None or getattr(logger, "_run_id", None) is not None:
        return None
    logger._run_name = f"{label}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    return logger._run_name


@rank_zero_only
def log_file(logger: MLFlowLogger, path: str | Path, artifact_path: str | None = None) -> None:
    logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)


@rank_zero_only
def log_text(logger: MLFlowLogger, text: str, artifact_file: str) -> None:
    logger.experiment.log_text(logger.run_id, text, artifact_file)


@rank_zero_only
def log_json(logger: MLFlowLogger, data: dict, artifact_file: str) -> None:
    logger.experiment.log_text(logger.run_id, json.dumps(data, indent=2, default=str), artifact_file)


def run_artifacts(tracking_uri: str, run_id: str) -> list[str]:
    """Artifact paths of a run (recursive), for checks and for loading models from MLflow."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)

    def walk(path: str | None) -> list[str]:
        out = []
        for item in client.list_artifacts(run_id, path):
            out += walk(item.path) if item.is_dir else [item.path]
        return out

    return walk(None)


def fetch_model(uri: str, tracking_uri: str | None = None) -> Path:
    """Local path of a brainage checkpoint named by an MLflow URI.

    `runs:/<run_id>` (the run's `checkpoints/best.ckpt`), `runs:/<run_id>/<artifact path>`, or a registered model
    `models:/<name>/<version>`, downloaded into a temporary folder that is removed when the process exits. Raises
    ValueError naming the URI when nothing usable is found.
    """
    import mlflow

    uri_store = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri_store)
    if uri.startswith("runs:/") and uri.rstrip("/").count("/") == 1:
        uri = f"{uri.rstrip('/')}/checkpoints/best.ckpt"
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=_scratch_folder()))
    except Exception as err:  # noqa: BLE001 - mlflow raises several types for missing runs/models/artifacts
        raise ValueError(f"model URI {uri!r} could not be fetched from {uri_store}: {err}") from err
    if local.is_dir():
        found = sorted(local.rglob("*.ckpt"))
        if not found:
            raise ValueError(f"model URI {uri!r} holds no .ckpt file (found {[p.name for p in local.rglob('*')]})")
        best = [p for p in found if p.name == "best.ckpt"]
        local = (best or found)[0]
    return local


def log_directory(run_id: str, folder: str | Path, artifact_path: str | None = None,
                  tracking_uri: str | None = None) -> None:
    """Attach a folder (e.g. a report) to an existing run as artifacts."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    client.log_artifacts(run_id, str(folder), artifact_path)


def register_model(run_id: str, name: str, tracking_uri: str | None = None) -> str:
    """Register a run's checkpoints in the MLflow model registry; returns the new version."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="brainage checkpoint (research use only)")
    source = f"{client.get_run(run_id).info.artifact_uri}/checkpoints"
    return str(client.create_model_version(name, source, run_id=run_id).version)


def download_artifact(tracking_uri: str, run_id: str, artifact_path: str) -> Path:
    """Fetch one artifact of a run into a temporary folder (removed when the process exits) and return its local
    path."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    return Path(client.download_artifacts(run_id, artifact_path, _scratch_folder()))


def _scratch_folder() -> str:
    """A new temporary folder that is removed when the process exits (downloaded checkpoints are not left behind)."""
    folder = tempfile.mkdtemp(prefix="brainage-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def latest_runs(experiment_name: str, tracking_uri: str | None = None) -> dict[str, dict]:
    """The newest finished run of each run name in an experiment: {run_name: {run_id, metrics, params,
    seconds}} (seconds = wall time from start to end), for tables such as pipelines/compare.sh's."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ValueError(f"MLflow experiment {experiment_name!r} not found in {resolve_tracking_uri(tracking_uri)}")
    out: dict[str, dict] = {}
    for run in client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"]):
        name = run.info.run_name
        if name in out:
            continue
        seconds = (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else float("nan")
        out[name] = {"run_id": run.info.run_id, "metrics": dict(run.data.metrics), "params": dict(run.data.params),
                     "seconds": seconds}
    return out

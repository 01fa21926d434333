"""MLflow tracking: the only brainage module that imports mlflow.

Default store: `sqlite:///mlflow.db` in the working directory (no server needed). Any tracking URI works, from the
config (`trainer.logger.init_args.tracking_uri`) or the `MLFLOW_TRACKING_URI` environment variable.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import mlflow
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["DEFAULT_TRACKING_URI", "MLflowTracker", "resolve_tracking_uri", "log_text", "log_file", "log_json",
           "is_tracker", "run_artifacts", "download_artifact"]

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
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)

    def walk(path: str | None) -> list[str]:
        out = []
        for item in client.list_artifacts(run_id, path):
            out += walk(item.path) if item.is_dir else [item.path]
        return out

    return walk(None)


def download_artifact(tracking_uri: str, run_id: str, artifact_path: str) -> Path:
    """Fetch one artifact of a run into a temporary folder and return its local path."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    return Path(client.download_artifacts(run_id, artifact_path, tempfile.mkdtemp(prefix="brainage-")))

"""The model card that travels inside every brainage checkpoint and next to it as `.card.json` (cf. the MONAI
bundle's `metadata.json`): intended use, input contract, training cohort, validation metrics, bias correction and
library versions. Plain Python types only, so a checkpoint stays `torch.load(weights_only=True)`-readable.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import brainage
from brainage.contracts.atomic import write_text_atomic

__all__ = ["INTENDED_USE", "installed_versions", "model_card", "now", "package_versions", "write_card_json"]

INTENDED_USE = ("Research use only, not for diagnosis. Predicts brain age in years from a skull-stripped T1w MRI "
                "affinely aligned to MNI152; not validated for clinical decisions about individual patients.")


def now() -> str:
    """UTC timestamp of card entries (ISO 8601, seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def installed_versions(names: Sequence[str]) -> dict[str, str]:
    """Each distribution's installed version, "not installed" where it is not."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def package_versions() -> dict[str, str]:
    """Python, brainage and the training stack's versions, as the model card records them."""
    return {"python": platform.python_version(), "brainage": brainage.__version__,
            **installed_versions(("torch", "monai", "lightning", "torchmetrics", "nibabel", "mlflow"))}


def model_card(contract: dict, cohort: dict, metrics: dict, bias_correction: dict | None) -> dict:
    """The human-readable card of a newly trained model."""
    return {
        "name": "brainage",
        "intended_use": INTENDED_USE,
        "input_contract": contract,
        "output": "brain age in years (predicted_age); corrected_age applies the bias correction",
        "training_cohort": cohort,
        "validation_metrics": metrics,
        "bias_correction": bias_correction,
        "versions": package_versions(),
        "created": now(),
    }


def write_card_json(card: dict, path: str | Path) -> Path:
    """Write the model card as JSON, atomically."""
    return write_text_atomic(path, json.dumps(card, indent=2))

"""The model card and checkpoint metadata that travel with every brainage checkpoint (cf. MONAI bundle metadata).

The checkpoint's `brainage` entry holds only plain Python types and tensors, so `torch.load(weights_only=True)`
can read it: no pickled code is ever executed when a model is loaded.
"""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata

import torch

import brainage

__all__ = ["CHECKPOINT_FORMAT", "INTENDED_USE", "checkpoint_metadata", "package_versions"]

CHECKPOINT_FORMAT = "brainage-checkpoint/1"
INTENDED_USE = ("Research use only, not for diagnosis. Predicts brain age in years from a skull-stripped T1w MRI "
                "affinely aligned to MNI152; not validated for clinical decisions about individual patients.")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "brainage": brainage.__version__}
    for name in ("torch", "monai", "lightning", "torchmetrics", "nibabel", "mlflow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def checkpoint_metadata(net: torch.nn.Module, preprocessing: dict, contract: dict, target_mean: float,
                        target_std: float, cohort: dict, metrics: dict, bias_correction: dict | None) -> dict:
    """Everything predict needs to rebuild, feed and de-normalise the net, plus the human-readable card."""
    return {
        "format": CHECKPOINT_FORMAT,
        "net": {"name": type(net).__name__, "init_args": net.init_args},
        "preprocessing": preprocessing,
        "target": {"mean": float(target_mean), "std": float(target_std), "unit": "years"},
        "card": {
            "name": "brainage",
            "intended_use": INTENDED_USE,
            "input_contract": contract,
            "output": "brain age in years (predicted_age); corrected_age applies the bias correction",
            "training_cohort": cohort,
            "validation_metrics": metrics,
            "bias_correction": bias_correction,
            "versions": package_versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }

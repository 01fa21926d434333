"""The model card and checkpoint metadata that travel with every brainage checkpoint (cf. MONAI bundle metadata).

The checkpoint's `brainage` entry holds only plain Python types and tensors, so `torch.load(weights_only=True)`
can read it: no pickled code is ever executed when a model is loaded.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

import brainage

__all__ = ["CHECKPOINT_FORMAT", "INTENDED_USE", "checkpoint_metadata", "package_versions", "update_card",
           "write_card_json"]

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


def update_card(source: str | Path, target: str | Path, **entries) -> dict:
    """Copy a checkpoint from source to target with `card` entries replaced; atomic, stays weights_only-loadable.

    Returns the new card. Entries must be plain Python types (dict, list, str, float, int, bool, None).
    """
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint.get("brainage"), dict):
        raise ValueError(f"{source}: not a brainage checkpoint (no 'brainage' entry)")
    card = checkpoint["brainage"]["card"]
    card.update(entries)
    card["modified"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, target)
    return card


def write_card_json(card: dict, path: str | Path) -> Path:
    """Write the model card as JSON, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(card, indent=2))
    os.replace(tmp, path)
    return path

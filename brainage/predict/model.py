"""Safe model loading for prediction: a checkpoint file, an MLflow run (`runs:/<id>`) or a registered model
(`models:/<name>/<version>`), read through `brainage.contracts.checkpoint` (weights only, every entry checked, finite
weights).

A file that is not a brainage checkpoint is refused with a clear error, never unpickled. The deterministic
preprocessing chain stored in the checkpoint is rebuilt through the allow-list of `brainage.data.preprocessing`
(MONAI and brainage dictionary transforms, plain arguments), so the exact chain of training runs and a tampered
spec is refused before anything is built. The model card's input contract (spacing, shape, orientation,
normalisation) is checked against that chain, so a model is never fed inputs it was not trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from brainage.contracts.checkpoint import CheckpointError, read_checkpoint
from brainage.data.fastpath import accelerate
from brainage.data.preprocessing import Preprocessing, PreprocessingError
from brainage.data.transforms import DEFAULT_MAX_VOXELS, LoadVolumed
from brainage.model import build_net

__all__ = [
    "MODEL_URI_SCHEMES",
    "LoadedModel",
    "ModelLoadError",
    "check_input_contract",
    "load_model",
    "resolve_model_path",
]

MODEL_URI_SCHEMES = ("runs:/", "models:/")
_CONTRACT_KEYS = ("orientation", "spacing_mm", "shape", "normalisation")


class ModelLoadError(ValueError):
    """The model file is missing, unsafe, inconsistent or not a brainage checkpoint."""


@dataclass
class LoadedModel:
    """A brain-age net ready for inference, with the preprocessing and card it was trained with."""

    net: nn.Module
    preprocessing: Preprocessing
    card: dict
    target_mean: float
    target_std: float
    device: torch.device
    max_voxels: int = DEFAULT_MAX_VOXELS  # files whose header claims more are refused before decoding

    @property
    def transform(self) -> Callable[[dict], dict]:
        """The preprocessing's deterministic chain with faster equivalent steps (`brainage.data.fastpath`), its
        loader refusing files whose header claims more than `max_voxels` voxels."""
        chain = accelerate(self.preprocessing.deterministic())
        for step in chain.transforms:
            if isinstance(step, LoadVolumed):
                step.max_voxels = self.max_voxels
        return chain

    @property
    def num_experts(self) -> int:
        moe = self.net.init_args.get("moe") or {}
        return int(moe.get("num_experts", 0)) if self.net.init_args.get("mlp", "moe") == "moe" else 0

    @property
    def bias_correction(self) -> dict | None:
        return self.card.get("bias_correction") or None

    def to_years(self, pred: torch.Tensor) -> torch.Tensor:
        return pred.float() * self.target_std + self.target_mean


def resolve_model_path(spec: str | Path, tracking_uri: str | None = None) -> Path:
    """Local checkpoint path of a file path or an MLflow `runs:/` / `models:/` URI (downloaded)."""
    text = str(spec)
    if text.startswith(MODEL_URI_SCHEMES):
        from brainage.tracking import fetch_model  # mlflow is imported only when a URI is used

        try:
            return fetch_model(text, tracking_uri)
        except ValueError as err:
            raise ModelLoadError(str(err)) from err
    path = Path(text)
    if not path.is_file():
        raise ModelLoadError(f"model {text!r} not found; expected a brainage .ckpt file, runs:/<run_id>[/path] or "
                             f"models:/<name>/<version>")
    return path


def check_input_contract(card: dict, preprocessing: Preprocessing, net_init_args: dict, source: str) -> None:
    """Raise ModelLoadError when the card's input contract disagrees with the preprocessing or the net's input size."""
    contract = card.get("input_contract")
    if not isinstance(contract, dict):
        raise ModelLoadError(f"{source}: the model card has no input_contract (found {type(contract).__name__}); "
                             f"expected a dict with {list(_CONTRACT_KEYS)}")
    expected = preprocessing.contract()
    wrong = [f"{key}: card says {contract.get(key)!r}, preprocessing does {expected[key]!r}"
             for key in _CONTRACT_KEYS if contract.get(key) != expected[key]]
    img_size = net_init_args.get("img_size")
    if img_size is not None and [int(s) for s in img_size] != expected["shape"]:
        wrong.append(f"net img_size: {list(img_size)}, preprocessing shape {expected['shape']}")
    if wrong:
        raise ModelLoadError(f"{source}: the model card's input contract does not match the checkpoint's "
                             f"preprocessing ({'; '.join(wrong)}); refusing to predict with inputs the model was not "
                             f"trained on")


def load_model(spec: str | Path, device: str = "cpu", tracking_uri: str | None = None) -> LoadedModel:
    """Load a brainage model safely from a `.ckpt` path, `runs:/<run_id>[/path]` or `models:/<name>/<version>`.

    `tracking_uri` (MLflow URIs only): explicit store, else `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db`.
    """
    path = resolve_model_path(spec, tracking_uri)
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointError as err:
        raise ModelLoadError(str(err)) from None
    try:
        preprocessing = Preprocessing.from_dict(checkpoint.preprocessing)
    except PreprocessingError as err:
        raise ModelLoadError(f"{path}: the checkpoint's preprocessing spec is refused: {err}") from None
    try:
        check_input_contract(checkpoint.card, preprocessing, checkpoint.net_init_args, str(spec))
        net = build_net(checkpoint.net_name, checkpoint.net_init_args)
        net.load_state_dict(checkpoint.net_state)
    except ModelLoadError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"{path}: brainage checkpoint is incomplete or inconsistent ({type(err).__name__}: "
                             f"{err})") from None
    target = torch.device(device)
    return LoadedModel(net.eval().to(target), preprocessing, checkpoint.card, checkpoint.target_mean,
                       checkpoint.target_std, target)

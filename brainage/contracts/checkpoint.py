"""The brainage checkpoint format and its safe reading and writing.

A checkpoint is a Lightning checkpoint (`state_dict` with `net.`-prefixed weights, plus whatever Lightning keeps)
with one `brainage` entry of plain Python types::

    {"format": "brainage-checkpoint/1",
     "net": {"name": "BrainAgeViT", "init_args": {...}},      # rebuilt through brainage.model.build_net
     "preprocessing": {"deterministic": [...], ...},           # rebuilt through the allow-list of brainage.data
     "target": {"mean": float, "std": float, "unit": "years"}, # the standardised regression target
     "card": {...}}                                            # brainage.contracts.card.model_card

Checkpoints come from other people, so `read_checkpoint` loads with `torch.load(weights_only=True)` only (no pickled
code ever runs), checks every entry's type, and refuses non-finite weights, targets or bias corrections: a model
that would predict NaN or inf is refused at load, not discovered in the output. Writes are atomic.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from brainage.contracts.atomic import atomic_path
from brainage.contracts.bias import check_bias_correction
from brainage.contracts.card import model_card, now

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "CheckpointError", "checkpoint_metadata", "read_checkpoint",
           "save_checkpoint", "update_card"]

CHECKPOINT_FORMAT = "brainage-checkpoint/1"
_NET_PREFIX = "net."


class CheckpointError(ValueError):
    """The file is missing, unsafe, inconsistent or not a brainage checkpoint; the message names the file."""


@dataclass(frozen=True)
class Checkpoint:
    """A checked brainage checkpoint; `raw` is the whole loaded dictionary (for rewriting it)."""

    path: Path
    net_name: str
    net_init_args: dict
    preprocessing: dict
    target_mean: float
    target_std: float
    card: dict
    net_state: dict[str, Tensor]  # the net's weights, without the "net." prefix
    raw: dict

    @property
    def bias_correction(self) -> dict | None:
        return self.card.get("bias_correction") or None


def checkpoint_metadata(net: torch.nn.Module, preprocessing: dict, contract: dict, target_mean: float,
                        target_std: float, cohort: dict, metrics: dict, bias_correction: dict | None) -> dict:
    """The `brainage` entry: everything predict needs to rebuild, feed and de-normalise `net`, plus the card."""
    return {
        "format": CHECKPOINT_FORMAT,
        "net": {"name": type(net).__name__, "init_args": net.init_args},
        "preprocessing": preprocessing,
        "target": {"mean": float(target_mean), "std": float(target_std), "unit": "years"},
        "card": model_card(contract, cohort, metrics, bias_correction),
    }


def save_checkpoint(path: str | Path, net_state: dict[str, Tensor], meta: dict) -> Path:
    """Write a minimal brainage checkpoint {"state_dict": {"net." + k: v}, "brainage": meta} atomically."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": {f"{_NET_PREFIX}{k}": v for k, v in net_state.items()}, "brainage": meta}, tmp)
    return Path(path)


def _load(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own message suggests unpickling anyway: never relay it
        raise CheckpointError(f"{path}: holds pickled Python objects, not only tensors and plain values; brainage "
                              f"never unpickles arbitrary objects (unpickling can run code)") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as err:
        first = (str(err).splitlines() or [""])[0]
        detail = "" if "weights_only" in first else f": {first[:200]}"
        raise CheckpointError(f"{path}: cannot be read as a brainage checkpoint ({type(err).__name__}{detail}); "
                              f"expected a .ckpt written by `brainage fit`") from None
    return checkpoint


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"{where} is {value!r}; expected a finite number")
    return float(value)


def _mapping(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise CheckpointError(f"{where} is a {type(value).__name__}; expected a mapping")
    return value


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load and check a brainage checkpoint; CheckpointError (naming the file and the entry) otherwise."""
    path = Path(path)
    checkpoint = _load(path)
    meta = checkpoint.get("brainage") if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not a brainage checkpoint (found keys {found}); expected a 'brainage' "
                              f"entry with format {CHECKPOINT_FORMAT!r}")
    where = f"{path}: brainage."
    for key in ("net", "preprocessing", "target", "card"):
        _mapping(meta.get(key), f"{where}{key}")
    name = meta["net"].get("name")
    if not isinstance(name, str):
        raise CheckpointError(f"{where}net.name is {name!r}; expected a net name such as 'BrainAgeViT'")
    init_args = _mapping(meta["net"].get("init_args"), f"{where}net.init_args")
    mean = _number(meta["target"].get("mean"), f"{where}target.mean")
    std = _number(meta["target"].get("std"), f"{where}target.std")
    if std <= 0:
        raise CheckpointError(f"{where}target.std is {std}; expected a positive spread of the training ages")
    card = meta["card"]
    _mapping(card.get("input_contract"), f"{where}card.input_contract")
    try:
        check_bias_correction(card.get("bias_correction"), f"{path}: card")
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    state = _mapping(checkpoint.get("state_dict"), f"{path}: state_dict")
    net_state = {k.removeprefix(_NET_PREFIX): v for k, v in state.items() if k.startswith(_NET_PREFIX)}
    bad = [k for k, v in net_state.items() if not isinstance(v, Tensor)
           or (v.is_floating_point() and not bool(torch.isfinite(v).all()))]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensor(s) are not finite tensors (first: {bad[0]}); "
                              f"expected finite weights: the model would predict NaN or inf")
    return Checkpoint(path, name, init_args, meta["preprocessing"], mean, std, card, net_state, checkpoint)


def update_card(source: str | Path, target: str | Path, **entries) -> dict:
    """Copy a checkpoint from `source` to `target` with `card` entries replaced; atomic, still weights_only-loadable.

    Returns the new card. Entries must be plain Python types (dict, list, str, float, int, bool, None).
    """
    checkpoint = read_checkpoint(source).raw
    card = checkpoint["brainage"]["card"]
    card.update(entries)
    card["modified"] = now()
    with atomic_path(target) as tmp:
        torch.save(checkpoint, tmp)
    return card

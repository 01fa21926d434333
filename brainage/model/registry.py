"""Rebuild a brain-age net from its name and JSON ``init_args`` through a fixed registry.

Checkpoints store ``type(net).__name__`` and ``net.init_args``; predict may load untrusted checkpoints, so names are
looked up in :data:`NETS` only, never imported.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from brainage.model.sfcn import SFCN
from brainage.model.vit import BrainAgeViT

__all__ = ["NETS", "build_net"]

NETS: dict[str, type[BrainAgeViT] | type[SFCN]] = {"BrainAgeViT": BrainAgeViT, "SFCN": SFCN}


def build_net(name: str, init_args: dict[str, Any]) -> nn.Module:
    """``NETS[name].from_init_args(init_args)``; ValueError for an unknown name or bad arguments."""
    if name not in NETS:
        raise ValueError(f"unknown net {name!r}; available: {sorted(NETS)}")
    try:
        return NETS[name].from_init_args(init_args)
    except TypeError as err:  # unknown or missing keyword in init_args
        raise ValueError(f"init_args {sorted(init_args)} do not fit {name}: {err}") from err

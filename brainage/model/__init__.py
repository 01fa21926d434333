"""brainage.model: pure-PyTorch 3D ViT with ERMoE MLP slots (Cheng et al., arXiv 2511.10971), baselines (dense,
softmax top-k MoE with Switch loss, EMoE router arXiv 2601.12137, SFCN Peng et al. 2021) and routing diagnostics.
"""

from __future__ import annotations

from brainage.model.diagnostics import collect_diagnostics
from brainage.model.mlp import Mlp
from brainage.model.moe import MoEConfig, MoEMlp, orthonormalize_, switch_load_balancing_loss
from brainage.model.registry import NETS, build_net
from brainage.model.routing import LayerRouting, ModelOutput, Routing, SlotOutput
from brainage.model.sfcn import SFCN
from brainage.model.slot import make_mlp
from brainage.model.vit import BrainAgeViT

__all__ = [
    "BrainAgeViT",
    "SFCN",
    "Mlp",
    "MoEMlp",
    "MoEConfig",
    "make_mlp",
    "orthonormalize_",
    "switch_load_balancing_loss",
    "build_net",
    "NETS",
    "collect_diagnostics",
    "Routing",
    "SlotOutput",
    "LayerRouting",
    "ModelOutput",
]

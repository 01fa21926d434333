"""The dense ViT MLP (Dosovitskiy et al. 2021; timm ``Mlp``): the dense MLP slot, and the shared expert of the MoE slot.

Every MLP slot (this one and :class:`brainage.model.moe.MoEMlp`) takes ``(dim, hidden_dim, dropout)`` first and
returns a :class:`~brainage.model.routing.SlotOutput` from ``forward(x (b, n, d), return_routing=False)``, so the dense
baseline runs through the same code; :func:`brainage.model.slot.make_mlp` picks the slot.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from brainage.model.routing import SlotOutput

__all__ = ["Mlp"]


class Mlp(nn.Module):
    """Dense ``d -> hidden_dim -> d`` MLP with GELU.

    Args:
        dim: token width d.
        hidden_dim: hidden width.
        dropout: dropout after the activation and after the output.
    """

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, return_routing: bool = False) -> SlotOutput:
        """``x`` (b, n, d) -> SlotOutput(out (b, n, d), aux_loss 0, routing None)."""
        out = self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))
        return SlotOutput(out=out, aux_loss=out.new_zeros((), dtype=out.dtype), routing=None)

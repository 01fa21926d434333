"""The transformer MLP slot: the dense ViT MLP (Dosovitskiy et al. 2021; timm ``Mlp``) and the factory that picks
the dense or the MoE slot. Both share one constructor ``(dim, hidden_dim, dropout, moe)`` and one forward
``(x (b, n, d), return_routing=False) -> SlotOutput``, so the dense baseline runs through the same code.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from brainage.model.moe import MoEConfig, MoEMlp
from brainage.model.routing import SlotOutput

__all__ = ["Mlp", "make_mlp"]


class Mlp(nn.Module):
    """Dense ``d -> hidden_dim -> d`` MLP with GELU.

    Args:
        dim: token width d.
        hidden_dim: hidden width.
        dropout: dropout after the activation and after the output.
        moe: must be None (present so that dense and MoE slots share one signature).
    """

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, moe: MoEConfig | None = None) -> None:
        super().__init__()
        if moe is not None:
            raise ValueError(f"the dense Mlp takes no MoE config, got {moe!r}; use MoEMlp or make_mlp")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, return_routing: bool = False) -> SlotOutput:
        """``x`` (b, n, d) -> SlotOutput(out (b, n, d), aux_loss 0, routing None)."""
        out = self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))
        return SlotOutput(out=out, aux_loss=out.new_zeros((), dtype=out.dtype), routing=None)


def make_mlp(dim: int, hidden_dim: int, dropout: float = 0.0, moe: MoEConfig | None = None) -> Mlp | MoEMlp:
    """The dense :class:`Mlp` when ``moe`` is None, else an :class:`MoEMlp` of equal active size."""
    if moe is None:
        return Mlp(dim, hidden_dim, dropout)
    return MoEMlp(dim, hidden_dim, dropout, moe)

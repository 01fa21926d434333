"""The transformer MLP slot factory: the dense :class:`~brainage.model.mlp.Mlp` or the sparse
:class:`~brainage.model.moe.MoEMlp` (ERMoE, arXiv 2511.10971, and its baselines) of equal active size.

Both slots take ``(dim, hidden_dim, dropout)``; only the MoE slot takes an :class:`~brainage.model.moe.MoEConfig`.
"""

from __future__ import annotations

from brainage.model.mlp import Mlp
from brainage.model.moe import MoEConfig, MoEMlp

__all__ = ["make_mlp"]


def make_mlp(dim: int, hidden_dim: int, dropout: float = 0.0, moe: MoEConfig | None = None) -> Mlp | MoEMlp:
    """The dense :class:`Mlp` when ``moe`` is None, else an :class:`MoEMlp` of equal active size."""
    if moe is None:
        return Mlp(dim, hidden_dim, dropout)
    return MoEMlp(dim, hidden_dim, dropout, moe)

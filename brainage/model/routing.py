"""Typed return values of the MLP slots and the brain-age nets.

Routing is returned, never hidden (cf. transformers' ``output_router_logits`` and MONAI's ``save_attn``): every MoE
slot can return the per-token expert indices, gates and full router probabilities, and the ViT exposes them per block
together with the patch-token grid, which the attribution code maps back to voxels and atlas regions.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["Routing", "SlotOutput", "LayerRouting", "ModelOutput"]


class Routing(NamedTuple):
    """Routing of one MoE slot. Letters: b batch, n tokens, k chosen experts, e experts."""

    expert_index: Tensor  # (b, n, k) int64, chosen experts per token, ordered by gate descending
    gates: Tensor  # (b, n, k) float32, renormalised over the chosen k
    probs: Tensor  # (b, n, e) float32 softmax over all experts


class SlotOutput(NamedTuple):
    """What every MLP slot (dense or MoE) returns."""

    out: Tensor  # (b, n, d)
    aux_loss: Tensor  # scalar, already weighted by the slot's own config; zero when no regulariser is on
    routing: Routing | None  # None for the dense MLP or when return_routing=False


class LayerRouting(NamedTuple):
    """Routing of one MoE block of the ViT.

    Patch tokens are flattened in C order: token ``n = (i * gy + j) * gz + l`` covers the voxels
    ``[i*p:(i+1)*p, j*p:(j+1)*p, l*p:(l+1)*p]`` of the input (p = patch size). The CLS token, if any, is not included.
    """

    layer: int  # block index in the ViT
    expert_index: Tensor  # (b, n, k)
    gates: Tensor  # (b, n, k)
    probs: Tensor  # (b, n, e)
    grid: tuple[int, int, int]  # (gx, gy, gz)


class ModelOutput(NamedTuple):
    """What every brain-age net returns."""

    pred: Tensor  # (b,) regression output in the (normalised) target units of the trainer
    aux_loss: Tensor  # scalar, sum over the MoE layers
    routing: list[LayerRouting] | None  # per MoE block when return_routing=True, else None

"""SFCN brain-age baseline (Peng, Gong, Beckmann, Vedaldi, Smith: "Accurate brain age prediction with lightweight
deep neural networks", Medical Image Analysis 68:101871, 2021; architecture as in ha-ha-ha-han/UKBiobank_deep_pretrain).

Feature extractor: five blocks ``Conv3d(3, pad 1) -> BatchNorm3d -> MaxPool3d(2) -> ReLU`` and one
``Conv3d(1) -> BatchNorm3d -> ReLU`` with channels 32-64-128-256-256-64 (2.95M parameters at full size).

Our changes: the soft-label classification head (40 age bins + KL loss) is replaced by a single regression output
(``AdaptiveAvgPool3d(1) -> Dropout(0.5) -> Linear(64 (+1), 1)``) so SFCN trains with the same L1 loss as the ViTs;
the global average pool equals the published ``AvgPool3d([5, 6, 5])`` at 160x192x160 and accepts any input size that
survives the five 2x poolings. With ``use_sex`` the sex covariate (NaN -> 0.5) is concatenated before the head.
Conv weights keep PyTorch's default (Kaiming-uniform) init, as in the reference code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from brainage.model.routing import ModelOutput
from brainage.model.serialize import to_jsonable
from brainage.model.vit import sex_covariate

__all__ = ["SFCN"]


class SFCN(nn.Module):
    """Simple Fully Convolutional Network for brain age, regression head.

    Args:
        channels: output channels of the conv blocks; all but the last block are 3x3x3 conv + 2x max-pool, the last
            is a 1x1x1 conv. Default (32, 64, 128, 256, 256, 64) as published.
        in_chans: input channels.
        dropout: dropout before the head (0.5 as published).
        use_sex: concatenate the sex covariate to the pooled features.
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 128, 256, 256, 64),
        in_chans: int = 1,
        dropout: float = 0.5,
        use_sex: bool = False,
    ) -> None:
        super().__init__()
        self.init_args: dict[str, Any] = to_jsonable(
            dict(channels=channels, in_chans=in_chans, dropout=dropout, use_sex=use_sex)
        )
        if len(channels) < 2 or any(c < 1 for c in channels):
            raise ValueError(f"channels={list(channels)} must list at least 2 positive channel counts")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        layers: list[nn.Module] = []
        prev = in_chans
        for c in channels[:-1]:
            layers += [nn.Conv3d(prev, c, 3, padding=1), nn.BatchNorm3d(c), nn.MaxPool3d(2, stride=2), nn.ReLU()]
            prev = c
        layers += [nn.Conv3d(prev, channels[-1], 1), nn.BatchNorm3d(channels[-1]), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.min_size = 2 ** (len(channels) - 1)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.drop = nn.Dropout(dropout)
        self.use_sex = use_sex
        self.head = nn.Linear(channels[-1] + int(use_sex), 1)

    @classmethod
    def from_init_args(cls, init_args: dict[str, Any]) -> SFCN:
        """Rebuild from :attr:`init_args` (JSON types)."""
        kwargs = dict(init_args)
        if "channels" in kwargs:
            kwargs["channels"] = tuple(kwargs["channels"])
        return cls(**kwargs)

    def forward(self, x: Tensor, sex: Tensor | None = None, return_routing: bool = False) -> ModelOutput:
        """``x`` (b, in_chans, X, Y, Z) -> ModelOutput(pred (b,), aux_loss 0, routing None)."""
        if x.dim() != 5 or any(s < self.min_size for s in x.shape[2:]):
            raise ValueError(
                f"SFCN expects (b, c, X, Y, Z) with every spatial size >= {self.min_size}, got {tuple(x.shape)}"
            )
        feats = self.drop(self.pool(self.features(x)).flatten(1))  # (b, c, 1, 1, 1) -> (b, c)
        if self.use_sex:
            feats = torch.cat([feats, sex_covariate(sex, feats.shape[0], feats)], dim=1)  # (b, c+1)
        pred = self.head(feats).squeeze(1)  # (b, 1) -> (b,)
        return ModelOutput(pred=pred, aux_loss=pred.new_zeros((), dtype=torch.float32), routing=None)

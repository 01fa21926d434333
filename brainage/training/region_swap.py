"""RegionSwap: a batch augmentation that swaps whole atlas regions between the scans of a training batch.

Each scan of a batch is picked with probability ``prob``; a picked scan takes each atlas region (the Desikan-Killiany
atlas the report ranks, resampled onto the model grid) with probability ``region_prob`` from the scan before it in the
batch (cyclically) and keeps its own age label. Why (our choice, issue 14):

- A model that can read age from one strong regional effect has no reason to read weaker ones that carry the same
  information, so a faithful attribution cannot rank them. Dropping features at random spreads a model's weight over
  correlated evidence (Wager et al. 2013, "Dropout training as adaptive regularization"); here the features are
  regions, since regions are what the report ranks.
- The swapped voxels are real tissue of a real scan on the same (normalised) grid, so the inputs stay near the training
  distribution, unlike cutout's zero-filled boxes (DeVries & Taylor 2017). Training on such region removals also makes
  the report's region occlusion a perturbation the model has seen (counterfactual training: Hase et al. 2021, "The
  out-of-distribution problem in explainability and search methods for feature importance explanations").

The swap is meaningful where regions sit on the same voxels in every scan: the nonlinearly normalised chain
(``configs/experiment/registered.yaml``). Randomness comes from torch's global generator, which the module reseeds per
epoch, so a resumed run draws the same swaps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["RegionSwap"]


class RegionSwap:
    """Swap random atlas regions between the scans of a batch (see the module docstring).

    Args:
        prob: probability that a scan of the batch is augmented at all.
        region_prob: probability that each region of an augmented scan is taken from the scan before it in the batch.
    """

    def __init__(self, prob: float = 0.5, region_prob: float = 0.25) -> None:
        for name, value in (("prob", prob), ("region_prob", region_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"RegionSwap {name}={value} must be in [0, 1]")
        self.prob, self.region_prob = float(prob), float(region_prob)
        self.regions: torch.Tensor | None = None  # (X, Y, Z) int64: 0 = background, 1..R = atlas regions
        self.num_regions = 0

    def settings(self) -> dict:
        """The constructor arguments as plain types (recorded in the checkpoint's hyperparameters)."""
        return {"prob": self.prob, "region_prob": self.region_prob}

    def set_grid(self, shape: Sequence[int], affine: np.ndarray, atlas=None) -> None:
        """Resample ``atlas`` (None = the default Desikan-Killiany atlas) onto the model grid: ``shape`` (X, Y, Z)
        with voxel -> MNI ``affine`` (4, 4)."""
        from brainage.reference.atlas import load_default_atlas

        atlas = load_default_atlas() if atlas is None else atlas
        labels = np.asarray(atlas.resample_to(tuple(int(s) for s in shape), np.asarray(affine, dtype=np.float64)))
        ids, inverse = np.unique(labels, return_inverse=True)  # ids sorted, so label 0 (background) comes first
        rows = inverse.reshape(labels.shape) + (0 if ids[0] == 0 else 1)  # (X, Y, Z) 0 = background
        self.num_regions = int(rows.max())
        if self.num_regions == 0:
            raise ValueError(f"RegionSwap: no atlas region falls on the model grid {tuple(shape)} with affine "
                             f"{np.round(affine, 2).tolist()}; expected scans in MNI space")
        self.regions = torch.as_tensor(rows, dtype=torch.int64)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The batch (b, C, X, Y, Z) with swapped regions; unchanged when b < 2."""
        if self.regions is None:
            raise RuntimeError("RegionSwap.set_grid must be called before the first batch")
        if tuple(images.shape[2:]) != tuple(self.regions.shape):
            raise ValueError(f"RegionSwap: batch grid {tuple(images.shape[2:])} differs from the atlas grid "
                             f"{tuple(self.regions.shape)}")
        b = images.shape[0]
        if b < 2 or self.prob == 0.0 or self.region_prob == 0.0:
            return images
        picked = torch.rand(b) < self.prob  # (b,)
        taken = (torch.rand(b, self.num_regions + 1) < self.region_prob) & picked[:, None]  # (b, R + 1)
        taken[:, 0] = False  # background stays
        voxels = taken.to(images.device)[:, self.regions.to(images.device)]  # (b, X, Y, Z)
        return torch.where(voxels[:, None], images.roll(1, dims=0), images)  # scan i takes from scan i - 1

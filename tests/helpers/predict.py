"""Helpers for predict tests: a tiny random-init brainage checkpoint built by hand and small real NIfTI scans."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from brainage.data.preprocessing import Preprocessing
from brainage.model import BrainAgeViT, MoEConfig
from brainage.contracts import checkpoint as checkpoint_format

__all__ = ["GRID", "SPACING", "affine", "brain", "read_rows", "save_checkpoint", "write_scan", "write_scans"]

GRID = (16, 16, 16)  # model grid at 4 mm: 2 x 2 x 2 tokens of 8 voxels
SPACING = 4.0


def save_checkpoint(path: Path, bias_correction: dict | None = None, seed: int = 0, contract: dict | None = None,
                    embed_dim: int = 16, preprocessing: dict | None = None,
                    edit_state: Callable[[dict], None] | None = None) -> Path:
    """A Lightning-like checkpoint {"state_dict": {"net." + k: v}, "brainage": meta} of a random-init tiny ViT;
    `preprocessing` replaces the stored preprocessing entry (the contract stays that of the default chain);
    `edit_state` may change the net's state dict in place before it is saved."""
    torch.manual_seed(seed)
    net = BrainAgeViT(img_size=GRID, patch_size=8, embed_dim=embed_dim, depth=1, num_heads=2,
                      moe=MoEConfig(num_experts=4, top_k=2))
    pre = Preprocessing(spacing=SPACING, shape=GRID, augment=False)
    meta = checkpoint_format.checkpoint_metadata(net, pre.to_dict() if preprocessing is None else preprocessing,
                               pre.contract() if contract is None else contract, 50.0, 10.0,
                               {"age_mean": 50.0, "n_train": 3}, {}, bias_correction)
    state = net.state_dict()
    if edit_state is not None:
        edit_state(state)
    return checkpoint_format.save_checkpoint(path, state, meta)


def brain(shape=(20, 20, 20), seed: int = 0) -> np.ndarray:
    """An ellipsoid 'brain' with noise and zero background."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.8 - 0.2 * rng.random()
    return (inside * (100 + 10 * rng.standard_normal(shape))).astype(np.float32)


def affine(shape=(20, 20, 20), spacing: float = SPACING) -> np.ndarray:
    a = np.diag([spacing, spacing, spacing, 1.0])
    a[:3, 3] = -np.array((tuple(shape) + (1, 1))[:3]) * spacing / 2
    return a


def write_scan(path: Path, data: np.ndarray | None = None, seed: int = 0) -> Path:
    data = brain(seed=seed) if data is None else data
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine(data.shape)), path)
    return path


def write_scans(folder: Path, n: int, shape=(20, 20, 20)) -> list[Path]:
    return [write_scan(folder / f"sub-{i:04d}_T1w.nii.gz", brain(shape, seed=i)) for i in range(n)]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))

"""Report figures as PNG bytes: nilearn brain maps over the MNI152 template, and matplotlib plots.

Rendering only (style note 13): inputs are numpy arrays with their voxel->MNI affine, outputs are PNG bytes ready
to embed; no torch. nilearn (Abraham et al. 2014) draws stat maps over its bundled ICBM152 template (offline);
matplotlib runs on the non-interactive Agg backend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from nilearn import plotting  # noqa: E402
from nilearn.datasets import load_mni152_brain_mask  # noqa: E402

from brainage.reference.atlas import resample_labels  # noqa: E402

__all__ = ["png_bytes", "brain_mask", "stat_map_png", "expert_map_png", "prediction_scatter_png", "group_png"]

CUTS_MM = (-24, -8, 8, 24, 40)  # axial slices through ventricles, deep grey matter and cortex


def png_bytes(figure: plt.Figure, dpi: int = 90) -> bytes:
    """Render and close a matplotlib figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(figure)
    return buffer.getvalue()


def brain_mask(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """nilearn's bundled MNI152 2 mm brain mask on a model grid (nearest neighbour): where figures draw maps."""
    mask = load_mni152_brain_mask(resolution=2)
    return resample_labels(np.asarray(mask.dataobj) > 0, mask.affine, tuple(shape), affine)


def _image(volume: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.asarray(affine, dtype=np.float64))


def stat_map_png(
    volume: np.ndarray, affine: np.ndarray, title: str, vmax: float | None = None, cmap: str = "hot",
    threshold: float | None = None, symmetric: bool = False,
) -> bytes:
    """Axial slices of a 3D map (model grid, voxel->MNI ``affine``) over the MNI152 template."""
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D map, got shape {volume.shape}")
    vmax = float(np.nanmax(np.abs(volume))) if vmax is None else vmax
    figure = plt.figure(figsize=(9, 2.2))
    plotting.plot_stat_map(
        _image(volume, affine), display_mode="z", cut_coords=CUTS_MM, title=title, vmax=vmax or 1.0, cmap=cmap,
        threshold=threshold, symmetric_cbar=symmetric, colorbar=True, figure=figure, draw_cross=False,
        black_bg=False, annotate=True,
    )
    return png_bytes(figure)


def expert_map_png(expert: np.ndarray, affine: np.ndarray, num_experts: int, title: str) -> bytes:
    """Categorical map of the top-1 expert per voxel (X, Y, Z) ints in [0, e), -1 = not shown, one colour each."""
    expert = np.asarray(expert)
    colours = plt.get_cmap("tab10" if num_experts <= 10 else "tab20", num_experts)
    figure = plt.figure(figsize=(9, 2.2))
    display = plotting.plot_anat(  # default background: nilearn's bundled MNI152 template
        display_mode="z", cut_coords=CUTS_MM, title=title, figure=figure, draw_cross=False, annotate=True,
        black_bg=False, colorbar=False,
    )
    display.add_overlay(_image(expert + 1.0, affine), cmap=colours, vmin=0.5, vmax=num_experts + 0.5, transparency=0.55,
                        threshold=0.5, interpolation="nearest")
    handles = [matplotlib.patches.Patch(color=colours(e), label=f"expert {e}") for e in range(num_experts)]
    figure.legend(handles=handles, loc="lower center", ncol=min(num_experts, 8), fontsize=7, frameon=False,
                  bbox_to_anchor=(0.5, -0.12))
    return png_bytes(figure)


def prediction_scatter_png(age: Sequence[float], predicted: Sequence[float], title: str = "") -> bytes:
    """Predicted vs chronological age with the identity line."""
    age, predicted = np.asarray(age, dtype=float), np.asarray(predicted, dtype=float)
    figure, axis = plt.subplots(figsize=(4.2, 4.0))
    axis.scatter(age, predicted, s=14, alpha=0.7, color="#3b6ea8", edgecolor="none")
    low = float(np.nanmin([age.min(), predicted.min()])) - 2
    high = float(np.nanmax([age.max(), predicted.max()])) + 2
    axis.plot([low, high], [low, high], color="#888888", lw=1, ls="--", label="predicted = true")
    axis.set(xlim=(low, high), ylim=(low, high), xlabel="chronological age (years)", ylabel="predicted age (years)",
             title=title)
    axis.legend(loc="upper left", fontsize=8, frameon=False)
    axis.set_aspect("equal")
    return png_bytes(figure)


def group_png(bag: dict[str, Sequence[float]], share: dict[str, Sequence[float]], title: str = "") -> bytes:
    """Cohort comparison: brain-age gap per group (points and mean) and stacked expert shares per group.

    Args:
        bag: group -> brain-age gaps (years) of its scans with a known age.
        share: group -> share of atlas voxels per expert (e,), summing to 1.
    """
    groups = list(share)
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.0), gridspec_kw={"width_ratios": [1, 1.3]})
    for i, group in enumerate(groups):
        values = np.asarray(bag.get(group, []), dtype=float)
        if len(values):
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
            left.scatter(i + jitter, values, s=12, alpha=0.6, color="#3b6ea8", edgecolor="none")
            left.hlines(values.mean(), i - 0.3, i + 0.3, color="#d64519", lw=2)
    left.axhline(0, color="#888888", lw=1, ls="--")
    left.set(xticks=range(len(groups)), ylabel="brain-age gap (years)", title="BAG per group (bar: mean)")
    left.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    num_experts = len(next(iter(share.values()))) if share else 0
    colours = plt.get_cmap("tab10" if num_experts <= 10 else "tab20", max(num_experts, 1))
    bottom = np.zeros(len(groups))
    for e in range(num_experts):
        heights = np.array([share[g][e] for g in groups], dtype=float)
        right.bar(range(len(groups)), heights, bottom=bottom, color=colours(e), label=f"expert {e}")
        bottom += heights
    right.set(xticks=range(len(groups)), ylim=(0, 1), ylabel="share of atlas voxels (top-1)", title=title)
    right.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    right.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    figure.tight_layout()
    return png_bytes(figure)

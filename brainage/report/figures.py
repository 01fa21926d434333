"""Report figures as PNG bytes: nilearn brain maps over the MNI152 template, and matplotlib plots.

Rendering only (style note 13): inputs are numpy arrays with their voxel->MNI affine, outputs are PNG bytes ready
to embed; no torch. nilearn (Abraham et al. 2014) draws stat maps over its bundled ICBM152 template (offline);
matplotlib runs on the non-interactive Agg backend.

Our choices for readability (issue 14):
- Expert colours come from qualitative palettes (tab10 without its grey plus three of Kelly's contrast colours up to
  12 experts, then tab20 without greys, dark half first), the same colour for an expert in every figure.
- Expert maps are compact grids of axial slices drawn on the model grid over the template: an expert's share of scans
  sets the opacity of its colour, so voxels it never gets stay transparent (grey anatomy), never black.
- Signed maps use a diverging map that is white, not black, at zero (``RdBu_r``: red positive, blue negative).
- User strings (group values, titles) are drawn as plain text: ``$`` is escaped so matplotlib never parses mathtext.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, to_rgb  # noqa: E402
from nilearn import plotting  # noqa: E402
from nilearn.datasets import load_mni152_brain_mask, load_mni152_template  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from brainage.reference.atlas import resample_labels  # noqa: E402

__all__ = ["png_bytes", "plain", "expert_colours", "brain_mask", "template_on_grid", "stat_map_png", "expert_map_png",
           "expert_grid_png", "dominant_expert_png", "prediction_scatter_png", "group_png"]

CUTS_MM = (-24, -8, 8, 24, 40)  # axial slices through ventricles, deep grey matter and cortex
GRID_CUT_MM = 8  # the axial slice of the per-expert grid: lateral ventricles, thalamus, insula, occipital cortex


def png_bytes(figure: plt.Figure, dpi: int = 90) -> bytes:
    """Render and close a matplotlib figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(figure)
    return buffer.getvalue()


def plain(label: object) -> str:
    """A user string as plain matplotlib text: ``$`` escaped, so no mathtext is parsed (``$\\frac{1}{$`` is drawn
    as typed instead of failing)."""
    return str(label).replace("$", r"\$")


# tab10 without its grey (invisible over the grey template), then yellow, navy and maroon (Kelly's contrast set)
PALETTE = (*[c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7], "#ffe119", "#000075", "#800000")


def expert_colours(num_experts: int) -> list[tuple[float, float, float]]:
    """One distinguishable RGB colour per expert (qualitative palettes; see the module docstring)."""
    if num_experts <= len(PALETTE):
        return [to_rgb(c) for c in PALETTE[:num_experts]]
    tab20 = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]  # no greys
    if num_experts <= len(tab20):
        return [to_rgb(c) for c in (*tab20[0::2], *tab20[1::2])[:num_experts]]  # dark half first
    return [plt.get_cmap("hsv")(i / num_experts)[:3] for i in range(num_experts)]


def brain_mask(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """nilearn's bundled MNI152 2 mm brain mask on a model grid (nearest neighbour): where figures draw maps."""
    mask = load_mni152_brain_mask(resolution=2)
    return resample_labels(np.asarray(mask.dataobj) > 0, mask.affine, tuple(shape), affine)


def template_on_grid(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """nilearn's bundled MNI152 2 mm template on a model grid (trilinear), scaled to [0, 1]: figures' background."""
    template = load_mni152_template(resolution=2)
    ijk = np.indices(tuple(shape)).reshape(3, -1)  # (3, X*Y*Z) model-grid voxels
    to_template = np.linalg.inv(template.affine) @ np.asarray(affine, dtype=np.float64)  # model voxel -> template voxel
    coords = to_template[:3, :3] @ ijk + to_template[:3, 3:]
    data = np.asarray(template.dataobj, dtype=np.float32)
    values = ndi.map_coordinates(data, coords, order=1, mode="constant", cval=0.0).reshape(tuple(shape))
    return values / max(float(values.max()), 1e-6)


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
        _image(volume, affine), display_mode="z", cut_coords=CUTS_MM, title=plain(title) or None, vmax=vmax or 1.0,
        cmap=cmap, threshold=threshold, symmetric_cbar=symmetric, colorbar=True, figure=figure, draw_cross=False,
        black_bg=False, annotate=True,
    )
    return png_bytes(figure)


def expert_map_png(expert: np.ndarray, affine: np.ndarray, num_experts: int, title: str) -> bytes:
    """Categorical map of the top-1 expert per voxel (X, Y, Z) ints in [0, e), -1 = not shown, one colour each."""
    expert = np.asarray(expert)
    palette = expert_colours(num_experts)
    colours = ListedColormap(palette)
    figure = plt.figure(figsize=(9, 2.2))
    display = plotting.plot_anat(  # default background: nilearn's bundled MNI152 template
        display_mode="z", cut_coords=CUTS_MM, title=plain(title) or None, figure=figure, draw_cross=False,
        annotate=True, black_bg=False, colorbar=False,
    )
    display.add_overlay(_image(expert + 1.0, affine), cmap=colours, vmin=0.5, vmax=num_experts + 0.5, transparency=0.55,
                        threshold=0.5, interpolation="nearest")
    handles = [matplotlib.patches.Patch(color=palette[e], label=f"expert {e}") for e in range(num_experts)]
    figure.legend(handles=handles, loc="lower center", ncol=min(num_experts, 8), fontsize=7, frameon=False,
                  bbox_to_anchor=(0.5, -0.12))
    return png_bytes(figure)


def _axial(volume: np.ndarray, affine: np.ndarray, z_mm: float) -> np.ndarray:
    """The axial slice of (X, Y, Z, ...) nearest to MNI ``z_mm``, as (Y, X, ...) for ``imshow(origin="lower")``:
    subject's left on the left (neurological view), anterior at the top."""
    affine = np.asarray(affine, dtype=np.float64)
    k = int(np.clip(np.round((np.linalg.inv(affine) @ np.array([0.0, 0.0, z_mm, 1.0]))[2]), 0, volume.shape[2] - 1))
    plane = volume[:, :, k]  # (X, Y, ...)
    plane = plane[::-1] if affine[0, 0] < 0 else plane  # RAS on screen whatever the voxel order
    plane = plane[:, ::-1] if affine[1, 1] < 0 else plane
    return np.swapaxes(plane, 0, 1)  # (X, Y, ...) -> (Y, X, ...)


def _overlay(colour: Sequence[float], opacity: np.ndarray) -> np.ndarray:
    """An RGBA image (Y, X, 4) of one colour whose opacity is ``opacity`` (Y, X) in [0, 1]."""
    rgba = np.zeros((*opacity.shape, 4), dtype=np.float32)
    rgba[..., :3] = colour
    rgba[..., 3] = np.clip(opacity, 0.0, 1.0) * 0.9
    return rgba


def _panel(axis: plt.Axes, background: np.ndarray, overlay: np.ndarray | None, title: str = "") -> None:
    """Template in mid greys (never black; NaN = outside the brain, white) under an RGBA overlay."""
    grey = plt.get_cmap("gray").with_extremes(bad="white")
    axis.imshow(background, cmap=grey, vmin=-0.6, vmax=1.25, origin="lower", interpolation="nearest")
    if overlay is not None:
        axis.imshow(overlay, origin="lower", interpolation="nearest")
    axis.set(xticks=[], yticks=[])
    axis.spines[:].set_visible(False)  # not set_axis_off: the row's y label stays
    if title:
        axis.set_title(plain(title), fontsize=8, pad=2)


def _legend(figure: plt.Figure, colours: Sequence[Sequence[float]]) -> None:
    handles = [matplotlib.patches.Patch(color=c, label=f"expert {e}") for e, c in enumerate(colours)]
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(colours), 10), fontsize=7, frameon=False)


def _panels(rows: int, cols: int, size: float, plane: Sequence[int]) -> tuple[plt.Figure, np.ndarray]:
    """A rows x cols grid of image panels, each ``size`` inches wide and as tall as an axial ``plane`` (X, Y) is."""
    height = size * plane[1] / plane[0]
    figure, axes = plt.subplots(rows, cols, figsize=(size * cols + 0.4, height * rows + 0.6), squeeze=False,
                                layout="constrained")
    figure.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.0, hspace=0.0)
    return figure, axes


def expert_grid_png(
    frequency: dict[int, np.ndarray], background: np.ndarray, mask: np.ndarray, affine: np.ndarray,
    z_mm: float = GRID_CUT_MM,
) -> bytes:
    """Compact grid, one row per MoE layer and one column per expert, of the axial slice at ``z_mm``.

    Args:
        frequency: layer -> (X, Y, Z, e) share of scans whose voxel is routed (top-1) to each expert.
        background: (X, Y, Z) template in [0, 1] on the same grid; mask: (X, Y, Z) bool brain mask.
        affine: (4, 4) voxel -> MNI mm of the grid.
    """
    layers = sorted(frequency)
    num_experts = frequency[layers[0]].shape[-1]
    colours = expert_colours(num_experts)
    base = _axial(np.where(mask, background, np.nan), affine, z_mm)  # (Y, X)
    inside = _axial(mask, affine, z_mm)
    figure, axes = _panels(len(layers), num_experts, 1.15, background.shape)
    for row, layer in enumerate(layers):
        plane = _axial(frequency[layer], affine, z_mm)  # (Y, X, e)
        for e in range(num_experts):
            opacity = np.where(inside, plane[..., e], 0.0)
            _panel(axes[row, e], base, _overlay(colours[e], opacity), f"expert {e}" if row == 0 else "")
        axes[row, 0].set_ylabel(f"layer {layer}", fontsize=8)
    return png_bytes(figure)


def dominant_expert_png(
    frequency: dict[int, np.ndarray], background: np.ndarray, mask: np.ndarray, affine: np.ndarray,
    cuts_mm: Sequence[float] = CUTS_MM,
) -> bytes:
    """Per MoE layer (rows) and axial cut (columns), each voxel in the colour of its most frequent expert, opaque
    where all scans agree and fading to the grey template as they disagree (opacity = that expert's share)."""
    layers = sorted(frequency)
    colours = np.asarray(expert_colours(frequency[layers[0]].shape[-1]))  # (e, 3)
    figure, axes = _panels(len(layers), len(cuts_mm), 1.6, background.shape)
    for row, layer in enumerate(layers):
        for col, z in enumerate(cuts_mm):
            plane = _axial(frequency[layer], affine, z)  # (Y, X, e)
            inside = _axial(mask, affine, z)
            rgba = np.zeros((*plane.shape[:2], 4), dtype=np.float32)
            rgba[..., :3] = colours[plane.argmax(axis=-1)]
            rgba[..., 3] = np.where(inside, plane.max(axis=-1), 0.0) * 0.9
            _panel(axes[row, col], _axial(np.where(mask, background, np.nan), affine, z), rgba,
                   f"z = {z:+.0f} mm" if row == 0 else "")
        axes[row, 0].set_ylabel(f"layer {layer}", fontsize=8)
    _legend(figure, [tuple(c) for c in colours])
    return png_bytes(figure)


def prediction_scatter_png(age: Sequence[float], predicted: Sequence[float], title: str = "") -> bytes:
    """Predicted vs chronological age with the identity line."""
    age, predicted = np.asarray(age, dtype=float), np.asarray(predicted, dtype=float)
    figure, axis = plt.subplots(figsize=(4.2, 4.0))
    axis.scatter(age, predicted, s=14, alpha=0.7, color="#3b6ea8", edgecolor="none")
    low = float(np.nanmin([age.min(), predicted.min()])) - 2
    high = float(np.nanmax([age.max(), predicted.max()])) + 2
    axis.plot([low, high], [low, high], color="#888888", lw=1, ls="--", label="predicted = true")
    axis.set(xlim=(low, high), ylim=(low, high), xlabel="chronological age (years)", ylabel="predicted age (years)")
    axis.set_title(plain(title))
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
    left.set_xticklabels([plain(g) for g in groups], rotation=30, ha="right", fontsize=8)
    num_experts = len(next(iter(share.values()))) if share else 0
    colours = expert_colours(num_experts)
    bottom = np.zeros(len(groups))
    for e in range(num_experts):
        heights = np.array([share[g][e] for g in groups], dtype=float)
        right.bar(range(len(groups)), heights, bottom=bottom, color=colours[e], label=f"expert {e}")
        bottom += heights
    right.set(xticks=range(len(groups)), ylim=(0, 1), ylabel="share of atlas voxels (top-1)")
    right.set_title(plain(title))
    right.set_xticklabels([plain(g) for g in groups], rotation=30, ha="right", fontsize=8)
    right.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    figure.tight_layout()
    return png_bytes(figure)

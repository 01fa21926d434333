"""Region contributions to the predicted age: Captum attribution methods (Kokhlikyan et al. 2020) aggregated over
atlas regions. The only attribution module that runs the model, so it lives in the report, beside collect.

Every method answers "how many years does this region's difference from a young reference add to the predicted age?"
(signed; positive = the region makes the scan look older), per subject:

- ``occlusion``: Captum ``FeatureAblation`` (Zeiler & Fergus 2014) with the atlas regions as ``feature_mask`` and the
  reference as baseline: f(x) - f(x with the region replaced by the reference).
- ``band_occlusion``: the same with each region's band (region + boundary shell, ``brainage.attribution.masks``), so a
  boundary that an atrophy moves is occluded with the region. Also occludes the region alone, giving the
  region-itself part and the shell part (band minus region).
- ``integrated_gradients``: Captum ``IntegratedGradients`` (Sundararajan et al. 2017, Gauss-Legendre, ``n_steps``)
  from the reference to the scan, summed over each region; by completeness the voxel sums add up to f(x) - f(ref).
- ``band_integrated_gradients``: the same voxel map summed over bands (region part + shell part, exactly additive).
- ``gradient_shap``: Captum ``GradientShap`` (expected gradients, Lundberg & Lee 2017; Erion et al. 2021) with the
  individual young scans as the baseline distribution, summed over regions.
- ``shapley``: the regions' Shapley values (Shapley 1953; Strumbelj & Kononenko 2014) in the game "scan with the
  regions of a coalition, reference elsewhere": where occlusion credits every region with its whole interaction with
  the rest of the scan (one leave-one-out), Shapley values average each region's marginal effect over random
  coalitions and split shared effects, and they add up to f(x) - f(reference). Antithetic permutation sampling
  (each order and its reverse, Mitchell et al. 2022), ``permutations`` orders of r + 1 + 2q model calls each.
  Written here rather than with Captum's ``ShapleyValueSampling`` because the null sets overlap the regions (not one
  feature partition); tested against Captum's exact ``ShapleyValues``.

References (young, young_matched, young_scans, cohort): :mod:`brainage.attribution.reference`.

Size-matched nulls: the same aggregation over shifted copies of region masks (``masks.null_sets``) gives what a
voxel set of that size contributes with no region-specific effect; ``brainage.attribution.ranking`` subtracts it.

The model is reached only through ``forward(images, s)``: (m, 1, X, Y, Z) float32 copies of subject s's scan ->
(m,) predicted ages in years (``s`` lets the caller add covariates such as sex). It must be differentiable for the
gradient methods (no ``torch.inference_mode`` inside) and is never modified here; the caller loads it::

    def forward(x, s):  # (m, 1, X, Y, Z) -> (m,) years; differentiable
        return model.to_years(model.net(x, sex=sex[s].expand(len(x))).pred)

    contrib = attribute_regions(forward, images, ages, regions, index, "band_occlusion")
    table = brainage.attribution.ranking.rank_regions(contrib)  # one row per region, intervals, ranks

Letter legend: s subjects, m images per model call, r atlas regions, q null sets, (X, Y, Z) model-grid voxels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from captum.attr import FeatureAblation, GradientShap, IntegratedGradients
from scipy import sparse
from tqdm.auto import tqdm

from brainage.attribution.mapping import RegionIndex
from brainage.attribution.masks import VoxelSets, band_sets, colour_classes, null_sets, region_sets
from brainage.attribution.ranking import RegionContributions
from brainage.attribution.reference import Reference, matched_reference, subject_baselines
from brainage.report.settings import DEFAULT_METHOD, METHODS, Method

__all__ = [
    "FAMILY",
    "AblationPlan",
    "AgeForward",
    "ablation_contributions",
    "attribute_methods",
    "attribute_regions",
    "gradient_map",
    "set_contributions",
    "shapley_contributions",
]

AgeForward = Callable[[torch.Tensor, int], torch.Tensor]  # (m, 1, X, Y, Z), subject s -> (m,) years


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
        state = np.random.get_state()  # Captum draws baselines and path points from numpy's global generator
        np.random.seed(seed)
        try:
            attr = torch.zeros_like(x)
            for start in range(0, n_steps, batch_size):  # n_samples per call bounds the memory
                n = min(batch_size, n_steps - start)
                attr += GradientShap(call).attribute(x, baselines=b, n_samples=n, stdevs=0.0) * (n / n_steps)
        finally:
            np.random.set_state(state)
    else:
        raise ValueError(f"gradient method must be integrated_gradients or gradient_shap, got {method!r}")
    return attr[0, 0].detach().cpu().numpy().astype(np.float64)


def shapley_contributions(forward: AgeForward, image: np.ndarray, sets: VoxelSets, nulls: VoxelSets,
                          baseline: np.ndarray, subject: int = 0, permutations: int = 8, seed: int = 0,
                          batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Shapley values of r disjoint voxel ``sets`` (years; module docstring) and of q ``nulls`` -> (r,), (q,).

    v(S) = f(the scan on the sets in S and outside every set, ``baseline`` on the other sets). Orders come in
    antithetic pairs (``permutations`` rounded up to even); a set's value is its mean marginal effect
    v(S + i) - v(S) over the orders. A null set N (it may overlap the sets and cover voxels outside them) is valued
    at a random coalition S of every order as f(scan on S and N) - f(scan on S but not N), so it gets the same
    statistic as a region: 2 model calls per null set and order.
    """
    r, q = len(sets), len(nulls)
    if permutations < 1 or r < 1:
        raise ValueError(f"Shapley sampling needs permutations >= 1 and sets >= 1, got {permutations} and {r}")
    coo = sets.matrix.tocoo()
    if np.bincount(coo.col, minlength=int(np.prod(sets.shape))).max(initial=0) > 1:
        raise ValueError("Shapley sets must be disjoint (a partition of their voxels)")
    member = np.full(int(np.prod(sets.shape)), -1)  # (V,) set of each voxel, -1 outside every set
    member[coo.col] = coo.row
    x = torch.as_tensor(np.asarray(image, dtype=np.float32).reshape(-1))  # (V,)
    b = torch.as_tensor(np.asarray(baseline, dtype=np.float32).reshape(-1))
    null_masks = torch.as_tensor(nulls.matrix.toarray() > 0)  # (q, V)
    call = _single(forward, subject)

    def predict(use_scan: torch.Tensor) -> np.ndarray:  # (m, V) bool: voxel from the scan -> (m,) years
        out = []
        with torch.no_grad():
            for start in range(0, len(use_scan), batch_size):
                chunk = torch.where(use_scan[start:start + batch_size], x, b)  # (m, V)
                out.append(call(chunk.reshape(-1, 1, *sets.shape)).detach().cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    rng = np.random.default_rng(seed)
    pairs = [rng.permutation(r) for _ in range((permutations + 1) // 2)]
    orders = [o for order in pairs for o in (order, order[::-1])]
    values, null_values = np.zeros(r), np.zeros(q)
    steps = torch.arange(r + 1)[:, None]  # (r + 1, 1) coalition sizes
    for order in orders:
        position = np.empty(r, dtype=np.int64)
        position[order] = np.arange(r)
        joins = torch.as_tensor(np.where(member >= 0, position[member], -1))  # (V,) step a voxel joins; -1 always
        v = predict(joins[None] < steps)  # (r + 1,) v(first j sets of the order), j = 0..r
        values[order] += np.diff(v)
        if q:
            coalition = joins[None] < torch.as_tensor(rng.integers(0, r + 1, size=q))[:, None]  # (q, V) random S
            null_values += predict(coalition | null_masks) - predict(coalition & ~null_masks)
    return values / len(orders), null_values / len(orders)


FAMILY: dict[str, str] = {"occlusion": "occlusion", "band_occlusion": "occlusion",
                          "integrated_gradients": "integrated_gradients",
                          "band_integrated_gradients": "integrated_gradients", "gradient_shap": "gradient_shap",
                          "shapley": "shapley"}


@dataclass(frozen=True)
class _Geometry:
    """Voxel sets of one cohort grid: regions, bands, shells and their size-matched nulls."""

    own: VoxelSets
    own_nulls: VoxelSets
    own_source: np.ndarray
    bands: VoxelSets | None
    shells: VoxelSets | None
    band_nulls: VoxelSets | None
    band_source: np.ndarray | None


def _geometry(regions: np.ndarray, r: int, brain: np.ndarray, band: bool, band_mm: float, spacing: float,
              n_null: int, seed: int) -> _Geometry:
    own = region_sets(regions, r)
    own_nulls, own_source = null_sets(own, brain, n_null, seed)
    if not band:
        return _Geometry(own, own_nulls, own_source, None, None, None, None)
    bands, shells = band_sets(regions, r, brain, band_mm, spacing)
    band_nulls, band_source = null_sets(bands, brain, n_null, seed + 1)
    return _Geometry(own, own_nulls, own_source, bands, shells, band_nulls, band_source)


def _stack(*sets: VoxelSets) -> VoxelSets:
    return VoxelSets(sparse.vstack([v.matrix for v in sets]).tocsr(), sets[0].shape)


@dataclass
class _Family:
    """Per-subject sums of one method family: regions and their nulls, bands and theirs (s, r) / (s, q)."""

    own: np.ndarray
    own_null: np.ndarray
    band: np.ndarray | None
    band_null: np.ndarray | None
    seconds: dict[str, float]  # method -> seconds per subject
    maps: np.ndarray | None = None  # (s, X, Y, Z) voxel maps (gradient families with keep_maps)

    @classmethod
    def empty(cls, geo: _Geometry, n: int) -> _Family:
        r = len(geo.own)
        band = None if geo.bands is None else np.full((n, r), np.nan)
        band_null = None if geo.band_nulls is None else np.full((n, len(geo.band_nulls)), np.nan)
        return cls(np.full((n, r), np.nan), np.full((n, len(geo.own_nulls)), np.nan), band, band_null, {})


def _occlusion_family(forward: AgeForward, images: np.ndarray, chosen: Sequence[int], baseline: Callable,
                      geo: _Geometry, batch_size: int, step: Callable[[], None]) -> _Family:
    """Region (and band) ablations with their nulls; band occlusion's cost includes the region pass."""
    out = _Family.empty(geo, len(chosen))
    own_plan = AblationPlan.of(_stack(geo.own, geo.own_nulls))
    band_plan = AblationPlan.of(_stack(geo.bands, geo.band_nulls)) if geo.bands is not None else None
    r, spent = len(geo.own), {"own": 0.0, "band": 0.0}
    for i, s in enumerate(chosen):
        base = baseline(s)  # (X, Y, Z)
        start = time.perf_counter()
        got = ablation_contributions(forward, images[s], own_plan, base, s, batch_size)  # (r + q,)
        out.own[i], out.own_null[i] = got[:r], got[r:]
        spent["own"] += time.perf_counter() - start
        if band_plan is not None:
            start = time.perf_counter()
            got = ablation_contributions(forward, images[s], band_plan, base, s, batch_size)
            out.band[i], out.band_null[i] = got[:r], got[r:]  # type: ignore[index]
            spent["band"] += time.perf_counter() - start
        step()
    out.seconds = {"occlusion": spent["own"] / len(chosen),
                   "band_occlusion": (spent["own"] + spent["band"]) / len(chosen)}
    return out


def _shapley_family(forward: AgeForward, images: np.ndarray, chosen: Sequence[int], baseline: Callable,
                    geo: _Geometry, permutations: int, batch_size: int, seed: int, step: Callable[[], None]) -> _Family:
    """Regions' and null sets' Shapley values per scan."""
    out = _Family.empty(geo, len(chosen))
    start = time.perf_counter()
    for i, s in enumerate(chosen):
        out.own[i], out.own_null[i] = shapley_contributions(forward, images[s], geo.own, geo.own_nulls, baseline(s), s,
                                                            permutations, seed + s, batch_size)
        step()
    out.seconds = {"shapley": (time.perf_counter() - start) / len(chosen)}
    return out


def _gradient_family(forward: AgeForward, family: str, images: np.ndarray, chosen: Sequence[int],
                     baseline: Callable, young: np.ndarray, reference: Reference, geo: _Geometry, n_steps: int,
                     batch_size: int, seed: int, keep_maps: bool, step: Callable[[], None]) -> _Family:
    """One voxel map per scan (integrated gradients or gradient SHAP), summed over regions, bands and nulls."""
    out = _Family.empty(geo, len(chosen))
    out.maps = np.zeros((len(chosen), *images.shape[1:]), dtype=np.float32) if keep_maps else None
    start = time.perf_counter()
    for i, s in enumerate(chosen):
        if family == "gradient_shap":  # (y, X, Y, Z) the young scans as baselines
            b = np.stack([matched_reference(images[y], images[s]) if reference == "young_matched" else images[y]
                          for y in young])
        else:
            b = baseline(s)  # (X, Y, Z)
        voxel = gradient_map(forward, images[s], b, s, family, n_steps, batch_size, seed + s)  # type: ignore[arg-type]
        out.own[i], out.own_null[i] = geo.own.sums(voxel), geo.own_nulls.sums(voxel)
        if out.maps is not None:
            out.maps[i] = voxel
        if out.band is not None and family == "integrated_gradients":
            out.band[i], out.band_null[i] = geo.bands.sums(voxel), geo.band_nulls.sums(voxel)  # type: ignore
        step()
    seconds = (time.perf_counter() - start) / len(chosen)
    out.seconds = {family: seconds, **({"band_integrated_gradients": seconds}  # the same maps, summed over bands
                                       if family == "integrated_gradients" else {})}
    return out


def _result(method: str, family: _Family, geo: _Geometry, index: RegionIndex, described: str, band_mm: float
            ) -> RegionContributions:
    band = method.startswith("band_")
    values = (family.band if band else family.own).copy()  # type: ignore[union-attr]
    own = family.own.copy()
    absent = geo.own.sizes == 0
    values[:, absent] = own[:, absent] = np.nan
    nulls, null_sets_, source, sizes = ((family.band_null, geo.band_nulls, geo.band_source, geo.bands.sizes) if band
                                        else (family.own_null, geo.own_nulls, geo.own_source, geo.own.sizes))
    return RegionContributions(method, index, values, own, values - own, sizes.astype(float),  # type: ignore
                               geo.own.sizes.astype(float), nulls.copy(), null_sets_.sizes.astype(float),  # type: ignore
                               source, described, family.seconds[method], band_mm if band else None, family.maps)


def attribute_methods(
    forward: AgeForward,
    images: np.ndarray,
    ages: Sequence[float | None],
    regions: np.ndarray,
    index: RegionIndex,
    methods: Sequence[Method] = (DEFAULT_METHOD,),
    *,
    reference: Reference = "young_matched",
    spacing: float = 3.0,
    band_mm: float = 6.0,
    n_null: int = 24,
    n_steps: int = 32,
    permutations: int = 8,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
    keep_maps: bool = False,
    subjects: Sequence[int] | None = None,
    on_subject: Callable[[], None] = lambda: None,
) -> dict[str, RegionContributions]:
    """Contribution of every atlas region to each scan's predicted age by each of ``methods`` (module docstring).

    Methods of one family share their model calls: region and band occlusion one region ablation pass (the band
    method reports the region alone as ``own``), integrated gradients and its band variant one voxel map per scan.
    ``seconds_per_subject`` is what each method costs alone (band occlusion: bands + regions).

    Args:
        forward: ``forward(images (m, 1, X, Y, Z), s) -> (m,)`` predicted ages in years of subject s.
        images: (s, X, Y, Z) preprocessed scans on the model grid (background 0).
        ages: chronological ages of the scans (the young reference needs at least 3 known).
        regions: (X, Y, Z) region row per voxel (``index.columns`` of the resampled atlas), -1 = none.
        index: the region rows.
        methods: any of ``METHODS``.
        reference: see :mod:`brainage.attribution.reference`.
        spacing: model-grid voxel size in mm (band width conversion).
        band_mm: band width of the band methods.
        n_null: null sets per subject and set shape (occlusion: extra model calls; gradient methods: free).
        n_steps: integration steps (integrated gradients) or samples (gradient SHAP).
        permutations: sampled orders of the Shapley values (antithetic pairs; each r + 1 + 2 n_null model calls).
        batch_size: images per model call.
        seed: seed of the null placement and of gradient SHAP's and Shapley's sampling.
        progress: a tqdm bar per family.
        keep_maps: keep the voxel maps of the gradient methods (``RegionContributions.maps``; s x grid float32).
        subjects: attribute only these scans (rows of the results, in this order); the reference and the brain mask
            still come from all ``images``. Default: all.
        on_subject: called after each scan of each family (the report's progress line).
    """
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"attribution methods must be among {list(METHODS)}, got {list(methods)}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != np.asarray(regions).shape:
        raise ValueError(f"images {images.shape} must be (subjects, X, Y, Z) on the region grid {np.shape(regions)}")
    chosen = list(range(len(images))) if subjects is None else [int(i) for i in subjects]
    if not chosen or min(chosen) < 0 or max(chosen) >= len(images):
        raise ValueError(f"subjects must index the {len(images)} images, got {subjects}")
    baseline, young, described = subject_baselines(images, ages, reference)
    if "gradient_shap" in methods and len(young) == 0:
        raise ValueError("gradient_shap needs at least 3 scans with a known age (the young scans are its baselines)")
    brain = np.any(images != 0, axis=0)  # (X, Y, Z)
    geo = _geometry(regions, len(index), brain, any(m.startswith("band_") for m in methods), band_mm, spacing,
                    n_null, seed)
    out: dict[str, RegionContributions] = {}
    for family in sorted({FAMILY[m] for m in methods}):
        bar = tqdm(total=len(chosen), desc=family, unit="subject", disable=None if progress else True)

        def step(bar: tqdm = bar) -> None:
            bar.update()
            on_subject()

        if family == "occlusion":
            sums = _occlusion_family(forward, images, chosen, baseline, geo, batch_size, step)
        elif family == "shapley":
            sums = _shapley_family(forward, images, chosen, baseline, geo, permutations, batch_size, seed, step)
        else:
            sums = _gradient_family(forward, family, images, chosen, baseline, young, reference, geo, n_steps,
                                    batch_size, seed, keep_maps, step)
        bar.close()
        out |= {m: _result(m, sums, geo, index, described, band_mm) for m in methods if FAMILY[m] == family}
    return {m: out[m] for m in methods}


def attribute_regions(
    forward: AgeForward,
    images: np.ndarray,
    ages: Sequence[float | None],
    regions: np.ndarray,
    index: RegionIndex,
    method: Method = DEFAULT_METHOD,
    **options: object,
) -> RegionContributions:
    """One method of :func:`attribute_methods` (same keyword options): the report's entry point."""
    if method not in METHODS:
        raise ValueError(f"attribution method must be one of {list(METHODS)}, got {method!r}")
    return attribute_methods(forward, images, ages, regions, index, (method,), **options)[method]  # type: ignore


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

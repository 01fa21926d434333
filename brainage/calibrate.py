"""`brainage calibrate`: refit a model's age-bias correction on the user's own healthy controls.

The linear correction of de Lange & Cole 2020 (NeuroImage Clin 26:102229): fit `pred = slope*age + intercept` on
the controls' predictions, then `corrected = (pred - intercept)/slope`. A correction fitted on the training cohort's
validation split does not transfer to another scanner or population; refit it on controls from the same site.
Never fit it on the subjects whose results you report.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from brainage.contracts.bias import fit_bias_correction
from brainage.contracts.card import write_card_json
from brainage.contracts.checkpoint import update_card
from brainage.data.inputs import read_inputs, skipped_lines
from brainage.predict import load_model, predict_iter
from brainage.predict.model import resolve_model_path

__all__ = ["calibrate", "main"]

log = logging.getLogger(__name__)

EPILOG = """examples:
  brainage calibrate --model demo-output/train/checkpoints/best.ckpt --input controls/ --output calibrated.ckpt
  brainage calibrate --model best.ckpt --input controls.csv --output calibrated.ckpt     # CSV: path, age[, sex, site]
  brainage calibrate --model models:/brainage/1 --input bids_controls/ --output calibrated.ckpt
  brainage calibrate --model runs:/<run_id> --input ixi/ --output calibrated.ckpt

--input takes anything `brainage predict` reads (folder, BIDS dataset with participants.tsv, IXI folder, CSV/TSV
manifest); every scan needs a known age. The new checkpoint holds the same weights with the refitted correction
(card: bias_correction.fit_on = "user controls: <input>, n=N"), and its card is written next to it (.card.json).
Use it with `brainage predict --model calibrated.ckpt`. Research use only, not for diagnosis.
"""


def calibrate(model: str, inputs: list[str], output: str | Path, batch_size: int = 4,
              num_workers: int | None = None, progress: bool = False, min_slope: float = 0.05,
              include_failed: bool = False) -> dict:
    """Predict the controls in `inputs`, fit the correction, write `output` (.ckpt) and its card; return the fit."""
    source = resolve_model_path(model)  # .ckpt path, or downloaded from an MLflow runs:/ or models:/ URI
    loaded = load_model(source)
    table = read_inputs(inputs, include_failed=include_failed)
    for line in skipped_lines(table.attrs.get("dropped", [])):
        print(line, file=sys.stderr)
    known = table[table["age"].notna()]
    if known.empty:
        raise ValueError(f"{inputs}: found {len(table)} scans but none with a known age; calibration needs the "
                         f"controls' chronological ages (participants.tsv, IXI sheet or an 'age' column)")
    ages, predicted = [], []
    for result in predict_iter(loaded, known, batch_size=batch_size, num_workers=num_workers, progress=progress):
        if result.error:
            log.warning("skipped %s", result.error)
            continue
        ages.append(float(result.row["age"]))
        predicted.append(result.predicted_age)
    correction = fit_bias_correction(np.array(ages), np.array(predicted),
                                     fit_on=f"user controls: {', '.join(map(str, inputs))}, n={len(ages)}",
                                     min_slope=min_slope)
    card = update_card(source, output, bias_correction=correction, bias_correction_note=None)
    write_card_json(card, Path(output).with_suffix(".card.json"))
    return correction


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainage calibrate", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="brainage .ckpt, or an MLflow runs:/ or models:/ URI")
    parser.add_argument("--input", required=True, nargs="+", help="healthy controls with known ages")
    parser.add_argument("--output", required=True, type=Path, help="the calibrated checkpoint to write (.ckpt)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: min(4, CPUs))")
    parser.add_argument("--min-slope", type=float, default=0.05,
                        help="refuse a fit whose slope is at or below this (default 0.05)")
    parser.add_argument("--include-failed", action="store_true",
                        help="also use scans that `brainage prepare` flagged in its manifest (qc_status=fail)")
    parser.add_argument("--verbose", action="store_true", help="log skipped scans and progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.output.suffix != ".ckpt":
        print(f"brainage calibrate: --output {args.output} must end in .ckpt", file=sys.stderr)
        return 2
    try:
        fit = calibrate(args.model, args.input, args.output, args.batch_size, args.workers,
                        progress=sys.stderr.isatty() or args.verbose, min_slope=args.min_slope,
                        include_failed=args.include_failed)
    except (ValueError, FileNotFoundError) as err:
        print(f"brainage calibrate: {err}", file=sys.stderr)
        return 2
    print(f"bias correction: pred = {fit['slope']:.3f} * age + {fit['intercept']:.2f} "
          f"({fit['n']} controls, ages {fit['age_min']:.0f}-{fit['age_max']:.0f})")
    print(f"calibrated model: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`brainage predict`: batch brain-age prediction over NIfTI files into one CSV that never loses a row.

Exit codes: 0 = every row ok; 1 = at least one row has status=error (all rows are still written); 2 = usage error,
no inputs, the model cannot be loaded, or the output cannot be written (a folder, an unwritable or full disk, another
predict writing it): one line on stderr, checked before the work starts where it can be (the output lock doubles as a
write probe); a disk that fills up during the run also ends with exit 2, the rows done so far kept in the journal.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import torch

from brainage.data.inputs import read_inputs, skipped_lines
from brainage.data.transforms import DEFAULT_MAX_VOXELS
from brainage.predict.model import LoadedModel, ModelLoadError, load_model
from brainage.predict.output import (
    OUTPUT_COLUMNS,
    Journal,
    OutputError,
    OutputLock,
    assemble,
    journal_files,
    journal_path,
    read_journals,
    record,
    remove_journals,
    row_key,
    summarise,
    write_csv_atomic,
)
from brainage.predict.stream import default_threads, default_workers, predict_iter

__all__ = ["build_parser", "failure_lines", "main", "run_settings"]

log = logging.getLogger("brainage.predict")

EPILOG = """examples:  (paths `make demo` writes; use your own scans, manifests and checkpoints instead)
  brainage predict --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv \\
                   --output demo-output/predictions.csv                 # CSV/TSV manifest: path, age[, sex, site]
  brainage predict --model demo-output/train/checkpoints/best.ckpt --input demo-output/cohort --output all.csv
  brainage predict --model demo-output/train/checkpoints/best.ckpt \\
                   --input 'demo-output/cohort/sub-*/anat/*_T1w.nii.gz' --output out.csv         # a quoted glob
  brainage predict --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv \\
                   --output out.csv --tta --save-routing routing                  # routing maps for `brainage report`
  brainage predict --model runs:/$(cat demo-output/train/mlflow_run_id.txt) --input demo-output/train/test.csv \\
                   --output out.csv                                       # best.ckpt of the demo's MLflow run
  brainage predict --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv \\
                   --output out.csv --devices 2 --accelerator cpu         # DDP, one process per device (gpu: GPUs)

models: a .ckpt written by `brainage fit`, runs:/<run_id>[/artifact path] or models:/<name>/<version> (MLflow store
from --tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db). Loaded weights-only and checked
(brainage.contracts.checkpoint): anything that is not a brainage checkpoint, or holds non-finite weights, is refused,
and the card's input contract must match its preprocessing.

output columns (one row per input, in input order: the order of --input; the files of a folder, dataset or glob
sorted by subject id, session and path; a manifest's rows in file order):
  subject_id, session, path; age (when known); predicted_age; corrected_age (the model's age-bias correction,
  = predicted_age when the model has none); brain_age_gap = predicted_age - age; corrected_gap = corrected_age - age;
  uncertainty (std over flip TTA, with --tta); status (ok | error); error (the reason).

interrupted runs: finished batches are journaled in OUTPUT.partial (fsynced). Rerun the same command to skip the
files already done; the CSV is written atomically at the end and is the same as an uninterrupted run's.

bad files: a missing, corrupt, truncated, non-3D, NaN or constant scan, one whose header claims more than
--max-voxels voxels (checked before decoding), one whose decode worker dies (e.g. killed when memory runs out), a
file name that is not UTF-8, or a prediction that is NaN/inf: each is a row with status=error and the reason.

exit codes: 0 all rows ok; 1 some rows failed (they are still written, with status=error); 2 usage error, no inputs,
unusable model, or an output that cannot be written (a folder, unwritable or full disk, another predict on it).
Research use only, not for diagnosis.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainage predict", description="Predict brain age for T1w NIfTI scans.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", required=True,
                        help="brainage .ckpt, runs:/<run_id>[/path] or models:/<name>/<version>")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store for runs:/ and models:/ "
                             "(default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--input", required=True, nargs="+",
                        help="folder, BIDS dataset, CSV/TSV manifest, file or glob")
    parser.add_argument("--output", required=True, type=Path, help="predictions CSV to write (atomically)")
    parser.add_argument("--tta", action="store_true",
                        help="flip test-time augmentation: mean of the scan and its left-right mirror; "
                             "uncertainty = their std")
    parser.add_argument("--save-routing", type=Path, default=None, metavar="DIR",
                        help="save per-scan MoE routing maps (.npz) here, for `brainage report`")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="single-process device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None,
                        help="decode worker processes per device (default: min(4, CPUs - 1), at least 1; 0 = none)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the predicting process (default: $OMP_NUM_THREADS if set, else all "
                             "CPUs; decode workers take under 10 %% of the time with the 1.5 mm model, see "
                             "benchmarks/predict.py)")
    parser.add_argument("--devices", default="1",
                        help="Lightning devices; more than 1 (or --num-nodes > 1) runs DDP with one process each")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator for DDP (cpu, gpu, auto)")
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes for DDP (run the command on every node)")
    parser.add_argument("--max-voxels", type=int, default=DEFAULT_MAX_VOXELS,
                        help="refuse (as an error row, before decoding) a file whose header claims more voxels "
                             f"(default 512^3 = {DEFAULT_MAX_VOXELS:,}, 26x a 1 mm head: 0.5 GB as float32)")
    parser.add_argument("--include-failed", action="store_true",
                        help="also predict scans that `brainage prepare` flagged in its manifest (qc_status=fail)")
    parser.add_argument("--verbose", action="store_true",
                        help="progress bar also when stderr is not a terminal, and every failed file as it happens")
    return parser


def _devices(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def run_settings(args: argparse.Namespace, model: LoadedModel) -> dict:
    """What makes journal rows reusable: the same model (spec and creation time) and the same row-changing options."""
    return {"model": str(args.model), "model_created": model.card.get("created"), "tta": args.tta,
            "save_routing": None if args.save_routing is None else str(args.save_routing)}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.batch_size, args.num_nodes, args.threads or 1, args.max_voxels) < 1 or (
            args.workers is not None and args.workers < 0):
        parser.error(f"--batch-size ({args.batch_size}), --num-nodes ({args.num_nodes}), --threads ({args.threads}) "
                     f"and --max-voxels ({args.max_voxels}) must be >= 1 and --workers ({args.workers}) >= 0")
    workers = default_workers() if args.workers is None else args.workers
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or default_threads())  # decode workers run one thread each, mostly idle
    try:
        return _run(args, workers)
    finally:
        torch.set_num_threads(threads)


def _rank_zero_process() -> bool:
    """Whether this process is (or launches) global rank 0: the launchers' rank variables are unset or 0."""
    return all(os.environ.get(name, "0") == "0"
               for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"))


def _run(args: argparse.Namespace, workers: int) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    distributed = _devices(args.devices) != 1 or args.num_nodes > 1
    try:
        with OutputLock(args.output) if _rank_zero_process() else contextlib.nullcontext():
            return _predict(args, workers, distributed)
    except OutputError as err:
        print(f"brainage predict: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # past reading the inputs only writes raise: the journal, the CSV or the routing maps
        journals = ", ".join(str(p) for p in journal_files(args.output)) or "none yet"
        print(f"brainage predict: cannot write {err.filename or args.output} ({err.strerror or err}); the rows "
              f"finished so far are kept (journal: {journals}): free space and rerun the same command to resume",
              file=sys.stderr)
        return 2


def _predict(args: argparse.Namespace, workers: int, distributed: bool) -> int:
    progress = sys.stderr.isatty() or args.verbose
    try:
        model = load_model(args.model, "cpu" if distributed else args.device, args.tracking_uri)
        table = read_inputs(args.input, include_failed=args.include_failed)
    except (ModelLoadError, ValueError, OSError) as err:  # OSError: an input folder or manifest cannot be read
        print(f"brainage predict: {err}", file=sys.stderr)
        return 2
    model.max_voxels = args.max_voxels
    for line in skipped_lines(table.attrs.get("dropped", [])):
        print(line, file=sys.stderr)
    if table.empty:
        print(f"brainage predict: no usable NIfTI files found in {args.input}", file=sys.stderr)
        return 2
    settings = run_settings(args, model)
    keys = [row_key(row) for row in table.to_dict("records")]
    start = time.perf_counter()
    if distributed:
        from brainage.predict.distributed import predict_distributed  # Lightning only when scaling out

        if not predict_distributed(model, table, args.output, settings, accelerator=args.accelerator,
                                   devices=_devices(args.devices), num_nodes=args.num_nodes,
                                   batch_size=args.batch_size, num_workers=workers, tta=args.tta,
                                   routing_dir=args.save_routing, progress=progress):
            return 0  # ranks > 0: rank 0 merges and reports
    else:
        done = read_journals(args.output, settings)
        todo = [i for i, key in enumerate(keys) if key not in done]
        if done:
            log.warning("resuming: %d of %d inputs already done (journal %s)", len(keys) - len(todo), len(keys),
                        journal_path(args.output))
        results = predict_iter(model, table, return_routing=args.save_routing is not None,
                               batch_size=args.batch_size, num_workers=workers, progress=progress, tta=args.tta,
                               indices=todo)
        with Journal(journal_path(args.output), settings) as journal, contextlib.closing(results):
            batch = []
            for result in results:
                batch.append(result)
                if result.error:
                    log.info("error: %s", result.error)
                if len(batch) == args.batch_size:
                    record(journal, batch, args.save_routing, model.preprocessing.shape)
                    batch = []
            record(journal, batch, args.save_routing, model.preprocessing.shape)
    rows = assemble(keys, read_journals(args.output, settings))
    write_csv_atomic(rows, args.output, OUTPUT_COLUMNS)
    remove_journals(args.output)
    elapsed = time.perf_counter() - start
    for line in summarise(rows, model.card):
        print(line)
    if not args.verbose:  # --verbose logged each failure as it happened
        for line in failure_lines(rows):
            print(line, file=sys.stderr)
    print(f"predictions: {args.output} ({len(rows)} rows, {elapsed:.1f} s)")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def failure_lines(rows: list[dict], limit: int = 10) -> list[str]:
    """Why rows failed, one line each (the first `limit`; the rest are in the CSV's error column)."""
    failed = [r for r in rows if r["status"] != "ok"]
    lines = [f"failed: {r['path']}: {r['error']}" for r in failed[:limit]]
    if len(failed) > limit:
        lines.append(f"... and {len(failed) - limit} more failed (the 'error' column of the output CSV says why)")
    return lines

"""``brainage prepare``: raw T1 NIfTI -> N4 -> skull strip -> affine to ICBM152 2009a -> MNI grid, with QC.

Offline and pip-installable (``pip install brainage[prepare]``: SimpleITK, deepbet); no FSL, FreeSurfer or MATLAB.
Steps in :mod:`brainage.prepare.steps`, QC in :mod:`brainage.prepare.qc`, the manifest in
:mod:`brainage.data.manifest`. Subjects run in worker processes (one ITK / torch thread each, so the output does not
depend on ``--workers``); each subject's image, QC PNG and record are written to temporary files and moved into place
(``os.replace``), the record last, so an interrupted run resumes by skipping subjects whose record and image exist.

Research use only, not for diagnosis.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from brainage.contracts.atomic import write_bytes_atomic
from brainage.data.inputs import read_inputs
from brainage.data.manifest import MANIFEST_COLUMNS, SkullStrip
from brainage.reference.templates import icbm152_on_grid

__all__ = ["PrepareSettings", "main", "output_key", "prepare_dataset", "prepare_subject"]

log = logging.getLogger(__name__)
_THREADS_PER_WORKER = 1  # ITK and torch threads per worker: fixed, so results are bit-identical run to run


@dataclass(frozen=True)
class PrepareSettings:
    """What determines a prepared volume; a stored record with other settings is recomputed on resume."""

    spacing: float = 1.0
    skull_strip: SkullStrip = "deepbet"
    qc_ncc: float = 0.7
    qc_coverage: float = 0.9

    def __post_init__(self) -> None:
        if not 0.5 <= float(self.spacing) <= 4.0:
            raise ValueError(f"spacing must be between 0.5 and 4 mm, got {self.spacing!r}")
        if self.skull_strip not in ("deepbet", "template"):
            raise ValueError(f"skull strip {self.skull_strip!r} is not one of ('deepbet', 'template')")


def output_key(subject_id: str, session: str = "") -> str:
    """File-name stem ``<subject>[_<session>]`` with characters other than ``A-Za-z0-9._-`` replaced by ``_``."""
    key = f"{subject_id}_{session}" if session else str(subject_id)
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")
    if not key:
        raise ValueError(f"subject id {subject_id!r} / session {session!r} give an empty file name")
    return key


def _paths(out: Path, key: str) -> dict[str, Path]:
    return {"image": out / f"{key}_T1w.nii.gz", "png": out / "qc" / f"{key}_qc.png",
            "record": out / "qc" / f"{key}.json"}


def _clean(value: object) -> object:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def prepare_subject(row: dict, out: Path | str, settings: PrepareSettings) -> dict:
    """Prepare one input row (``subject_id, session, path, age, sex, site``); return its manifest row.

    Never raises for a bad scan: exceptions become ``qc_status="fail"`` with the error as ``qc_reason``.
    """
    import nibabel as nib

    from brainage.prepare import qc, register, steps

    out = Path(out)
    register.set_threads(_THREADS_PER_WORKER)
    key = output_key(str(row["subject_id"]), str(row.get("session") or ""))
    paths = _paths(out, key)
    paths["png"].parent.mkdir(parents=True, exist_ok=True)
    record = {c: _clean(row.get(c)) for c in ("subject_id", "session", "age", "sex", "site")}
    record |= {"path": paths["image"].name, "source_path": str(row["path"]), "key": key, "spacing": settings.spacing,
               "skull_strip": settings.skull_strip, "settings": asdict(settings)}
    try:
        img = nib.load(str(row["path"]))
        result = steps.prepare_image(img.get_fdata(dtype=np.float32), img.affine, settings.spacing,
                                     settings.skull_strip)
        check = qc.assess(result.data, settings.spacing, settings.qc_ncc, settings.qc_coverage)
        record |= {"qc_ncc": check.ncc, "qc_coverage": check.coverage, "qc_status": check.status,
                   "qc_reason": check.reason, "mni_to_world": result.mni_to_world.round(6).tolist()}
        grid = icbm152_on_grid(settings.spacing)[1]
        out_img = nib.Nifti1Image(result.data, grid)
        out_img.set_sform(grid, code=4)  # 4 = MNI_152
        out_img.set_qform(grid, code=4)
        out_img.header["descrip"] = b"brainage prepare (research only)"
        write_bytes_atomic(paths["image"], gzip.compress(out_img.to_bytes(), 6, mtime=0))  # mtime 0: same bytes every run
        title = f"{key}  NCC {check.ncc:.3f}  coverage {check.coverage:.1%}  {check.status}"
        write_bytes_atomic(paths["png"], qc.qc_png(result.data, settings.spacing, title))
    except Exception as err:  # noqa: BLE001 - one bad scan must not stop the cohort; the reason goes to the manifest
        log.warning("%s: %s: %s", row["path"], type(err).__name__, err)
        record |= {"qc_ncc": None, "qc_coverage": None, "qc_status": "fail",
                   "qc_reason": f"error: {type(err).__name__}: {err}"}
        for stale in (paths["image"], paths["png"]):  # from an earlier run: they must not pass for this one
            stale.unlink(missing_ok=True)
    write_bytes_atomic(paths["record"], (json.dumps(record, indent=1) + "\n").encode())
    return record


def _finished(row: dict, out: Path, settings: PrepareSettings) -> dict | None:
    """The stored record of ``row`` when it and the image exist with the same settings and source (else None).

    Scans that raised an error have no image, so they are retried."""
    paths = _paths(out, output_key(str(row["subject_id"]), str(row.get("session") or "")))
    if not paths["record"].is_file():
        return None
    try:
        record = json.loads(paths["record"].read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = record.get("settings") == asdict(settings) and record.get("source_path") == str(row["path"])
    return record if same and paths["image"].is_file() else None


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = str(_THREADS_PER_WORKER)


def _run(job: tuple[dict, str, PrepareSettings]) -> dict:
    return prepare_subject(*job)


def prepare_dataset(inputs: list[str] | str, out: Path | str, settings: PrepareSettings, workers: int = 1,
                    progress: bool = True) -> pd.DataFrame:
    """Prepare every scan that :func:`read_inputs` finds in ``inputs``; write the manifest and the QC overview.

    Returns the manifest (:data:`MANIFEST_COLUMNS`). Subjects already finished with the same settings are skipped.
    """
    from brainage.prepare import qc

    out = Path(out)
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    missing = [i for i in items if not re.search(r"[*?\[]", i) and not Path(i).exists()]
    if missing:
        raise FileNotFoundError(f"input {missing[0]} does not exist (expected a folder, BIDS dataset, CSV or "
                                "NIfTI file)")
    table = read_inputs(items)
    if table.empty:
        raise FileNotFoundError(f"no T1 images found in {inputs!r} (expected a folder, BIDS dataset, CSV or files)")
    rows = table.to_dict("records")
    keys: dict[str, str] = {}
    for row in rows:
        key = output_key(str(row["subject_id"]), str(row["session"] or ""))
        if key in keys:
            raise ValueError(f"two scans map to the output name {key!r}: {keys[key]} and {row['path']}; give them "
                             "distinct subject ids or sessions (e.g. with a CSV manifest)")
        keys[key] = str(row["path"])
    out.mkdir(parents=True, exist_ok=True)
    records = {i: _finished(row, out, settings) for i, row in enumerate(rows)}
    todo = [i for i, record in records.items() if record is None]
    log.info("%d scans, %d already prepared, %d to do", len(rows), len(rows) - len(todo), len(todo))
    jobs = [(rows[i], str(out), settings) for i in todo]
    bar = dict(total=len(jobs), desc="prepare", unit="scan", disable=None if progress else True)
    if workers <= 1 or len(jobs) <= 1:
        results = list(tqdm(map(_run, jobs), **bar))
    else:
        # spawn: workers start clean (no inherited torch / OpenMP thread pools); each uses one thread.
        with ProcessPoolExecutor(min(workers, len(jobs)), get_context("spawn"), _worker_init) as pool:
            results = list(tqdm(pool.map(_run, jobs), **bar))
    records.update(zip(todo, results))
    ordered = [records[i] for i in range(len(rows))]
    manifest = pd.DataFrame(ordered).reindex(columns=MANIFEST_COLUMNS)
    write_bytes_atomic(out / "manifest.csv", manifest.to_csv(index=False).encode())
    pngs = {r["key"]: png.read_bytes() for r in ordered if (png := _paths(out, r["key"])["png"]).is_file()}
    write_bytes_atomic(out / "qc.html", qc.qc_html(ordered, pngs).encode())
    return manifest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainage prepare",
        description="Raw T1 NIfTI -> model-ready volume, offline: N4 bias correction, skull stripping (deepbet), "
        "affine registration to the ICBM152 2009a template that nilearn ships, resampling to the MNI grid. Writes "
        "PREPARED/<subject>[_<session>]_T1w.nii.gz, a QC PNG per scan (PREPARED/qc/), PREPARED/qc.html and "
        "PREPARED/manifest.csv, which fit and predict read (predict skips QC failures). Needs the 'prepare' extra: "
        "pip install 'brainage[prepare]'. Research use only, not for diagnosis.",
        epilog="examples:  (paths `make demo` writes; use your raw BIDS folder, scans or manifest instead)\n"
        "  brainage prepare --input demo-output/train/test.csv --out prepared --workers 2\n"
        "  brainage prepare --input demo-output/train/test.csv --out prepared-2mm --spacing 2 --skull-strip template \\\n"
        "                   --verbose\n"
        "  brainage predict --model demo-output/train/checkpoints/best.ckpt --input prepared/manifest.csv \\\n"
        "                   --output prepared-predictions.csv\n\n"
        "Re-running the same command resumes: finished scans are skipped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, nargs="+",
                        help="folder, BIDS dataset, CSV/TSV manifest, files or glob")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; resumable)")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--spacing", type=float, default=1.0,
                        help="output voxel size in mm on the MNI grid (default 1)")
    parser.add_argument("--skull-strip", choices=("deepbet", "template"), default="deepbet",
                        help="deepbet (default, CNN) or template (ICBM152 brain mask mapped back after registration)")
    parser.add_argument("--qc-ncc", type=float, default=PrepareSettings.qc_ncc,
                        help=f"flag scans whose template correlation is below this (default {PrepareSettings.qc_ncc})")
    parser.add_argument("--qc-coverage", type=float, default=PrepareSettings.qc_coverage,
                        help="flag scans covering less than this fraction of the template brain "
                        f"(default {PrepareSettings.qc_coverage})")
    parser.add_argument("--verbose", "-v", action="store_true", help="log progress details and per-scan errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``brainage prepare`` entry point; returns the exit code (0 also when some scans were flagged)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        print("brainage prepare: error: SimpleITK is not installed; install the extra: pip install 'brainage[prepare]'",
              file=sys.stderr)
        return 2
    if args.skull_strip == "deepbet":
        from brainage.prepare.steps import deepbet_available

        if not deepbet_available():
            print("brainage prepare: error: deepbet is not installed (pip install 'brainage[prepare]'); or use "
                  "--skull-strip template", file=sys.stderr)
            return 2
    if args.workers < 1:
        print(f"brainage prepare: error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        settings = PrepareSettings(args.spacing, args.skull_strip, args.qc_ncc, args.qc_coverage)
        manifest = prepare_dataset(args.input, args.out, settings, workers=args.workers)
    except (ValueError, FileNotFoundError) as err:
        print(f"brainage prepare: error: {err}", file=sys.stderr)
        return 2
    failed = manifest[manifest["qc_status"] != "ok"]
    for row in failed.itertuples():
        print(f"flagged: {row.subject_id} {row.session or ''}: {row.qc_reason}", file=sys.stderr)
    print(f"prepared {len(manifest) - len(failed)} of {len(manifest)} scans ({len(failed)} flagged) -> "
          f"{args.out / 'manifest.csv'}, {args.out / 'qc.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

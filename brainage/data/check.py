"""`brainage data check DATASET`: what a dataset holds and what would be dropped, before any training run.

Reads DATASET with the same readers as training and prediction (`brainage.data.inputs.read_inputs`: BIDS, IXI,
OpenBHB, plain folder, CSV/TSV manifest, glob), prints counts (scans, subjects, sessions, age range, sex, sites) and
every dropped row with its reason. `--validate` also opens every image with the header and data checks of the
preprocessing (`Preprocessing.loader`: LoadVolumed + ValidateT1d) in parallel threads and lists the bad files.

Exit codes: 0 = nothing dropped and nothing bad; 1 = something was dropped or bad (details printed); 2 = usage error,
or no scan found at all.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from brainage.data.inputs import detect_layout, read_inputs

__all__ = ["main", "summarize", "validate_images"]

EPILOG = """examples:  (paths `make demo` writes; IXI, OpenBHB and BIDS folders work alike)
  brainage data check demo-output/cohort                     # BIDS folder: counts + dropped participants rows
  brainage data check demo-output/train/test.csv --validate  # manifest; also open every image, list the bad ones
  brainage data check "demo-output/cohort/sub-*/anat/*_T1w.nii.gz" --validate --jobs 2 --verbose

layouts: BIDS (participants.tsv, sub-*/[ses-*/]anat/*_T1w.nii.gz, ages also from sub-*/sub-*_sessions.tsv), IXI
(IXI###-{Guys|HH|IOP}-####-T1.nii.gz + IXI.csv or IXI.xls), OpenBHB (*/sub-*/ses-1/*_preproc-quasiraw_T1w.npy +
participants.tsv), a plain folder, a CSV/TSV manifest (path, age[, sex, site]) or a quoted glob.

exit status: 0 = nothing dropped or bad, 1 = something dropped or bad, 2 = usage error or no scan found.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainage data", description=__doc__.split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", metavar="check")
    check = commands.add_parser("check", help="summarise a dataset and list dropped/bad scans",
                                description=__doc__, epilog=EPILOG, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("dataset", metavar="DATASET",
                       help="dataset folder (BIDS, IXI, OpenBHB or plain), CSV/TSV manifest, or a quoted glob")
    check.add_argument("--validate", action="store_true",
                       help="open every image and run the header/data checks (slower: decodes every file)")
    check.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                       help="parallel threads for --validate (default: min(8, CPUs))")
    check.add_argument("--verbose", action="store_true", help="also list every scan found")
    return parser


def _count(series: pd.Series) -> str:
    counts = series.fillna("unknown").astype(str).replace("", "unknown").value_counts().sort_index()
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "none"


def summarize(table: pd.DataFrame) -> list[str]:
    """Human-readable summary lines of a manifest (read_inputs columns)."""
    ages = table["age"].dropna()
    age = (f"{ages.min():.1f}-{ages.max():.1f} y (median {ages.median():.1f})" if len(ages) else "none known")
    # BIDS keys a scan by its entities after the subject (ses-1_acq-mprage_run-2): count the ses- part
    ses = table["session"].fillna("").astype(str).str.extract(r"(?:^|_)(ses-[^_]+)", expand=False)
    sessions = table.assign(ses=ses).dropna(subset=["ses"])[["subject_id", "ses"]].drop_duplicates()
    return [
        f"scans: {len(table)} (subjects with several: {int((table.groupby('subject_id').size() > 1).sum())})",
        f"subjects: {table['subject_id'].nunique()}",
        f"sessions: {len(sessions)} (subjects with several: "
        f"{int((sessions.groupby('subject_id').size() > 1).sum())})",
        f"age: {age}; unknown age: {int(table['age'].isna().sum())} scans",
        f"sex: {_count(table['sex'])}",
        f"sites: {_count(table['site'])}",
    ]


def validate_images(paths: list[str], jobs: int = 1, progress: bool = True) -> dict[str, str]:
    """Open and check every file (no resampling); returns {path: reason} of the bad ones."""
    from brainage.data.cache import load_volume  # MONAI: only with --validate (a plain check starts in ~1 s)
    from brainage.data.preprocessing import Preprocessing

    loader = Preprocessing().loader()
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = list(tqdm(pool.map(lambda p: load_volume(loader, p), paths), total=len(paths), unit="scan",
                            desc="validating", disable=None if progress else True))
    return {path: reason for path, (_, reason) in zip(paths, results) if reason is not None}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        print(parser.format_usage().rstrip(), file=sys.stderr)
        print("brainage data: error: expected a sub-command: `brainage data check DATASET` (see brainage data --help)",
              file=sys.stderr)
        return 2
    dataset = args.dataset
    if not Path(dataset).exists() and not any(ch in dataset for ch in "*?["):
        print(f"brainage data check: {dataset!r} does not exist; expected a dataset folder, a CSV/TSV manifest or "
              "a glob", file=sys.stderr)
        return 2
    try:
        table = read_inputs([dataset])
    except (ValueError, FileNotFoundError) as err:
        print(f"brainage data check: {err}", file=sys.stderr)
        return 2
    layout = detect_layout(dataset) if Path(dataset).is_dir() else "manifest/files"
    print(f"{dataset} ({layout})")
    for line in summarize(table):
        print(f"  {line}")
    if args.verbose:
        print("scans:")
        for row in table.itertuples():
            age = "?" if math.isnan(row.age) else f"{row.age:g}"
            print(f"  {row.subject_id} {row.session or '-'} age={age} sex={row.sex or '?'} site={row.site or '?'} "
                  f"{row.path}")
    dropped = table.attrs.get("dropped", [])
    print(f"dropped: {len(dropped)}")
    for item in dropped:
        print(f"  {item['subject_id']} ({item['path'] or item['source']}): {item['reason']}")
    missing = {p: f"{p}: file not found" for p in table["path"] if not Path(p).is_file()}
    bad = missing
    if args.validate:
        present = [p for p in table["path"] if p not in missing]
        bad = missing | validate_images(present, args.jobs, progress=True)
    print(f"bad files: {len(bad)}" + ("" if args.validate else " (missing only; --validate opens every image)"))
    for reason in bad.values():
        print(f"  {reason}")
    if table.empty:
        print(f"brainage data check: no scans found in {dataset} (read as {layout}); expected T1 NIfTI files, a BIDS "
              "folder (sub-*/[ses-*/]anat/*_T1w.nii.gz), an IXI or OpenBHB folder, a CSV/TSV manifest or a glob",
              file=sys.stderr)
        return 2
    return 1 if dropped or bad else 0


if __name__ == "__main__":
    sys.exit(main())

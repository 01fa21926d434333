"""The manifest that ``brainage prepare`` writes (``PREPARED/manifest.csv``) and its QC flags.

The manifest is a plain CSV of :data:`brainage.data.inputs.COLUMNS` (``subject_id, session, path, age, sex, site``;
``path`` relative to the manifest) plus the QC columns ``qc_ncc, qc_coverage, qc_status (ok|fail), qc_reason,
source_path, skull_strip, spacing``. :func:`brainage.data.inputs.read_inputs`, the one input entry point of fit,
predict, report and calibrate, recognises it and applies :func:`apply_qc`: scans that failed QC are left out (and
listed with the reason) unless the user asks for them with ``--include-failed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

__all__ = ["MANIFEST_COLUMNS", "QC_COLUMNS", "SkullStrip", "apply_qc", "is_prepared_manifest"]

SkullStrip = Literal["deepbet", "template"]  # values of the skull_strip column

QC_COLUMNS = ["qc_ncc", "qc_coverage", "qc_status", "qc_reason", "source_path", "skull_strip", "spacing"]
MANIFEST_COLUMNS = ["subject_id", "session", "path", "age", "sex", "site", *QC_COLUMNS]


def is_prepared_manifest(path: str | Path) -> bool:
    """True for an existing CSV whose header has the ``path`` and ``qc_status`` columns."""
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = [c.strip() for c in handle.readline().strip().split(",")]
    return "path" in header and "qc_status" in header


def apply_qc(table: pd.DataFrame, path: str | Path, include_failed: bool = False) -> pd.DataFrame:
    """The input ``table`` read from the prepared manifest at ``path``, with ``qc_status, qc_ncc, qc_reason`` joined
    and the flagged rows left out unless ``include_failed``; they are listed in ``table.attrs["dropped"]`` with
    their QC reason, so that every command can report them."""
    path = Path(path)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "qc_status") if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: not a brainage prepare manifest: no {missing} column(s) (found {list(raw.columns)})")
    qc = raw.assign(path=[str(p if Path(p).is_absolute() else path.parent / p) for p in raw["path"]])
    qc = qc[["path", "qc_status", "qc_ncc", "qc_reason"]].drop_duplicates("path")
    dropped = list(table.attrs.get("dropped", []))
    table = table.merge(qc, on="path", how="left", validate="one_to_one")
    table["qc_ncc"] = pd.to_numeric(table["qc_ncc"], errors="coerce")
    failed = table["qc_status"] != "ok"
    if not include_failed:
        dropped += [{"source": str(path), "subject_id": r.subject_id, "path": r.path,
                     "reason": f"QC {r.qc_status or 'missing'}: {r.qc_reason} (use --include-failed to keep it)"}
                    for r in table[failed].itertuples()]
        table = table[~failed].reset_index(drop=True)
    table.attrs["dropped"] = dropped
    return table

"""The manifest that ``brainage prepare`` writes (``PREPARED/manifest.csv``) and the readers that honour its QC flags.

The manifest is a plain :func:`brainage.data.inputs.read_table` CSV (``subject_id, session, path, age, sex, site``;
``path`` relative to the manifest) with the QC columns ``qc_ncc, qc_coverage, qc_status (ok|fail), qc_reason,
source_path, skull_strip, spacing``. This module needs only pandas, so ``predict`` can import it without the
``prepare`` extra (SimpleITK, deepbet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from brainage.data.inputs import read_inputs, read_table

__all__ = ["MANIFEST_COLUMNS", "QC_COLUMNS", "SkullStrip", "is_prepared_manifest", "load_prepared_manifest", "read_prepared_inputs"]

SkullStrip = Literal["deepbet", "template"]  # values of the manifest's skull_strip column
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


def load_prepared_manifest(path: str | Path, include_failed: bool = False) -> pd.DataFrame:
    """Read a ``brainage prepare`` manifest as an input table (absolute image paths), without QC failures by default.

    Returns the :data:`brainage.data.inputs.COLUMNS` table plus ``qc_status, qc_ncc, qc_reason``. Flagged rows are
    left out unless ``include_failed``; they are listed in ``table.attrs["dropped"]`` with their QC reason, so that
    predict can report them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prepared manifest {path} does not exist (expected PREPARED/manifest.csv)")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "qc_status") if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: not a brainage prepare manifest: no {missing} column(s) (found {list(raw.columns)})")
    table = read_table(path)
    qc = raw.assign(path=[str(p if Path(p).is_absolute() else path.parent / p) for p in raw["path"]])
    qc = qc[["path", "qc_status", "qc_ncc", "qc_reason"]].drop_duplicates("path")
    table = table.merge(qc, on="path", how="left", validate="one_to_one")
    table["qc_ncc"] = pd.to_numeric(table["qc_ncc"], errors="coerce")
    failed = table["qc_status"] != "ok"
    dropped = list(table.attrs.get("dropped", []))
    if not include_failed:
        dropped += [{"source": str(path), "subject_id": r.subject_id, "path": r.path,
                     "reason": f"QC {r.qc_status or 'missing'}: {r.qc_reason} (use --include-failed to keep it)"}
                    for r in table[failed].itertuples()]
        table = table[~failed].reset_index(drop=True)
    table.attrs["dropped"] = dropped
    return table


def read_prepared_inputs(inputs: list[str] | str, include_failed: bool = False) -> pd.DataFrame:
    """:func:`brainage.data.inputs.read_inputs`, except that prepared manifests go through
    :func:`load_prepared_manifest` (QC failures skipped unless ``include_failed``)."""
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    tables = [load_prepared_manifest(i, include_failed) if is_prepared_manifest(i) else read_inputs(i) for i in items]
    dropped = [d for t in tables for d in t.attrs.get("dropped", [])]
    table = pd.concat(tables, ignore_index=True) if tables else read_inputs([])
    table = table.drop_duplicates(subset=["path"], keep="first").reset_index(drop=True)
    table.attrs["dropped"] = dropped
    return table

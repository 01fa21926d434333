"""Readers that turn what users have on disk into one manifest table.

Every reader returns a `pandas.DataFrame` with the columns `subject_id, session, path, age, sex, site` (age in
years as float, NaN when unknown; sex "M"/"F" or None; session "" when absent), one row per image, in a stable
order. Rows a reader had to drop are listed in `table.attrs["dropped"]` as dicts `{source, subject_id, path, reason}`.

Readers never open the images: validation happens before training and prediction, where a bad file becomes an
error row instead of a crash.
"""

from __future__ import annotations

import glob as _glob
import math
import re
from pathlib import Path

import pandas as pd

__all__ = ["COLUMNS", "NIFTI_SUFFIXES", "parse_age", "parse_sex", "read_bids", "read_table", "read_folder",
           "read_inputs", "is_nifti"]

COLUMNS = ["subject_id", "session", "path", "age", "sex", "site"]
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MISSING = {"", "n/a", "na", "nan", "none", "null", "-", "?"}
_SEX = {"m": "M", "male": "M", "1": "M", "f": "F", "female": "F", "2": "F", "w": "F"}


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".npy"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def parse_age(value: object) -> float:
    """Age in years from the forms found in the wild: `34`, `34.5`, `26,9` (decimal comma), `89+`, `n/a`.

    Returns NaN when missing; raises ValueError naming the value when it is not an age.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    text = str(value).strip().lower()
    if text in _MISSING:
        return math.nan
    text = text.rstrip("+").replace(",", ".")
    try:
        age = float(text)
    except ValueError:
        raise ValueError(f"age {value!r} is not a number of years (expected e.g. 34, 34.5, 26,9, 89+ or n/a)") from None
    if not 0.0 <= age <= 130.0:
        raise ValueError(f"age {value!r} is outside the plausible range 0-130 years")
    return age


def parse_sex(value: object) -> str | None:
    """Normalise sex codes (M/F, m/f, male/female, 1/2 as in IXI's SEX_ID) to "M"/"F"; None when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    if text in _MISSING:
        return None
    if text.endswith(".0"):
        text = text[:-2]
    if text not in _SEX:
        raise ValueError(f"sex {value!r} is not recognised (expected M/F, male/female, 1/2 or n/a)")
    return _SEX[text]


def _frame(rows: list[dict], dropped: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["age"] = table["age"].astype(float)
    table = table.sort_values(["subject_id", "session", "path"], kind="stable").reset_index(drop=True)
    table.attrs["dropped"] = dropped
    return table


def _row(subject_id: str, path: Path, session: str = "", age: float = math.nan, sex: str | None = None,
         site: str | None = None) -> dict:
    return {"subject_id": subject_id, "session": session, "path": str(path), "age": age, "sex": sex, "site": site}


def _clean_demographics(record: dict, source: str, subject_id: str, path: str, dropped: list[dict]) -> dict | None:
    """Parse age and sex of one record; a value that cannot be parsed drops the row with the reason."""
    try:
        return {"age": parse_age(record.get("age")), "sex": parse_sex(record.get("sex"))}
    except ValueError as err:
        dropped.append({"source": source, "subject_id": subject_id, "path": path, "reason": str(err)})
        return None


def _read_delimited(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() == ".tsv" else None
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, engine="python")
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read as a {'TSV' if sep else 'CSV'} table ({err})") from err


def read_bids(root: str | Path) -> pd.DataFrame:
    """BIDS dataset: `participants.tsv` plus `sub-*/[ses-*/]anat/*_T1w.nii[.gz]`.

    Subjects with images but no participants row are kept with unknown age; participants rows without an image
    are listed as dropped.
    """
    root = Path(root)
    demographics: dict[str, dict] = {}
    dropped: list[dict] = []
    tsv = root / "participants.tsv"
    if tsv.exists():
        frame = _read_delimited(tsv)
        if "participant_id" not in frame.columns:
            raise ValueError(f"{tsv}: no 'participant_id' column (found {list(frame.columns)})")
        frame.columns = [c.strip().lower() for c in frame.columns]
        for record in frame.to_dict("records"):
            pid = str(record["participant_id"]).strip()
            pid = pid if pid.startswith("sub-") else f"sub-{pid}"
            demographics[pid] = record
    images = sorted(p for pattern in ("sub-*/anat/*_T1w.nii*", "sub-*/ses-*/anat/*_T1w.nii*")
                    for p in root.glob(pattern) if is_nifti(p))
    rows, seen = [], set()
    for path in images:
        subject = path.relative_to(root).parts[0]
        session = next((part for part in path.relative_to(root).parts[1:-1] if part.startswith("ses-")), "")
        record = demographics.get(subject, {})
        parsed = _clean_demographics(record, str(tsv), subject, str(path), dropped)
        if parsed is None:
            continue
        seen.add(subject)
        rows.append(_row(subject, path, session, parsed["age"], parsed["sex"], record.get("site") or None))
    for subject in sorted(set(demographics) - seen):
        if not any(d["subject_id"] == subject for d in dropped):
            dropped.append({"source": str(tsv), "subject_id": subject, "path": "",
                            "reason": "listed in participants.tsv but no sub-*/[ses-*/]anat/*_T1w.nii[.gz] image"})
    return _frame(rows, dropped)


def read_table(path: str | Path, *, path_column: str = "path", subject_column: str = "subject_id",
               age_column: str = "age", sex_column: str = "sex", site_column: str = "site",
               session_column: str = "session") -> pd.DataFrame:
    """CSV/TSV manifest with configurable column names; relative image paths are relative to the table."""
    path = Path(path)
    frame = _read_delimited(path)
    if path_column not in frame.columns:
        raise ValueError(f"{path}: no image path column {path_column!r} (found {list(frame.columns)})")
    rows, dropped = [], []
    for index, record in enumerate(frame.to_dict("records")):
        image = Path(str(record[path_column]).strip())
        image = image if image.is_absolute() else path.parent / image
        subject = str(record.get(subject_column) or "").strip() or _stem(image)
        renamed = {"age": record.get(age_column), "sex": record.get(sex_column)}
        parsed = _clean_demographics(renamed, f"{path}:{index + 2}", subject, str(image), dropped)
        if parsed is None:
            continue
        rows.append(_row(subject, image, str(record.get(session_column) or ""), parsed["age"], parsed["sex"],
                         str(record.get(site_column) or "") or None))
    return _frame(rows, dropped)


def read_folder(root: str | Path) -> pd.DataFrame:
    """Every `.nii`/`.nii.gz` below a folder (recursive); the subject id is the file name without extension."""
    root = Path(root)
    images = sorted(p for p in root.rglob("*") if p.is_file() and is_nifti(p))
    return _frame([_row(_stem(p), p) for p in images], [])


def read_inputs(inputs: list[str] | str) -> pd.DataFrame:
    """Dispatch each input to its reader: BIDS folder, plain folder, CSV/TSV manifest, NIfTI file or glob.

    Inputs that match nothing become rows with their path, so that prediction reports them as missing files.
    """
    tables = []
    for item in [inputs] if isinstance(inputs, str) else inputs:
        path = Path(item)
        if path.is_dir():
            bids = (path / "participants.tsv").exists() or any(path.glob("sub-*/anat")) or any(path.glob("sub-*/ses-*"))
            tables.append(read_bids(path) if bids else read_folder(path))
        elif path.suffix.lower() in {".csv", ".tsv"} and path.exists():
            tables.append(read_table(path))
        elif re.search(r"[*?\[]", item):
            matches = sorted(Path(p) for p in _glob.glob(item, recursive=True) if is_nifti(p))
            tables.append(_frame([_row(_stem(p), p) for p in matches], []))
        else:
            tables.append(_frame([_row(_stem(path), path)], []))
    dropped = [d for t in tables for d in t.attrs.get("dropped", [])]
    table = pd.concat(tables, ignore_index=True) if tables else _frame([], [])
    table = table.drop_duplicates(subset=["path"], keep="first").reset_index(drop=True)
    table.attrs["dropped"] = dropped
    return table

"""Readers that turn what users have on disk into one manifest table.

Every reader returns a `pandas.DataFrame` with the columns `subject_id, session, path, age, sex, site` (age in
years as float, NaN when unknown; sex "M"/"F" or None; session "" when absent), one row per image, in a stable
order. Rows a reader had to drop are listed in `table.attrs["dropped"]` as dicts `{source, subject_id, path, reason}`.

Readers never open the images: validation happens before training and prediction, where a bad file becomes an
error row instead of a crash. Supported layouts (dataset facts from the IXI and OpenBHB releases):

- BIDS: `participants.tsv` + `sub-X[/ses-Y]/anat/*_T1w.nii[.gz]`.
- IXI (brain-development.org/ixi-dataset): `IXI###-{Guys|HH|IOP}-####-T1.nii.gz` + the demographic sheet `IXI.xls`
  or its CSV export (`IXI_ID`, `SEX_ID (1=m, 2=f)`, `AGE`); the site comes from the file name.
- OpenBHB (Dufumier et al., NeuroImage 2022): `*/sub-{id}/ses-1/*_preproc-quasiraw_T1w.npy` + `participants.tsv`.
- a plain folder of NIfTI files, a CSV/TSV manifest, single files and globs.

Order: a folder, dataset or glob is sorted by subject id, session and path; a manifest keeps its row order; several
inputs follow one another in the order given. Duplicates are named, never silently dropped: a path listed twice (or a
symlink to a file already listed) is kept once and listed in `dropped`; an id listed twice in a demographic table
keeps its first row when the rows agree and loses its age and sex when they do not (both listed).

Hostile file systems (our choices): a `**` glob follows symlinked folders but enters each real folder once, so
symlink loops neither hang nor repeat files; a file name that is not valid UTF-8 is shown with its undecodable bytes
as `\\xNN` (backslashes doubled) in `subject_id` and `path` (`display_path`), so tables, journals and CSVs can hold it,
and `undecodable_name` leads back to the file.
"""

from __future__ import annotations

import codecs
import fnmatch
import io
import math
import os
import re
from pathlib import Path

import pandas as pd

from brainage.data.manifest import apply_qc, is_prepared_manifest

__all__ = ["COLUMNS", "NIFTI_SUFFIXES", "IXI_PATTERN", "OPENBHB_GLOB", "parse_age", "parse_sex", "sex_code", "read_bids",
           "read_ixi", "read_openbhb", "detect_layout", "read_table", "read_folder", "read_inputs", "is_nifti",
           "skipped_lines", "display_path", "undecodable_name", "glob_files"]

COLUMNS = ["subject_id", "session", "path", "age", "sex", "site"]
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IXI_PATTERN = re.compile(r"^(IXI\d{3})-(Guys|HH|IOP)-(\d{4})-T1\.nii(\.gz)?$")
OPENBHB_GLOB = "sub-*/ses-*/*_preproc-quasiraw_T1w.npy"
_MISSING = {"", "n/a", "na", "nan", "none", "null", "-", "?"}
_SEX = {"m": "M", "male": "M", "1": "M", "f": "F", "female": "F", "2": "F", "w": "F"}


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def display_path(text: str) -> str:
    """`text` unchanged when it is valid UTF-8; else (a file name with undecodable bytes, which Python holds as
    surrogates) its bytes with backslashes doubled and each undecodable byte written `\\xNN`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def undecodable_name(text: str) -> str | None:
    """The real (surrogate-escaped) path of an existing file whose `display_path` is `text`, else None."""
    if "\\x" not in text:
        return None
    try:
        real = os.fsdecode(codecs.escape_decode(text.encode("utf-8"))[0])
    except ValueError:
        return None
    return real if real != text and display_path(real) == text and os.path.lexists(real) else None


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


def sex_code(value: object) -> float:
    """The model's sex covariate of a normalised sex ("M" -> 0, "F" -> 1, anything else -> NaN = unknown), as
    `brainage.model.vit.sex_covariate` expects."""
    return {"M": 0.0, "F": 1.0}.get(value, math.nan)


def _frame(rows: list[dict], dropped: list[dict], sort: bool = True) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["age"] = table["age"].astype(float)
    if sort:
        table = table.sort_values(["subject_id", "session", "path"], kind="stable").reset_index(drop=True)
    table.attrs["dropped"] = dropped
    return table


def _row(subject_id: str, path: Path, session: str = "", age: float = math.nan, sex: str | None = None,
         site: str | None = None) -> dict:
    return {"subject_id": display_path(subject_id), "session": display_path(session), "path": display_path(str(path)),
            "age": age, "sex": sex, "site": site}


def _keep_unique_paths(rows: list[dict], sources: list[str], dropped: list[dict]) -> list[bool]:
    """Which rows to keep: the first of each real file (paths compared after resolving symlinks); the others are
    listed in `dropped`, naming the row they repeat."""
    first: dict[str, dict] = {}
    keep = []
    for row, source in zip(rows, sources):
        seen = first.setdefault(os.path.realpath(row["path"]), row)
        keep.append(seen is row)
        if seen is not row:
            how = "duplicate path" if seen["path"] == row["path"] else f"same file as {seen['path']}"
            dropped.append({"source": source, "subject_id": row["subject_id"], "path": row["path"],
                            "reason": f"{how}: already listed as {seen['subject_id']}"
                                      + (f" ({seen['path']})" if seen["path"] == row["path"] else "")})
    return keep


def _comparable(record: dict) -> tuple:
    """(age, sex) of a demographic record, parsed where possible, for comparing duplicate rows."""
    values = []
    for key, parse in (("age", parse_age), ("sex", parse_sex)):
        try:
            value = parse(record.get(key))
            values.append(None if isinstance(value, float) and math.isnan(value) else value)
        except ValueError:
            values.append(str(record.get(key)))
    return tuple(values)


def _one_record_per_id(entries: dict[str, list[tuple[str, int, dict]]], what: str,
                       dropped: list[dict]) -> dict[str, dict]:
    """One demographic record per id from its (file, line, record) rows. Rows that agree keep the first with an age
    (the others are listed as dropped); rows that disagree on age or sex are all dropped, so the id's age and sex
    are unknown rather than a silent pick."""
    kept: dict[str, dict] = {}
    for subject, rows in entries.items():
        values = [_comparable(record) for _, _, record in rows]
        ages = {round(a, 2) if isinstance(a, float) else a for a, _ in values if a is not None}
        if len(ages) > 1 or len({s for _, s in values if s is not None}) > 1:
            found = ", ".join(f"line {line}: age {a}, sex {s}" for (_, line, _), (a, s) in zip(rows, values))
            dropped.append({"source": rows[0][0], "subject_id": subject, "path": "",
                            "reason": f"{what} listed {len(rows)} times with conflicting values ({found})"})
            continue
        keep = next((row for row, (age, _) in zip(rows, values) if age is not None), rows[0])
        kept[subject] = keep[2]
        dropped += [{"source": f"{file}:{line}", "subject_id": subject, "path": "",
                     "reason": f"duplicate {what} (kept line {keep[1]}" + ("" if file == keep[0] else f" of {keep[0]}")
                               + ")"}
                    for file, line, _ in rows if (file, line) != keep[:2]]
    return kept


def _clean_demographics(record: dict, source: str, subject_id: str, path: str, dropped: list[dict]) -> dict | None:
    """Parse age and sex of one record; a value that cannot be parsed drops the row with the reason."""
    try:
        return {"age": parse_age(record.get("age")), "sex": parse_sex(record.get("sex"))}
    except ValueError as err:
        dropped.append({"source": source, "subject_id": subject_id, "path": path, "reason": str(err)})
        return None


def _delimiter(path: Path) -> str:
    """Tab for .tsv; else the delimiter the header line uses among `,` `;` tab and `|` (a one-column table has
    none: `,`). Sniffing any character would split a lone `path` header at its `t`."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        header = handle.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _read_delimited(path: Path) -> pd.DataFrame:
    try:
        sep = _delimiter(path)
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, engine="python")
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read as a {'TSV' if path.suffix.lower() == '.tsv' else 'CSV'} table "
                         f"({err})") from err


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
        entries: dict[str, list[tuple[str, int, dict]]] = {}
        for line, record in enumerate(frame.to_dict("records"), start=2):
            pid = str(record["participant_id"]).strip()
            pid = pid if pid.startswith("sub-") else f"sub-{pid}"
            entries.setdefault(pid, []).append((str(tsv), line, record))
        demographics = _one_record_per_id(entries, "participant_id", dropped)
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


def _ixi_sheet(root: Path) -> Path | None:
    """The IXI demographic sheet in `root`: a CSV/TSV export with an `IXI_ID` column, else `IXI.xls`."""
    for candidate in sorted(root.glob("*.csv")) + sorted(root.glob("*.tsv")):
        with open(candidate, encoding="utf-8", errors="replace") as handle:
            if "IXI_ID" in handle.readline():
                return candidate
    xls = sorted(p for p in root.iterdir() if p.suffix.lower() == ".xls")
    return xls[0] if xls else None


def _read_ixi_sheet(sheet: Path) -> pd.DataFrame:
    if sheet.suffix.lower() == ".xls":
        try:
            import xlrd  # noqa: F401 - only needed for the original .xls; the CSV export needs nothing extra
        except ImportError:
            raise ValueError(f"{sheet}: reading .xls needs the 'xlrd' package (pip install xlrd); or export the sheet "
                             "as CSV (File > Save As > CSV) next to the images") from None
        frame = pd.read_excel(sheet, dtype=str, keep_default_na=False, engine="xlrd")
    else:
        text = sheet.read_text(encoding="utf-8", errors="replace")
        header, _, body = text.partition("\n")
        # an unquoted "SEX_ID (1=m, 2=f)" header splits at its comma; name it SEX_ID before parsing
        header = re.sub(r'"?SEX_ID \(1=m, ?2=f\)"?', "SEX_ID", header)
        sep = "\t" if sheet.suffix.lower() == ".tsv" else ","
        try:
            frame = pd.read_csv(io.StringIO(header + "\n" + body), sep=sep, dtype=str, keep_default_na=False)
        except pd.errors.ParserError as err:
            raise ValueError(f"{sheet}: cannot read as a {'TSV' if sep == chr(9) else 'CSV'} table ({err})") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    sex = next((c for c in frame.columns if c.upper().startswith("SEX")), None)
    missing = [name for name, col in (("IXI_ID", "IXI_ID" in frame.columns), ("AGE", "AGE" in frame.columns),
                                      ("SEX_ID (1=m, 2=f)", sex)) if not col]
    if missing:
        raise ValueError(f"{sheet}: no {missing} column(s) (found {list(frame.columns)}); expected the IXI sheet with "
                         "IXI_ID, SEX_ID (1=m, 2=f) and AGE")
    return frame.rename(columns={sex: "SEX_ID"})


def read_ixi(root: str | Path, sheet: str | Path | None = None) -> pd.DataFrame:
    """IXI: `IXI###-{Guys|HH|IOP}-####-T1.nii[.gz]` files below `root` plus the demographic sheet.

    The sheet is `sheet`, else a CSV/TSV in `root` with an `IXI_ID` column, else `root/IXI.xls` (needs xlrd).
    Duplicate IXI_IDs that agree keep the first row with an age (the others are listed as dropped); duplicates
    with conflicting age or sex are all dropped. Images without a sheet row keep an unknown age; sheet rows without
    an image are listed as dropped. The site (Guys, HH, IOP) comes from the file name.
    """
    root = Path(root)
    sheet = Path(sheet) if sheet is not None else _ixi_sheet(root)
    if sheet is None or not sheet.is_file():
        raise FileNotFoundError(f"{root}: no IXI demographic sheet found (looked for "
                                f"{sheet or 'a CSV/TSV with an IXI_ID column, or IXI.xls'}); expected IXI.xls or its "
                                "CSV export")
    dropped: list[dict] = []
    records: dict[str, list[tuple[str, int, dict]]] = {}
    for index, record in enumerate(_read_ixi_sheet(sheet).to_dict("records")):
        raw = str(record["IXI_ID"]).strip()
        source = f"{sheet}:{index + 2}"
        try:
            subject = f"IXI{int(float(raw)):03d}"
        except ValueError:
            dropped.append({"source": source, "subject_id": raw, "path": "",
                            "reason": f"IXI_ID {raw!r} is not an integer"})
            continue
        parsed = _clean_demographics({"age": record["AGE"], "sex": record["SEX_ID"]}, source, subject, "", dropped)
        if parsed is not None:
            records.setdefault(subject, []).append((str(sheet), index + 2, parsed))
    demographics = _one_record_per_id(records, "IXI_ID", dropped)
    rows = []
    for path in sorted(p for p in root.rglob("IXI*-T1.nii*") if IXI_PATTERN.match(p.name)):
        subject, site = IXI_PATTERN.match(path.name).group(1, 2)
        record = demographics.get(subject, {"age": math.nan, "sex": None})
        rows.append(_row(subject, path, "", record["age"], record["sex"], site))
    imaged = {r["subject_id"] for r in rows}
    dropped += [{"source": str(sheet), "subject_id": s, "path": "",
                 "reason": "in the sheet but no IXI*-T1.nii.gz image"} for s in sorted(set(demographics) - imaged)]
    return _frame(rows, dropped)


def read_openbhb(root: str | Path) -> pd.DataFrame:
    """OpenBHB: `*/sub-{id}/ses-1/*_preproc-quasiraw_T1w.npy` volumes below `root` + `participants.tsv`.

    The participants table is `root/participants.tsv` (else every `participants.tsv` up to two levels down); its
    `participant_id` may be an integer or `sub-<id>`; the site is `site` (else `siteXacq`). The `.npy` arrays are
    read by `brainage.data.transforms.LoadVolumed` on the 1 mm MNI grid.
    """
    root = Path(root)
    tables = sorted(root.glob("participants.tsv")) or \
        sorted(root.glob("*/participants.tsv")) + sorted(root.glob("*/*/participants.tsv"))
    entries: dict[str, list[tuple[str, int, dict]]] = {}
    for tsv in tables:
        frame = _read_delimited(tsv)
        frame.columns = [c.strip().lower() for c in frame.columns]
        if "participant_id" not in frame.columns:
            raise ValueError(f"{tsv}: no 'participant_id' column (found {list(frame.columns)})")
        for line, record in enumerate(frame.to_dict("records"), start=2):
            pid = str(record["participant_id"]).strip().removeprefix("sub-")
            pid = pid[:-2] if pid.endswith(".0") else pid
            entries.setdefault(f"sub-{pid}", []).append((str(tsv), line, record | {"source": str(tsv)}))
    dropped: list[dict] = []
    demographics = _one_record_per_id(entries, "participant_id", dropped)
    rows = []
    for path in sorted(root.rglob("*_preproc-quasiraw_T1w.npy")):
        subject = next((part for part in reversed(path.parts[:-1]) if part.startswith("sub-")), _stem(path))
        session = path.parent.name if path.parent.name.startswith("ses-") else ""
        record = demographics.get(subject, {})
        parsed = _clean_demographics(record, record.get("source", str(root)), subject, str(path), dropped)
        if parsed is not None:
            site = str(record.get("site") or record.get("sitexacq") or "") or None
            rows.append(_row(subject, path, session, parsed["age"], parsed["sex"], site))
    seen = {r["subject_id"] for r in rows} | {d["subject_id"] for d in dropped}
    dropped += [{"source": demographics[s]["source"], "subject_id": s, "path": "",
                 "reason": "listed in participants.tsv but no */sub-*/ses-*/*_preproc-quasiraw_T1w.npy image"}
                for s in sorted(set(demographics) - seen)]
    return _frame(rows, dropped)


def detect_layout(root: str | Path) -> str:
    """"ixi", "openbhb", "bids" or "folder" for a dataset folder (see the module docstring)."""
    root = Path(root)
    ixi_images = any(IXI_PATTERN.match(p.name) for pattern in ("IXI*-T1.nii*", "*/IXI*-T1.nii*")
                     for p in root.glob(pattern))
    if ixi_images and _ixi_sheet(root) is not None:
        return "ixi"
    if any(next(root.glob(prefix + OPENBHB_GLOB), None) for prefix in ("", "*/", "*/*/")):
        return "openbhb"
    if (root / "participants.tsv").exists() or any(root.glob("sub-*/anat")) or any(root.glob("sub-*/ses-*")):
        return "bids"
    return "folder"


_READERS = {"ixi": read_ixi, "openbhb": read_openbhb, "bids": read_bids}


def read_table(path: str | Path, *, path_column: str = "path", subject_column: str = "subject_id",
               age_column: str = "age", sex_column: str = "sex", site_column: str = "site",
               session_column: str = "session") -> pd.DataFrame:
    """CSV/TSV manifest with configurable column names, in its row order; relative image paths are relative to the
    table; a path listed again is kept once (the others are listed as dropped)."""
    path = Path(path)
    frame = _read_delimited(path)
    if path_column not in frame.columns:
        raise ValueError(f"{path}: no image path column {path_column!r} (found {list(frame.columns)})")
    rows, dropped, sources = [], [], []
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
        sources.append(f"{path}:{index + 2}")
    keep = _keep_unique_paths(rows, sources, dropped)
    return _frame([row for row, kept in zip(rows, keep) if kept], dropped, sort=False)  # the manifest's order


def read_folder(root: str | Path) -> pd.DataFrame:
    """Every `.nii`/`.nii.gz` below a folder (recursive); the subject id is the file name without extension."""
    root = Path(root)
    images = sorted(p for p in root.rglob("*") if p.is_file() and is_nifti(p))
    return _frame([_row(_stem(p), p) for p in images], [])


def _matches(names: list[str], parts: list[str]) -> bool:
    """Whether path components `names` match glob components `parts` (`**` = any number of folders), as the
    standard glob does: `*`, `?` and `**` never match a leading dot."""
    if not parts:
        return not names
    if parts[0] == "**":
        return _matches(names, parts[1:]) or (bool(names) and not names[0].startswith(".")
                                               and _matches(names[1:], parts))
    return (bool(names) and (parts[0].startswith(".") or not names[0].startswith("."))
            and fnmatch.fnmatchcase(names[0], parts[0]) and _matches(names[1:], parts[1:]))


def glob_files(pattern: str) -> list[str]:
    """Files matching `pattern` (`**` recursive), sorted, like `glob.glob(pattern, recursive=True)` limited to
    files, except that symlinked folders are entered once per real folder: symlink loops neither hang (two loops make
    the standard glob's paths grow exponentially) nor list a file once per turn of the loop."""
    parts = pattern.split(os.sep)
    first = next((i for i, part in enumerate(parts) if re.search(r"[*?\[]", part)), len(parts))
    base, magic = os.sep.join(parts[:first]) or ("" if parts[0] else os.sep), parts[first:]
    if not magic:
        return [pattern] if os.path.isfile(pattern) else []
    depth = None if "**" in magic else len(magic) - 1  # folders below base worth entering
    try:
        top = os.stat(base or os.curdir)
    except OSError:
        return []
    found, visited = [], {(top.st_dev, top.st_ino)}
    for folder, subfolders, files in os.walk(base or os.curdir, followlinks=True):
        relative = os.path.relpath(folder, base or os.curdir)
        names = [] if relative == os.curdir else relative.split(os.sep)
        keep = []
        for name in sorted(subfolders):
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            if (stat.st_dev, stat.st_ino) not in visited and (depth is None or len(names) < depth):
                visited.add((stat.st_dev, stat.st_ino))
                keep.append(name)
        subfolders[:] = keep
        found += [os.path.join(base, *names, name) if base else os.path.join(*names, name)
                  for name in files if _matches([*names, name], magic)]
    return sorted(found)


def skipped_lines(dropped: list[dict]) -> list[str]:
    """One line per left-out row (`table.attrs["dropped"]`), worded alike by every command."""
    return [f"skipped {item['subject_id']} ({item['path']}): {item['reason']}" for item in dropped]


def read_inputs(inputs: list[str] | str, include_failed: bool = False) -> pd.DataFrame:
    """The one input entry point of fit, predict, report and calibrate: dispatch each input to its reader (IXI,
    OpenBHB or BIDS folder, plain folder, `brainage prepare` manifest, CSV/TSV manifest, file or glob).

    Scans flagged by `brainage prepare` QC are left out unless ``include_failed`` (:mod:`brainage.data.manifest`).
    Rows left out, with the reason, are in ``table.attrs["dropped"]``. Inputs that match nothing become rows with
    their path, so that prediction reports them as missing files.
    """
    tables, sources = [], []
    for item in [inputs] if isinstance(inputs, str) else inputs:
        path = Path(item)
        if is_prepared_manifest(path):
            tables.append(apply_qc(read_table(path), path, include_failed))
        elif path.is_dir():
            tables.append(_READERS.get(detect_layout(path), read_folder)(path))
        elif path.suffix.lower() in {".csv", ".tsv"} and path.exists():
            tables.append(read_table(path))
        elif re.search(r"[*?\[]", item):
            tables.append(_frame([_row(_stem(Path(p)), p) for p in glob_files(item) if is_nifti(p)], []))
        else:
            tables.append(_frame([_row(_stem(path), path)], []))
        sources += [str(item)] * len(tables[-1])
    dropped = [d for t in tables for d in t.attrs.get("dropped", [])]
    table = pd.concat(tables, ignore_index=True) if tables else _frame([], [])
    table = table[_keep_unique_paths(table.to_dict("records"), sources, dropped)].reset_index(drop=True)
    table.attrs["dropped"] = dropped
    return table

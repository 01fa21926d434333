"""Prediction rows, the resumable journal, the output lock and the atomic CSV: a run never loses a row.

Every finished batch is appended to a journal next to the output (`<output>.partial`, or `<output>.partial.rank<r>`
per process under DDP), flushed and fsynced. A run killed at any point (even SIGKILL) and restarted with the same
model and options reads the journals, skips the inputs already done and appends the rest; the final CSV is then
assembled in input order and written atomically (temporary file + fsync + rename), so it is the same file an
uninterrupted run writes. The journal's first line records the settings that produced its rows; a journal written
with other settings is ignored and replaced.

Journal format (v2, our choice): one JSON object per line, ASCII only (`ensure_ascii`), so a record is complete
exactly when its line end is on disk, whatever its fields hold (a subject id with a newline was a quoted multi-line
CSV field in v1, and a kill inside it left a journal that could not be read back). Reading stops at the first line
that is unterminated or not a record; the next run truncates the journal there and appends after it.

Output lock: `<output>.lock` is held with `fcntl.flock` for the whole run (by the process of global rank 0 under
DDP), so a second predict on the same output stops at once with one line instead of interleaving journals; the
lock file, written with the holder's pid, doubles as the probe that the output's folder can take files. It is
removed when the run ends; a kill leaves the file, but not the lock, which the kernel drops with the process.
"""

from __future__ import annotations

import csv
import fcntl
import glob
import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Self

import numpy as np
import pandas as pd

from brainage.contracts.atomic import atomic_path
from brainage.contracts.routing import ScanRouting, routing_filename, save_routing
from brainage.predict.stream import SubjectResult

__all__ = [
    "JOURNAL_COLUMNS",
    "OUTPUT_COLUMNS",
    "Journal",
    "OutputError",
    "OutputLock",
    "assemble",
    "journal_files",
    "journal_path",
    "read_journals",
    "record",
    "remove_journals",
    "result_row",
    "row_key",
    "summarise",
    "write_csv_atomic",
]

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ["subject_id", "session", "path", "age", "predicted_age", "corrected_age", "brain_age_gap",
                  "corrected_gap", "uncertainty", "status", "error"]
JOURNAL_COLUMNS = ["key", *OUTPUT_COLUMNS]
_MAGIC = "# brainage-predict journal v2 "


def _years(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def result_row(result: SubjectResult) -> dict:
    """The output CSV row of one result (columns OUTPUT_COLUMNS; numbers as fixed-point text, '' when unknown)."""
    row = result.row
    age = row.get("age")
    age = float(age) if age is not None and age != "" and not (isinstance(age, float) and math.isnan(age)) else None
    pred = result.predicted_age
    corrected = pred if result.corrected_age is None else result.corrected_age
    session = row.get("session")
    return {
        "subject_id": str(row["subject_id"]), "session": "" if pd.isna(session) else str(session),
        "path": str(row["path"]),
        "age": _years(age),
        "predicted_age": _years(pred),
        "corrected_age": _years(None if pred is None else corrected),
        "brain_age_gap": _years(None if pred is None or age is None else pred - age),
        "corrected_gap": _years(None if pred is None or age is None else corrected - age),
        "uncertainty": "" if result.uncertainty is None or pred is None else f"{result.uncertainty:.3f}",
        "status": "ok" if result.error is None else "error",
        "error": " ".join((result.error or "").split()),  # one line: the CSV stays one record per line
    }


def row_key(row: dict) -> str:
    """Journal key of an input row: its path (inputs are unique by path)."""
    return str(row["path"])


def journal_path(output: Path, rank: int | None = None) -> Path:
    return output.with_name(f"{output.name}.partial" + ("" if rank is None else f".rank{rank}"))


def journal_files(output: Path) -> list[Path]:
    """Every journal of `output`: the single-process one and the per-rank DDP shards."""
    return sorted(p for p in output.parent.glob(f"{glob.escape(output.name)}.partial*") if p.is_file())


def _header(settings: dict) -> bytes:
    return (_MAGIC + json.dumps(settings, sort_keys=True) + "\n").encode()


def _record(row: dict) -> bytes:
    return (json.dumps({c: row[c] for c in JOURNAL_COLUMNS}, ensure_ascii=True) + "\n").encode("ascii")


def _parse(line: bytes) -> dict | None:
    """The journal row on one line, or None when the line is not one (torn, damaged)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not (isinstance(row, dict) and list(row) == JOURNAL_COLUMNS and all(isinstance(v, str) for v in row.values())):
        return None
    return row


def _complete_records(path: Path, settings: dict) -> tuple[list[dict], int] | None:
    """(rows, byte length of the complete part) of a journal written with `settings`; None if it is not one."""
    data = path.read_bytes()
    header = _header(settings)
    if not data.startswith(header):
        return None
    rows, end = [], len(header)
    while (stop := data.find(b"\n", end)) >= 0:  # a record torn by a kill has no line end: never read
        row = _parse(data[end:stop])
        if row is None:
            break  # damaged: ignore it and anything after it
        rows.append(row)
        end = stop + 1
    return rows, end


def read_journals(output: Path, settings: dict) -> dict[str, dict]:
    """Rows already done, by key, from every journal of `output` written with the same settings."""
    done: dict[str, dict] = {}
    for path in journal_files(output):
        found = _complete_records(path, settings)
        if found is None:
            log.warning("%s was written with other settings; its rows are not reused", path)
            continue
        for row in found[0]:
            done.setdefault(row["key"], {c: row[c] for c in OUTPUT_COLUMNS})
    return done


class Journal:
    """Append-only journal file: `write(results)` appends rows, flushes and fsyncs (one call per batch)."""

    def __init__(self, path: Path, settings: dict) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        found = _complete_records(path, settings) if path.exists() else None
        if found is None:  # new journal, or one from other settings: start it over
            with open(path, "wb") as handle:
                handle.write(_header(settings))
                self._sync(handle)
        else:
            os.truncate(path, found[1])  # drop a torn last record before appending
        self._handle: BinaryIO = open(path, "ab")  # noqa: SIM115 - open for the journal's lifetime

    @staticmethod
    def _sync(handle: BinaryIO) -> None:
        handle.flush()
        os.fsync(handle.fileno())

    def write(self, rows: Iterable[dict]) -> None:
        self._handle.write(b"".join(_record({"key": row_key(r), **r}) for r in rows))
        self._sync(self._handle)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OutputError(OSError):
    """The output cannot be written (a folder, an unwritable or full disk) or another predict holds it."""


def _cannot_write(output: Path, err: OSError) -> OutputError:
    return OutputError(f"cannot write next to --output {output} ({err.strerror or err}); expected a writable folder "
                       f"with free space")


class OutputLock:
    """`<output>.lock`, held with flock while a run writes `output` (see the module docstring)."""

    def __init__(self, output: Path) -> None:
        self.output, self.path = output, output.with_name(f"{output.name}.lock")
        self.fd: int | None = None

    def __enter__(self) -> Self:
        if self.output.is_dir():
            raise OutputError(f"--output {self.output} is a folder; expected the path of a CSV file to write")
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            while self.fd is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise OutputError(f"another brainage predict (pid {holder}) is writing --output {self.output} "
                                      f"(lock {self.path}); wait for it to finish or choose another --output") from None
                if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self.fd = fd
                else:  # the holder removed the file between our open and flock: lock the new one
                    os.close(fd)
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
            os.fsync(self.fd)  # the probe: a full disk fails here, before any work
        except OutputError:
            raise
        except OSError as err:
            self.__exit__()
            raise _cannot_write(self.output, err) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # removed while still held: a waiting run re-checks the inode
            os.close(self.fd)
            self.fd = None


def record(journal: Journal, results: list[SubjectResult], routing_dir: Path | None = None,
           shape: tuple[int, int, int] | None = None) -> None:
    """Save the routing maps of a batch (when asked), then journal its rows: a journaled row has its map on disk."""
    if routing_dir is not None:
        for r in results:
            if r.error is None and r.routing:
                name = routing_filename(str(r.row["subject_id"]), result_row(r)["session"], r.index)
                save_routing(routing_dir / name, ScanRouting(r.affine, shape, r.predicted_age, tuple(r.routing)))
    journal.write(result_row(r) for r in results)


def assemble(keys: list[str], done: dict[str, dict]) -> list[dict]:
    """Rows in input order; raises RuntimeError when an input has no row (a lost row is a bug, never silent)."""
    missing = [k for k in keys if k not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(keys)} inputs have no prediction row (first: {missing[0]!r}); "
                           f"the journal is kept, rerun the same command to finish")
    return [done[k] for k in keys]


def write_csv_atomic(rows: list[dict], path: Path, columns: list[str]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see a half-written CSV."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def remove_journals(output: Path) -> None:
    for path in journal_files(output):
        path.unlink(missing_ok=True)


def summarise(rows: list[dict], card: dict) -> list[str]:
    """Human summary: counts, MAE against the predict-the-training-mean baseline, and what corrected_age is."""
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [f"{len(ok)} of {len(rows)} scans predicted" + (f", {len(rows) - len(ok)} failed" if len(ok) < len(rows)
                                                            else "")]
    correction = card.get("bias_correction")
    if correction:
        lines.append(f"corrected_age: age-bias correction (slope {correction['slope']:.3f}, intercept "
                     f"{correction['intercept']:.2f}, fitted on {correction.get('fit_on', '?')}, "
                     f"n={correction.get('n', '?')})")
    else:
        lines.append("corrected_age = predicted_age: the model has no bias correction (see `brainage calibrate`)")
    known = [r for r in ok if r["age"] != ""]
    mean_age = (card.get("training_cohort") or {}).get("age_mean")
    if known:
        ages = np.array([float(r["age"]) for r in known])
        mae = float(np.abs(np.array([float(r["predicted_age"]) for r in known]) - ages).mean())
        line = f"MAE on {len(known)} scans with known age: {mae:.2f} years"
        if correction:
            corrected = float(np.abs(np.array([float(r["corrected_age"]) for r in known]) - ages).mean())
            line += f" (corrected: {corrected:.2f})"
        lines.append(line)
        if mean_age is not None:
            base = float(np.abs(mean_age - ages).mean())
            lines.append(f"baseline (always predict the training mean age {mean_age:.1f}): MAE {base:.2f} years; "
                         f"model/baseline = {mae / base:.2f}")
    return lines

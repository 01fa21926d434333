"""Cohort comparisons: brain-age gap and expert usage per group of a participants/manifest column (diagnosis, site).

The brain-age gap (BAG = predicted - chronological age) is summarised per group as mean, sd and n, as brain-age
studies compare patient groups with controls (e.g. Cole & Franke 2017, Trends Neurosci 40:681). Expert usage per group
is the share of atlas voxels whose top-1 expert is e (ERMoE routing, arXiv 2511.10971), pooled over the group's scans:
a group whose anatomy differs routes its tokens differently.

Letter legend: s scans, e experts, r atlas regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainage.attribution.aggregate import RoutingAggregator

__all__ = ["MISSING_GROUP", "read_group_column", "bag_by_group", "expert_share_by_group"]

MISSING_GROUP = "n/a"
_MISSING = {"", "n/a", "na", "nan", "none", "null"}


def _clean(value: object) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    return MISSING_GROUP if text.lower() in _MISSING else text


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)


def read_group_column(inputs: Sequence[str], table: pd.DataFrame, column: str) -> list[str]:
    """The value of ``column`` for every row of ``table`` (``read_inputs`` columns), as strings; "n/a" when missing.

    Looked up, in order: the table itself (``site``, ``sex``), the ``participants.tsv`` of an input folder (matched
    on ``participant_id`` with or without ``sub-``), and CSV/TSV manifests given as inputs (matched on the image path,
    else on ``subject_id``).

    Raises:
        ValueError: naming the column and the columns found when no source has it.
    """
    if column in table.columns and column not in ("path", "subject_id", "session"):
        return [_clean(v) for v in table[column]]
    by_subject: dict[str, str] = {}
    by_path: dict[str, str] = {}
    seen: list[str] = []
    for item in inputs:
        source = Path(item)
        if source.is_dir() and (source / "participants.tsv").is_file():
            frame = _read(source / "participants.tsv")
            seen += [f"{source / 'participants.tsv'}: {list(frame.columns)}"]
            if column in frame.columns and "participant_id" in frame.columns:
                for pid, value in zip(frame["participant_id"].str.strip(), frame[column]):
                    by_subject[pid if pid.startswith("sub-") else f"sub-{pid}"] = _clean(value)
        elif source.suffix.lower() in (".csv", ".tsv") and source.is_file():
            frame = _read(source)
            seen += [f"{source}: {list(frame.columns)}"]
            if column not in frame.columns:
                continue
            if "path" in frame.columns:
                for image, value in zip(frame["path"].str.strip(), frame[column]):
                    image_path = Path(image) if Path(image).is_absolute() else source.parent / image
                    by_path[str(image_path)] = _clean(value)
            if "subject_id" in frame.columns:
                by_subject.update(zip(frame["subject_id"].str.strip(), map(_clean, frame[column])))
    if not by_subject and not by_path:
        raise ValueError(f"--group-by column {column!r} not found; the inputs have columns {list(table.columns)}"
                         + (f" and {'; '.join(seen)}" if seen else " and no participants.tsv or manifest"))
    return [by_path.get(str(path), by_subject.get(str(subject), MISSING_GROUP))
            for path, subject in zip(table["path"], table["subject_id"])]


def bag_by_group(predictions: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per group of ``predictions[column]``: n scans predicted, n with a known age, mean predicted age, mean and sd
    of the brain-age gap (years). Rows with status != ok are left out."""
    ok = predictions[predictions["status"] == "ok"]
    gap = pd.to_numeric(ok["brain_age_gap"], errors="coerce")
    predicted = pd.to_numeric(ok["predicted_age"], errors="coerce")
    rows = []
    for group in sorted(ok[column].astype(str).unique()):
        inside = (ok[column].astype(str) == group).to_numpy()
        g = gap[inside].dropna()
        rows.append({"group": group, "n": int(inside.sum()), "n_with_age": len(g),
                     "predicted_age_mean": float(predicted[inside].mean()),
                     "bag_mean": float(g.mean()) if len(g) else np.nan,
                     "bag_sd": float(g.std(ddof=1)) if len(g) > 1 else np.nan})
    return pd.DataFrame(rows, columns=["group", "n", "n_with_age", "predicted_age_mean", "bag_mean", "bag_sd"])


def expert_share_by_group(aggregator: RoutingAggregator, groups: Sequence[str]) -> pd.DataFrame:
    """Per group and MoE layer, the share of atlas voxels routed (top-1) to each expert, pooled over the group.

    Args:
        aggregator: the cohort's routing, one entry per routed scan.
        groups: the group of each of ``aggregator.subjects`` (same order).
    Returns:
        columns group, layer, scans, expert_0 ... expert_{e-1} (rows sum to 1).
    """
    if len(groups) != len(aggregator.subjects):
        raise ValueError(f"need one group per routed scan: {len(groups)} groups for {len(aggregator.subjects)} scans")
    e = aggregator.num_experts
    rows = []
    for layer in aggregator.layers:
        per_scan = np.stack([aggregator.subject_counts(s, layer).sum(axis=0) for s in aggregator.subjects])  # (s, e)
        for group in sorted(set(groups)):
            inside = np.asarray(groups) == group
            totals = per_scan[inside].sum(axis=0)  # (e,)
            share = totals / totals.sum() if totals.sum() > 0 else np.full(e, np.nan)
            rows.append({"group": group, "layer": layer, "scans": int(inside.sum()),
                         **{f"expert_{i}": float(share[i]) for i in range(e)}})
    return pd.DataFrame(rows, columns=["group", "layer", "scans", *[f"expert_{i}" for i in range(e)]])

"""Validation of attribution against planted ground truth (synthetic cohorts from ``brainage synth``).

The synthetic generator writes ``ground_truth.json`` naming the atlas regions that carry the age effect; a faithful
attribution ranks them first. We report precision@k with k = the number of planted regions by default.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GroundTruth", "load_ground_truth", "find_ground_truth", "precision_at_k"]


@dataclass(frozen=True)
class GroundTruth:
    path: Path
    regions: tuple[str, ...]  # names of the regions carrying the planted age effect
    null_regions: tuple[str, ...]  # regions left untouched by the generator
    indirect_regions: tuple[str, ...] = ()  # not planted but displaced by the planted effects
    effects: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (effect name, its regions), e.g. ventricle enlargement
    kinds: tuple[tuple[str, str], ...] = ()  # (effect name, "atrophy" | "intensity") where the file says
    displaced: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (atrophy effect name, neighbours it displaces)


def _names(entries: object, path: Path, key: str) -> tuple[str, ...]:
    if entries is None:
        return ()
    if isinstance(entries, dict):  # {"L-hippocampus": 40, ...}
        return tuple(str(name) for name in entries)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: {key!r} should be a list or a name -> label object, found {type(entries).__name__}")
    names = []
    for entry in entries:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("name", entry.get("region")), str):
            names.append(entry.get("name", entry.get("region")))
        else:
            raise ValueError(f"{path}: entry {entry!r} of {key!r} has no region name ('name' or 'region' key)")
    return tuple(names)


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Read ``ground_truth.json``.

    The planted regions are under ``signal_regions`` (``brainage synth``: ``{name: label}``) or ``regions``; each of
    ``signal_regions``/``regions``, ``null_regions`` and ``indirect_regions`` may be a ``{name: label}`` object, a list
    of names or a list of ``{"name": ...}`` objects; optional ``effects`` is a list of ``{"name", "regions"}`` with
    optional ``kind`` (atrophy / intensity) and ``displaced`` (the neighbours an atrophy moves).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file not found: {path}")
    data = json.loads(path.read_text())
    key = next((k for k in ("signal_regions", "regions") if isinstance(data, dict) and k in data), None)
    if key is None:
        found = list(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a JSON object with 'signal_regions' or 'regions', found {found}")
    effects = data.get("effects") or []
    if not isinstance(effects, list) or not all(isinstance(e, dict) and "regions" in e for e in effects):
        raise ValueError(f"{path}: 'effects' should be a list of objects with 'name' and 'regions'")
    names = [str(e.get("name", f"effect {i}")) for i, e in enumerate(effects)]
    return GroundTruth(path, _names(data[key], path, key), _names(data.get("null_regions"), path, "null_regions"),
                       _names(data.get("indirect_regions"), path, "indirect_regions"),
                       tuple((n, _names(e["regions"], path, "effects")) for n, e in zip(names, effects)),
                       tuple((n, str(e["kind"])) for n, e in zip(names, effects) if "kind" in e),
                       tuple((n, _names(e["displaced"], path, "displaced")) for n, e in zip(names, effects)
                             if "displaced" in e))


def find_ground_truth(inputs: Sequence[str]) -> Path | None:
    """The first ``ground_truth.json`` found in an input folder or next to an input file (manifest, glob)."""
    for item in inputs:
        root = Path(item)
        for candidate in (root / "ground_truth.json", root.parent / "ground_truth.json"):
            if candidate.is_file():
                return candidate
    return None


def precision_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int | None = None) -> float:
    """Fraction of the first ``k`` ranked names that are relevant; ``k`` defaults to the number of relevant names."""
    relevant = set(relevant)
    k = len(relevant) if k is None else k
    if k < 1:
        raise ValueError(f"precision@k needs k >= 1 (or a non-empty relevant set), got k={k}")
    return sum(name in relevant for name in list(ranked)[:k]) / k

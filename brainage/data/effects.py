"""Planted age effects of a synthetic cohort chosen by option: kind (atrophy or intensity), atlas regions, direction,
strength; parsed from a compact string or a JSON/YAML file, or drawn at random among eligible regions.

- **atrophy** is a shape change: the structure contracts (``shrink``, default) or expands (``grow``, default for the
  lateral ventricles) along its signed distance, as the demo cohort's hippocampus and ventricles do
  (:mod:`brainage.data.synth`); its neighbours are displaced and ``ground_truth.json`` lists them.
- **intensity** changes T1 contrast without moving anything: ``darken`` (towards CSF, default) or ``brighten``
  (towards white matter).

Amplitude at (biological) age ``a`` with ``t = strength * max(a - 20, 0)`` (our choice: linear from 20 y, of the
order of the lifespan changes of subcortical volumes and T1 contrast, Bethlehem et al. 2022, Nature 604:525; Salat et
al. 2009, NeuroImage 48:21):

- shrink: volume fraction ``1 - 0.005 t`` (0.68 at 85 y, close to the demo hippocampus' 0.67);
- grow: log volume ratio ``0.0175 t`` (x2 per 40 y, the demo ventricles' curve);
- darken / brighten: fraction ``0.005 t`` of the gap to the CSF / white-matter level (0.33 at 85 y).

String form (comma separated, one effect per item): ``KIND[:DIRECTION]:REGION[+REGION...][*STRENGTH]``, where a
region is an atlas name (``L-hippocampus``) or a bare label for both hemispheres (``hippocampus`` -> ``L-hippocampus``
and ``R-hippocampus``; ``brainstem`` -> ``B-brainstem``). Example: ``"atrophy:thalamusproper,intensity:L-precuneus*1.5,
atrophy:grow:lateral-ventricle"``. File form: a JSON or YAML list of ``{kind, regions, direction?, strength?}``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

__all__ = [
    "Direction",
    "EffectKind",
    "PlantedEffect",
    "draw_effects",
    "eligible_regions",
    "load_effects",
    "parse_counts",
    "parse_effects",
    "read_effects_option",
    "resolve_regions",
]

EffectKind = Literal["atrophy", "intensity"]
Direction = Literal["shrink", "grow", "darken", "brighten"]
DIRECTIONS: dict[str, tuple[str, str]] = {"atrophy": ("shrink", "grow"), "intensity": ("darken", "brighten")}
SHRINK_RATE = 0.005  # volume fraction lost per year after 20 y
GROWTH_RATE = 0.0175  # log volume ratio gained per year after 20 y
INTENSITY_RATE = 0.005  # fraction of the gap to the CSF (darken) or WM (brighten) level per year after 20 y
MIN_DRAW_MM3 = 2000.0  # regions smaller than this (1 mm atlas voxels) are not drawn at random: too few 3 mm voxels
_VENTRICLE = "lateral-ventricle"


@dataclass(frozen=True)
class PlantedEffect:
    """One planted age effect: ``kind`` on atlas ``regions`` (full names), ``direction``, ``strength`` (x rate)."""

    kind: EffectKind
    regions: tuple[str, ...]
    direction: Direction
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in DIRECTIONS:
            raise ValueError(f"effect kind must be one of {list(DIRECTIONS)}, got {self.kind!r}")
        if self.direction not in DIRECTIONS[self.kind]:
            raise ValueError(f"{self.kind} effects go {' or '.join(DIRECTIONS[self.kind])}, got {self.direction!r}")
        if not self.regions:
            raise ValueError(f"{self.kind} effect names no region")
        if not 0 < float(self.strength) <= 5:
            raise ValueError(f"effect strength must be in (0, 5], got {self.strength!r} for {self.regions}")

    @property
    def name(self) -> str:
        """``kind:direction:region+region`` (unique within a cohort)."""
        return f"{self.kind}:{self.direction}:{'+'.join(self.regions)}"

    def amplitude(self, age: float) -> float:
        """Volume fraction (shrink), log volume ratio (grow) or contrast fraction (darken/brighten) at ``age``."""
        t = float(self.strength) * max(float(age) - 20.0, 0.0)
        if self.direction == "shrink":
            return 1.0 - SHRINK_RATE * t
        if self.direction == "grow":
            return GROWTH_RATE * t
        return INTENSITY_RATE * t

    def functional_form(self) -> str:
        s = f"{self.strength:g} * max(age - 20, 0)"
        return {
            "shrink": f"volume fraction 1 - {SHRINK_RATE} * {s}",
            "grow": f"log volume ratio {GROWTH_RATE} * {s} (+ the subject's ventricle_log_offset)",
            "darken": f"fraction {INTENSITY_RATE} * {s} of (T1 - CSF level) lost",
            "brighten": f"fraction {INTENSITY_RATE} * {s} of (WM level - T1) gained",
        }[self.direction]

    def to_dict(self) -> dict:
        return asdict(self) | {"regions": list(self.regions)}


def resolve_regions(token: str, names: Iterable[str]) -> tuple[str, ...]:
    """Atlas names of one region token: a full name, or a bare label for every hemisphere that has it."""
    names = sorted(names)
    token = token.strip()
    if token in names:
        return (token,)
    sided = tuple(f"{h}-{token}" for h in ("L", "R", "B") if f"{h}-{token}" in names)
    if sided:
        return sided
    bare = sorted({n.split("-", 1)[1] for n in names if "-" in n})
    close = difflib.get_close_matches(token, names + bare, n=3)
    raise ValueError(f"unknown atlas region {token!r}" + (f"; did you mean {', '.join(close)}?" if close else
                     "; expected an atlas name such as L-hippocampus or a bare label such as hippocampus"))


def _default_direction(kind: str, regions: Sequence[str]) -> str:
    if kind == "atrophy":
        return "grow" if all(r.endswith(_VENTRICLE) for r in regions) else "shrink"
    return "darken"


def _effect(kind: str, regions: Sequence[str], direction: str | None, strength: float, names: Iterable[str]
            ) -> PlantedEffect:
    if kind not in DIRECTIONS:
        close = difflib.get_close_matches(str(kind), list(DIRECTIONS), n=1)
        raise ValueError(f"effect kind must be one of {list(DIRECTIONS)}, got {kind!r}"
                         + (f"; did you mean {close[0]!r}?" if close else ""))
    names = list(names)
    resolved = tuple(dict.fromkeys(r for token in regions for r in resolve_regions(token, names)))
    return PlantedEffect(kind, resolved, direction or _default_direction(kind, resolved), float(strength))  # type: ignore[arg-type]


def _check_disjoint(effects: Sequence[PlantedEffect]) -> tuple[PlantedEffect, ...]:
    seen: dict[str, str] = {}
    for effect in effects:
        for region in effect.regions:
            if region in seen:
                raise ValueError(f"region {region} is planted twice ({seen[region]} and {effect.name}); plant each "
                                 "region once")
            seen[region] = effect.name
    return tuple(effects)


def parse_effects(text: str, names: Iterable[str]) -> tuple[PlantedEffect, ...]:
    """Effects of the string form ``KIND[:DIRECTION]:REGION[+REGION...][*STRENGTH]`` (comma separated)."""
    names = list(names)
    effects = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        body, _, strength = item.partition("*")
        parts = body.split(":")
        if len(parts) not in (2, 3) or not parts[-1]:
            raise ValueError(f"effect {item!r}: expected KIND[:DIRECTION]:REGION[+REGION...][*STRENGTH], e.g. "
                             "atrophy:hippocampus or intensity:darken:L-precuneus*1.5")
        try:
            value = float(strength) if strength else 1.0
        except ValueError:
            raise ValueError(f"effect {item!r}: strength {strength!r} is not a number") from None
        effects.append(_effect(parts[0], parts[-1].split("+"), parts[1] if len(parts) == 3 else None, value, names))
    if not effects:
        raise ValueError(f"no effect in {text!r}")
    return _check_disjoint(effects)


def load_effects(path: str | Path, names: Iterable[str]) -> tuple[PlantedEffect, ...]:
    """Effects from a JSON or YAML list of ``{kind, regions (list or str), direction?, strength?}`` objects."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, list) or not all(isinstance(e, Mapping) and "kind" in e and "regions" in e for e in data):
        raise ValueError(f"{path}: expected a list of objects with 'kind' and 'regions' (and optional 'direction', "
                         f"'strength'), found {type(data).__name__}")
    names = list(names)
    effects = []
    for entry in data:
        unknown = set(entry) - {"kind", "regions", "direction", "strength"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)} in {dict(entry)}")
        regions = [entry["regions"]] if isinstance(entry["regions"], str) else list(entry["regions"])
        effects.append(_effect(entry["kind"], regions, entry.get("direction"), entry.get("strength", 1.0), names))
    return _check_disjoint(effects)


def read_effects_option(value: str, names: Iterable[str]) -> tuple[PlantedEffect, ...]:
    """``--effects``: a .json/.yaml/.yml file or the string form."""
    if value.lower().endswith((".json", ".yaml", ".yml")):
        if not Path(value).is_file():
            raise FileNotFoundError(f"effects file not found: {value}")
        return load_effects(value, names)
    return parse_effects(value, names)


def eligible_regions(kind: str, volumes_mm3: Mapping[str, float]) -> list[str]:
    """Bare labels that may be drawn for ``kind``: both hemispheres present and each >= MIN_DRAW_MM3; the lateral
    ventricles are atrophy-only (they grow), the brainstem is never drawn (it straddles the field of view's edge)."""
    labels = sorted({n.split("-", 1)[1] for n in volumes_mm3 if n.startswith(("L-", "R-"))})
    ok = [lab for lab in labels if min(volumes_mm3.get(f"L-{lab}", 0.0), volumes_mm3.get(f"R-{lab}", 0.0))
          >= MIN_DRAW_MM3]
    return [lab for lab in ok if kind == "atrophy" or lab != _VENTRICLE]


def draw_effects(counts: Mapping[str, int], seed: int, volumes_mm3: Mapping[str, float]) -> tuple[PlantedEffect, ...]:
    """Draw ``counts[kind]`` bilateral effects per kind at random (``seed``) among the eligible labels, each label
    used once, default direction and strength 1."""
    unknown = set(counts) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"random effect kinds must be among {list(DIRECTIONS)}, got {sorted(unknown)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
    taken: set[str] = set()
    effects = []
    for kind in DIRECTIONS:  # fixed order: the draw depends on the seed only
        n = int(counts.get(kind, 0))
        pool = [lab for lab in eligible_regions(kind, volumes_mm3) if lab not in taken]
        if n < 0 or n > len(pool):
            raise ValueError(f"cannot draw {n} {kind} effects among {len(pool)} eligible regions")
        for label in rng.choice(pool, size=n, replace=False) if n else []:
            taken.add(str(label))
            effects.append(_effect(kind, [str(label)], None, 1.0, volumes_mm3))
    return _check_disjoint(effects)


def parse_counts(text: str) -> dict[str, int]:
    """``"atrophy=2,intensity=1"`` -> ``{"atrophy": 2, "intensity": 1}``."""
    counts = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        kind, _, n = item.partition("=")
        if kind not in get_args(EffectKind) or not n.isdigit():
            raise ValueError(f"random effects {item!r}: expected KIND=COUNT with KIND in {list(DIRECTIONS)}, e.g. "
                             "atrophy=2,intensity=1")
        counts[kind] = int(n)
    if not counts or sum(counts.values()) == 0:
        raise ValueError(f"random effects {text!r} draw nothing")
    return counts

"""Declared minimum versions cover the APIs the code calls."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def test_scipy_minimum_has_false_discovery_control():
    """scipy.stats.false_discovery_control (used for the report's q values) appeared in scipy 1.11."""
    uses = [p for p in (ROOT / "brainage").rglob("*.py") if "false_discovery_control" in p.read_text()]
    assert uses
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    scipy = next(Requirement(d) for d in project["dependencies"] if re.match(r"scipy\b", d))
    assert Version("1.10.1") not in scipy.specifier and Version("1.11.0") in scipy.specifier

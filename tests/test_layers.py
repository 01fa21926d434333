"""Imports go one way (nnU-Net's stages read the previous stage's output, none imports a sibling): the on-disk
contracts, the reference space, data and model at the bottom; training, predict and prepare above them and not
importing each other; attribution a pure library that never runs or loads the model; report, calibrate and the CLI
on top. Every import statement of the package (function-level ones included) is walked with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "brainage"
BOTTOM = {"contracts", "reference"}
# unit -> the brainage units it may import (the package root, `brainage.__version__`, is open to all)
ALLOWED: dict[str, set[str]] = {
    "contracts": set(),
    "reference": {"contracts"},
    "tracking": {"contracts"},  # the one module that imports mlflow
    "model": {"contracts"},
    "data": {*BOTTOM},
    "training": {*BOTTOM, "data", "model", "tracking"},
    "predict": {*BOTTOM, "data", "model", "tracking"},
    "prepare": {*BOTTOM, "data"},
    "attribution": {*BOTTOM, "data"},
    "report": {*BOTTOM, "data", "model", "tracking", "predict", "attribution"},
    "calibrate": {*BOTTOM, "data", "predict"},
    "cli": set(),  # dispatches by module name (importlib), imports no command eagerly
}
# third-party packages kept out of units: mlflow only through `tracking`; no Lightning below training/predict
FORBIDDEN_EXTERNAL: dict[str, set[str]] = {
    "mlflow": set(ALLOWED) - {"tracking"},
    "lightning": {"contracts", "reference", "model", "attribution", "prepare", "report"},
}


def _unit(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file; `from brainage import x` counts as brainage.x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "brainage":
                found += [(node.lineno, f"brainage.{alias.name}") for alias in node.names]
    return found


def _files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_unit_has_a_rule():
    assert {_unit(p) for p in _files()} <= set(ALLOWED)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    unit = _unit(path)
    wrong = []
    for line, module in _imports(path):
        top, _, rest = module.partition(".")
        if top == "brainage" and rest and not rest.startswith("__"):
            target = rest.split(".")[0]
            if target != unit and target not in ALLOWED[unit]:
                wrong.append(f"line {line}: {unit} imports {module} ({unit} may import {sorted(ALLOWED[unit])})")
        elif unit in FORBIDDEN_EXTERNAL.get(top, set()):
            wrong.append(f"line {line}: {unit} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_walker_sees_function_level_imports(tmp_path):
    """The check can fail: an import hidden inside a function is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from brainage.predict import load_model\n    import mlflow\n")
    assert [m for _, m in _imports(sample)] == ["brainage.predict", "mlflow"]

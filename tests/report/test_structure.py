"""The report stays a pipeline of small functions, and attribution stays a library that never runs the model."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_FUNCTION_LINES = 80  # issue 15: no function over about 80 lines in brainage/report
# attribution computes on arrays: it neither runs nor loads a model (issue 15, layering)
NOT_IN_ATTRIBUTION = ("torch", "lightning", "captum", "brainage.predict", "brainage.training", "brainage.report",
                      "brainage.cli")


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("path", sorted((ROOT / "brainage" / "report").glob("*.py")), ids=lambda p: p.name)
def test_report_functions_are_at_most_80_lines(path):
    long = [f"{name} ({lines} lines)" for name, lines in _functions(path) if lines > MAX_FUNCTION_LINES]
    assert not long, f"{path.relative_to(ROOT)}: split {', '.join(long)} (at most {MAX_FUNCTION_LINES} lines)"


def test_the_length_check_sees_long_functions(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert _functions(tmp_path / "long.py") == [("long", MAX_FUNCTION_LINES + 1), ("short", 2)]


@pytest.mark.parametrize("path", sorted((ROOT / "brainage" / "attribution").glob("*.py")), ids=lambda p: p.name)
def test_attribution_never_imports_the_model_runners(path):
    bad = sorted(m for m in _imports(path) if any(m == b or m.startswith(f"{b}.") for b in NOT_IN_ATTRIBUTION))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: model calls belong in brainage/report/collect.py"

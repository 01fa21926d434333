"""Static checks of what CI cannot build or run here: the Dockerfile, the Makefile, .ci/run, the layout rules."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_base_install_entrypoint():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM pytorch/pytorch:\S+cuda\S+", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    assert 'ENTRYPOINT ["brainage"]' in text
    for copied in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / copied).exists(), copied


def test_pyproject_script_extras_and_permissive_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["brainage"] == "brainage.cli:main"
    assert "dev" in project["optional-dependencies"]
    torch_req = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert "==" not in torch_req  # users get the normal PyPI build; only the Makefile pins the CPU wheel


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test$", ci, re.M) and "make test" in readme and "make demo" in readme


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_model_imports_no_lightning_or_mlflow():
    for path in (ROOT / "brainage/model").rglob("*.py"):
        assert not _imports(path) & {"lightning", "pytorch_lightning", "mlflow"}, path


def test_mlflow_imported_in_one_module_only():
    users = [p.relative_to(ROOT) for p in (ROOT / "brainage").rglob("*.py") if "mlflow" in _imports(p)]
    assert users == [Path("brainage/tracking.py")]


def test_report_rendering_imports_no_torch():
    for name in ("render", "figures", "sections", "analysis", "write", "progress", "settings"):
        path = ROOT / "brainage" / "report" / f"{name}.py"
        assert "torch" not in _imports(path), path
    code = "import sys, brainage.report.sections, brainage.report.write; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert loaded.stdout.strip() == "False"  # not even through other modules: only collect runs the model

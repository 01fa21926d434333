"""The Dockerfile, checked statically (no Docker engine runs here): the base image's torch satisfies what the
dependencies need, the install cannot swap torch, the build's own checks are valid code (run here with this venv's
torch), the image does not run as root by default, and the `prepare` extra is offered."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "Dockerfile").read_text()
# instructions with their continuation lines joined
INSTRUCTIONS = [re.sub(r"\\\n\s*", " ", m) for m in re.findall(r"^[A-Z]+ (?:.*\\\n)*.*$", TEXT, re.M)]


def _base_torch() -> Version:
    (base,) = re.findall(r"^FROM (\S+)", TEXT, re.M)
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda[\d.]+-cudnn\d+-runtime", base)
    assert match, f"base {base!r}: expected an official pytorch/pytorch:<torch>-cuda<x>-cudnn<y>-runtime tag"
    return Version(match.group(1))


def _torch_requirements() -> dict[str, Requirement]:
    """The torch requirement of brainage (pyproject) and of each installed dependency that declares one."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {"brainage": next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "torch")}
    for package in ("monai", "lightning", "torchmetrics", "deepbet"):
        for text in requires(package) or []:
            requirement = Requirement(text)
            if requirement.name == "torch" and requirement.marker is None:
                found[package] = requirement
    return found


def test_base_torch_satisfies_every_dependency():
    torch_version = _base_torch()
    needs = _torch_requirements()
    assert "monai" in needs and Version("2.8") in needs["monai"].specifier  # the requirement that broke 2.5.1
    for package, requirement in needs.items():
        assert requirement.specifier.contains(torch_version, prereleases=True), (package, str(requirement))


def _python_code(instruction: str) -> str:
    """The program of the `python -c "..."` in a RUN instruction, as the shell hands it to python."""
    words = shlex.split(instruction.removeprefix("RUN "))
    return words[words.index("-c") + 1]


def test_install_is_pinned_to_the_base_torch():
    (install,) = [i for i in INSTRUCTIONS if "pip install" in i]
    assert "--constraint /tmp/torch-constraint.txt" in install
    written = subprocess.run([sys.executable, "-c", _python_code(install)], capture_output=True, text=True, check=True)
    import torch

    assert written.stdout.strip() == f"torch=={torch.__version__.split('+')[0]}"


def test_build_runs_a_forward_pass_that_works():
    (check,) = [i for i in INSTRUCTIONS if "BrainAgeViT" in i]
    assert check.startswith("RUN python -c") and "import torch" in check
    result = subprocess.run([sys.executable, "-c", _python_code(check)], capture_output=True, text=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("forward pass ok")


def test_runs_as_a_created_user_not_root():
    users = re.findall(r"^USER (\S+)", TEXT, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(rf"useradd .*\b{users[-1]}\b", TEXT)
    assert TEXT.index(f"USER {users[-1]}") > TEXT.index("pip install")  # installed as root, run as the user


@pytest.mark.parametrize("extras, expected", [("", "."), ("prepare", ".[prepare]")])
def test_prepare_extra_is_a_build_arg(extras, expected):
    assert re.search(r'^ARG EXTRAS=""$', TEXT, re.M)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "prepare" in project["optional-dependencies"]
    (install,) = [i for i in INSTRUCTIONS if "pip install" in i]
    target = re.search(r'pip install .*?("\.[^"]*")', install).group(1)
    shell = subprocess.run(["sh", "-c", f"printf %s {target}"], env={"EXTRAS": extras}, capture_output=True, text=True)
    assert shell.stdout == expected

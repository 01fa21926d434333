"""Every command answers --help with examples; unknown commands fail clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from brainage.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "frobnicate" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_with_examples(command):
    result = subprocess.run([sys.executable, "-m", "brainage.cli", command, "--help"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "example" in result.stdout.lower()
    assert "brainage" in result.stdout

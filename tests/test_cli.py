"""Every command answers --help with examples; unknown commands fail clearly."""

from __future__ import annotations

import importlib
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
def test_every_command_has_help_with_examples(command, capsys):
    """In-process (the subprocess entry point is run by tests/test_help_examples.py, slow tier)."""
    try:
        code = main([command, "--help"])
    except SystemExit as stop:  # LightningCLI and argparse exit after printing help
        code = stop.code
    out = capsys.readouterr().out
    assert code in (0, None), out
    assert "example" in out.lower()
    assert "brainage" in out


def test_misspelt_option_is_reported_before_missing_required_ones(capsys):
    """argparse says "required: --input" for `--inptu`; brainage names the unknown option (and the near one)."""
    assert main(["predict", "--model", "m.ckpt", "--inptu", "scans", "--output", "p.csv"]) == 2
    err = capsys.readouterr().err
    assert "brainage predict: error: unrecognized option --inptu (did you mean --input?)" in err
    assert "required" not in err
    assert main(["data", "check", "ds", "--valid"]) == 2  # abbreviations are not accepted either
    assert "unrecognized option --valid (did you mean --validate?)" in capsys.readouterr().err


def test_data_alone_names_the_sub_command(capsys):
    assert main(["data"]) == 2
    err = capsys.readouterr().err
    assert "expected a sub-command: `brainage data check DATASET`" in err and "required" not in err


def test_fit_help_imports_neither_monai_nor_mlflow():
    """`brainage fit --help` builds the LightningCLI parser: MONAI (~6 s with the mlflow it imports) waits for use."""
    code = ("import sys, brainage.training.cli, brainage.data.datamodule, brainage.tracking; "
            "print(sorted(m for m in ('monai', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["report", "calibrate", "predict"])
def test_worker_default_in_help_is_the_one_the_code_uses(command):
    """The decode workers default to min(4, CPUs - 1), at least 1 (brainage.predict.stream.default_workers)."""
    from brainage.cli import _option_parser

    module = importlib.import_module(COMMANDS[command][0])
    text = " ".join(_option_parser(module).format_help().split())
    assert "(default: min(4, CPUs - 1), at least 1; 0 = none)" in text and "min(4, CPUs))" not in text


def test_fit_validate_and_test_show_the_same_examples():
    """tests/test_help_examples.py runs the examples of `fit --help` once for the three commands."""
    from brainage.training.cli import EPILOG, _parser_kwargs

    kwargs = _parser_kwargs()
    assert kwargs["epilog"] == EPILOG and all(kwargs[c]["epilog"] == EPILOG for c in ("fit", "validate", "test"))


@pytest.mark.parametrize(("env", "expected"), [("3", 3), ("", None), ("0", None), ("two", None)])
def test_predict_threads_default_to_omp_num_threads_when_set(monkeypatch, env, expected):
    """`predict --threads` unset: a positive $OMP_NUM_THREADS (a shared machine, pytest-xdist), else every CPU."""
    from brainage.predict.stream import available_cpus, default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", env)
    assert default_threads() == (expected or available_cpus())

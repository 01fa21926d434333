"""The `brainage` console script: one entry point, one module per stage (as nnU-Net does).

`fit`, `validate` and `test` go to the LightningCLI; every other command is a small argparse program whose
`main(argv) -> int` lives next to the code it drives.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys

__all__ = ["main", "unknown_option"]

# command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("brainage.prepare.command",
                "raw T1 -> N4, skull strip, affine to ICBM152, MNI grid + QC manifest (needs brainage[prepare])"),
    "synth": ("brainage.data.synth", "write a synthetic T1 cohort in MNI space (BIDS layout, ground truth)"),
    "fit": ("brainage.training.cli", "train a model from a YAML config (LightningCLI)"),
    "validate": ("brainage.training.cli", "evaluate a checkpoint on the validation split (LightningCLI)"),
    "test": ("brainage.training.cli", "evaluate a checkpoint on the test split (LightningCLI)"),
    "predict": ("brainage.predict.command", "batch brain-age prediction over NIfTI files -> predictions.csv"),
    "report": ("brainage.report.command", "expert-region attribution report (HTML, tables, NIfTI maps)"),
    "calibrate": ("brainage.calibrate", "refit the age-bias correction of a model on your own controls"),
    "data": ("brainage.data.check", "inspect a dataset: `brainage data check DATASET` lists found and dropped scans"),
}

USAGE = """usage: brainage <command> [options]

Brain age from 3D T1-weighted MRI (research use only, not for diagnosis).

commands:
{commands}

Run `brainage <command> --help` for the options and examples of each command.

examples:  (the demo's steps; `make demo` runs them as pipelines/demo.sh)
  brainage synth --n 400 --seed 1 --out demo-output/cohort
  brainage fit --config configs/demo.yaml
  brainage predict --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv \
                   --output demo-output/predictions.csv
  brainage report --model demo-output/train/checkpoints/best.ckpt --input demo-output/train/test.csv \
                  --predictions demo-output/predictions.csv --out demo-output/report
"""


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    return USAGE.format(commands="\n".join(f"  {c:<{width}}  {s}" for c, (_, s) in COMMANDS.items()))


def _option_parser(module: object) -> argparse.ArgumentParser | None:
    """The argparse parser of a command module (`build_parser`, or `_parser` in prepare and synth)."""
    factory = getattr(module, "build_parser", None) or getattr(module, "_parser", None)
    return factory() if callable(factory) else None


def unknown_option(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The first option of `argv` that `parser` (or the sub-command parser argv selects) does not define exactly,
    with a suggestion; None when all are known.

    argparse checks required arguments before it reports unknown ones (`--inptu x` said "required: --input") and
    accepts abbreviations; this check runs first and takes only exact option names.
    """
    known = parser._option_string_actions
    commands = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    for index, token in enumerate(argv):
        if token == "--":
            return None
        if token in commands:
            return unknown_option(commands[token], argv[index + 1:])
        if token.startswith("-") and not re.fullmatch(r"-\d+(\.\d*)?([eE][-+]?\d+)?", token):
            name = token.split("=", 1)[0]
            if name not in known:
                close = difflib.get_close_matches(name, [k for k in known if k.startswith("--")], n=1)
                return f"unrecognized option {name}" + (f" (did you mean {close[0]}?)" if close else "")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] in {"-V", "--version"}:
        from brainage import __version__

        print(f"brainage {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"brainage: unknown command {command!r}; expected one of {', '.join(COMMANDS)}.\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if module.__name__ == "brainage.training.cli":  # jsonargparse reports unknown keys itself
        return module.main([command, *rest])
    parser = _option_parser(module)
    problem = unknown_option(parser, rest) if parser is not None else None
    if problem:
        print(parser.format_usage().rstrip(), file=sys.stderr)
        print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        return 2
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())

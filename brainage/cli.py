"""The `brainage` console script: one entry point, one module per stage (as nnU-Net does).

`fit`, `validate` and `test` go to the LightningCLI; every other command is a small argparse program whose
`main(argv) -> int` lives next to the code it drives.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main"]

# command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("brainage.prepare.command",
                "raw T1 -> N4, skull strip, affine to ICBM152, MNI grid + QC manifest (needs brainage[prepare])"),
    "synth": ("brainage.data.synth", "write a synthetic T1 cohort in MNI space (BIDS layout, ground truth)"),
    "fit": ("brainage.training.cli", "train a model from a YAML config (LightningCLI)"),
    "validate": ("brainage.training.cli", "evaluate a checkpoint on the validation split (LightningCLI)"),
    "test": ("brainage.training.cli", "evaluate a checkpoint on the test split (LightningCLI)"),
    "predict": ("brainage.predict", "batch brain-age prediction over NIfTI files -> predictions.csv"),
    "report": ("brainage.report.command", "expert-region attribution report (HTML, tables, NIfTI maps)"),
    "calibrate": ("brainage.calibrate", "refit the age-bias correction of a model on your own controls"),
    "data": ("brainage.data.check", "inspect a dataset: `brainage data check DATASET` lists found and dropped scans"),
}

USAGE = """usage: brainage <command> [options]

Brain age from 3D T1-weighted MRI (research use only, not for diagnosis).

commands:
{commands}

Run `brainage <command> --help` for the options and examples of each command.

examples:
  brainage synth --n 200 --out cohort
  brainage fit --config configs/demo.yaml
  brainage predict --model demo-output/train/checkpoints/best.ckpt --input cohort --output predictions.csv
  brainage report --model demo-output/train/checkpoints/best.ckpt --input cohort --out report
"""


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    return USAGE.format(commands="\n".join(f"  {c:<{width}}  {s}" for c, (_, s) in COMMANDS.items()))


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
    if module.__name__ == "brainage.training.cli":
        return module.main([command, *rest])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())

"""`brainage fit | validate | test`: the LightningCLI over BrainAgeModule and BrainAgeDataModule.

Configs are layered YAML (`configs/{model,data,trainer,logger,experiment}/`); pass several `--config` files and
override any value on the command line, e.g. `--trainer.max_epochs 5`. `--print_config` shows the resolved config.
"""

from __future__ import annotations

import warnings

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningCLI

from brainage.data.datamodule import BrainAgeDataModule
from brainage.training.callbacks import TrackedConfig
from brainage.training.module import BrainAgeModule

__all__ = ["BrainAgeCLI", "main"]


class RawDescriptionHelpFormatter(DefaultHelpFormatter):
    """Keep the examples' line breaks."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))

EPILOG = """examples:
  brainage fit --config configs/demo.yaml
  brainage fit --config configs/demo.yaml --trainer.max_epochs 5 --model.net.init_args.moe.top_k 1
  brainage fit --config configs/trainer/cpu.yaml --config configs/model/vit_ermoe_tiny.yaml \\
               --data configs/data/synthetic.yaml --config configs/logger/mlflow.yaml --data.root cohort
  brainage test --config configs/demo.yaml --ckpt_path demo-output/train/checkpoints/best.ckpt
  brainage fit --config configs/demo.yaml --print_config
"""


def _parser_kwargs() -> dict:
    """The same description and examples on `brainage --help` and on each of fit/validate/test --help."""
    common = {"description": __doc__, "epilog": EPILOG, "formatter_class": RawDescriptionHelpFormatter}
    return {"prog": "brainage", **common, **{command: dict(common) for command in ("fit", "validate", "test")}}


class BrainAgeCLI(LightningCLI):
    """LightningCLI with brainage's module, datamodule, tracked config and examples in --help."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(BrainAgeModule, BrainAgeDataModule, save_config_callback=TrackedConfig,
                         save_config_kwargs={"overwrite": True, "save_to_log_dir": False}, seed_everything_default=42,
                         parser_kwargs=_parser_kwargs(), args=args, run=run,
                         auto_configure_optimizers=False)


def main(argv: list[str] | None = None) -> int:
    # `brainage` passes the arguments explicitly; Lightning would warn that sys.argv holds them too
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    BrainAgeCLI(args=argv)
    return 0

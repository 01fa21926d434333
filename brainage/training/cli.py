"""`brainage fit | validate | test`: the LightningCLI over BrainAgeModule and BrainAgeDataModule.

Configs are layered YAML (`configs/{model,data,trainer,logger,experiment}/`); pass several `--config` files and
override any value on the command line, e.g. `--trainer.max_epochs 5`. `--print_config` shows the resolved config.

Everything a user can get wrong is checked before a run starts: a `--ckpt_path` that is missing or not a brainage
checkpoint, a configuration the classes refuse (e.g. `top_k` above `num_experts`), a data root that is missing, empty
or too small, a model grid that differs from the data grid. Each ends the command with one line on stderr and exit
status 2, and no MLflow run is created: the logger creates its run lazily at the Trainer's first hook, and the data
is read and preprocessed (`datamodule.setup`) in `before_fit`/`before_validate`/`before_test`, before that hook.

Our choices (MLflow, `brainage.tracking`):
- run name `<net>-<mlp or router>-e<experts>k<top-k>[-<command>]-<YYYYmmdd-HHMMSS>-<4 hex>`, unless the config names
  the run; the hex comes from `secrets`: MLflow's own generated names come from the `random` module, which
  `seed_everything` reseeds, so every run of a store got the same name.
- params: the module's and datamodule's hyperparameters (Lightning), the network's constructor arguments as
  `net/...` (router, experts, top-k, rank, width, depth, pooling, moe_layers ...), the Trainer's scalar settings as
  `trainer/...` and `seed_everything`.
- after `fit`, when the datamodule has a non-empty test split, `trainer.test` runs once with the best checkpoint
  (selected on the validation split; the test split selects nothing) and logs `test/*` to the same run. FitSummary
  logs the best epoch's validation metrics as `best/val_*` and `best/epoch`.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningCLI

from brainage import tracking
from brainage.contracts.checkpoint import CheckpointError, read_checkpoint
from brainage.data.datamodule import BrainAgeDataModule
from brainage.training.callbacks import TrackedConfig
from brainage.training.module import BrainAgeModule

__all__ = ["BrainAgeCLI", "ConfigError", "main", "run_label"]

# --ckpt_path values Lightning resolves itself (not file paths)
_CKPT_KEYWORDS = {"last", "best", "hpc", "registry"}


class ConfigError(ValueError):
    """Bad arguments, configuration or data, found before any run starts; the message is one line for the user."""


class RawDescriptionHelpFormatter(DefaultHelpFormatter):
    """Keep the examples' line breaks."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


# every path is one that `make demo` (pipelines/demo.sh) writes; tests/test_help_examples.py runs each line
EPILOG = """examples:
  brainage fit --config configs/demo.yaml
  brainage fit --config configs/demo.yaml --trainer.max_epochs 5 --model.lr 3e-4
  brainage fit --config configs/trainer/cpu.yaml --config configs/model/vit_ermoe_tiny.yaml \\
               --data configs/data/synthetic.yaml --config configs/logger/mlflow.yaml --data.root demo-output/cohort
  brainage fit --config configs/demo.yaml --ckpt_path demo-output/train/checkpoints/last.ckpt   # resume
  brainage test --config configs/demo.yaml --ckpt_path demo-output/train/checkpoints/best.ckpt
  brainage validate --config configs/demo.yaml --ckpt_path demo-output/train/checkpoints/best.ckpt
  brainage fit --config configs/demo.yaml --print_config

exit status: 0 done; 2 bad arguments, configuration, checkpoint or data (one line on stderr, no MLflow run created).
"""


def _parser_kwargs() -> dict:
    """The same description and examples on `brainage --help` and on each of fit/validate/test --help."""
    common = {"description": __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
              "epilog": EPILOG, "formatter_class": RawDescriptionHelpFormatter}
    return {"prog": "brainage", **common, **{command: dict(common) for command in ("fit", "validate", "test")}}


def _root_cause(err: BaseException) -> str:
    """The message of the innermost exception of a chain (jsonargparse wraps a constructor's ValueError twice)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return " ".join(str(err).split()) or type(err).__name__


def run_label(net: object, command: str = "fit") -> str:
    """`vit-eigen-e8k2`, `vit-dense`, `sfcn` (+ `-validate`/`-test`): what a run trained, for its MLflow name."""
    init_args = getattr(net, "init_args", {}) or {}
    name = type(net).__name__
    parts = ["vit" if name == "BrainAgeViT" else name.lower()]
    moe = init_args.get("moe") or {}
    if init_args.get("mlp") == "moe" and moe:
        parts += [str(moe.get("router", "moe")), f"e{moe.get('num_experts', '?')}k{moe.get('top_k', '?')}"]
    elif init_args.get("mlp"):
        parts.append(str(init_args["mlp"]))
    return "-".join(parts + ([] if command == "fit" else [command]))


def _scalars(namespace: object) -> dict:
    """The str/int/float/bool entries of a config namespace (objects such as callbacks and loggers left out)."""
    items = vars(namespace).items() if hasattr(namespace, "__dict__") else dict(namespace or {}).items()
    return {k: v for k, v in items if isinstance(v, (str, int, float, bool))}


class BrainAgeCLI(LightningCLI):
    """LightningCLI with brainage's module, datamodule, tracked config, examples in --help and checks before runs."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(BrainAgeModule, BrainAgeDataModule, save_config_callback=TrackedConfig,
                         save_config_kwargs={"overwrite": True, "save_to_log_dir": False}, seed_everything_default=42,
                         parser_kwargs=_parser_kwargs(), args=args, run=run,
                         auto_configure_optimizers=False)

    # -- checks before anything is instantiated or run ----------------------------------------------------------------
    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and str(ckpt_path) not in _CKPT_KEYWORDS and not str(ckpt_path).startswith("registry:"):
            # before Lightning reads the file's hyperparameters (a foreign file would end in torch.load's advice)
            if not Path(ckpt_path).is_file():
                raise ConfigError(f"--ckpt_path {ckpt_path}: file not found; expected a checkpoint written by "
                                  "`brainage fit` (e.g. <default_root_dir>/checkpoints/last.ckpt)")
            try:
                read_checkpoint(ckpt_path)
            except CheckpointError as err:
                raise ConfigError(f"--ckpt_path: {err}") from None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:  # a constructor refused a value (jsonargparse chains it twice)
            raise ConfigError(f"invalid configuration: {_root_cause(err)}") from err

    def _check_and_name(self, stage: str, command: str) -> None:
        """Read and preprocess the data and check the model fits it, then name the run: all before it exists."""
        dm = self.datamodule
        dm.trainer = self.trainer  # as trainer.fit would: setup writes the split manifests and follows the progress bar
        try:
            self.model.check_data(dm)  # the grids first: setup preprocesses the whole cohort
            dm.setup(stage)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(" ".join(str(err).split())) from err
        logger = self.trainer.logger
        if tracking.is_tracker(logger):
            tracking.name_run(logger, run_label(self.model.net, command))
            trainer = _scalars(self.config[command].get("trainer"))
            logger.log_hyperparams({"net": {"name": type(self.model.net).__name__,
                                            **getattr(self.model.net, "init_args", {})},
                                    "trainer": trainer, "seed_everything": self.config[command].seed_everything})

    def before_fit(self) -> None:
        self._check_and_name("fit", "fit")

    def before_validate(self) -> None:
        self._check_and_name("validate", "validate")

    def before_test(self) -> None:
        self._check_and_name("test", "test")

    def after_fit(self) -> None:
        """Test the best checkpoint once on the held-out split, into the same run (selection used validation only)."""
        callback = self.trainer.checkpoint_callback
        best = callback.best_model_path if callback is not None else ""
        if self.trainer.interrupted or not best or not len(self.datamodule.datasets.get("test", ())):
            return
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best, verbose=False)
        values = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("test/")}
        if "test/mae" in values and self.trainer.is_global_zero:
            n = len(self.datamodule.datasets["test"])
            print(f"test MAE:        {values['test/mae']:.2f} years (held-out test split, n={n}, best checkpoint)")


def main(argv: list[str] | None = None) -> int:
    # `brainage` passes the arguments explicitly; Lightning would warn that sys.argv holds them too
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    command = (argv or ["fit"])[0]
    try:
        BrainAgeCLI(args=argv)
    except ConfigError as err:
        print(f"brainage {command}: error: {err}", file=sys.stderr)
        return 2
    return 0

"""Cross-validated, paired comparison of brain-age models (pipelines/compare.sh): brainage's version of the ERMoE
paper's brain-age table (arXiv 2511.10971), ERMoE-ViT against a dense ViT, a parameter-matched dense ViT, a softmax
top-k MoE ViT (Switch loss) and SFCN (Peng et al. 2021), on one cohort, one split and one budget.

The protocol (a YAML file, `configs/compare/*.yaml`, see :class:`Protocol`):

1. Outer split: the subjects are dealt into K stratified folds (`brainage.data.splits`, `test_fold`); in outer fold k
   fold k is the test set, so every subject is tested exactly once. The split, epochs, schedule and seed are the
   same for every model.
2. Inner split: the other K-1 folds are split once more into inner-train and inner-val (`val_fraction` of them,
   stratified). Every candidate of an arm (each model config x each entry of its grid: lr, and for SFCN the
   optimiser) is trained on inner-train; its checkpoint is the epoch with the lowest inner-val MAE.
3. Selection rule: per arm and outer fold, the candidate with the lowest inner-val MAE (uncorrected, of its best
   checkpoint) is chosen; ties go to the first listed; candidates with non-finite predictions are never chosen.
   The ERMoE arm's candidates include every listed ERMoE design, so the design is chosen by the same rule. Test
   subjects are read only AFTER the choice, and only with the chosen candidate's checkpoint.
4. Bias correction (de Lange & Cole 2020) is fitted on the chosen candidate's inner-val predictions and applied to
   its test predictions (never fitted on test subjects).
5. Per-subject test errors are paired across arms and summarised by `brainage.training.compare_table`.

Units and resumption: a candidate fit (`units/fold<k>/<config>/<settings>/fit.json`) and an arm's outer-fold result
(`results/<arm>/fold<k>/result.json` + `predictions.csv`) are each written atomically when complete; a rerun skips
complete units whose resolved config is unchanged and redoes any other (a killed unit left no `fit.json`). Adding a
model is adding a config name to an arm: only the new candidates are fitted and the arm's selection is redone.
Several drivers may share one output folder: a unit is locked (`fcntl.flock`) while one of them runs it.

Predictions come from the Lightning trainer itself (`Trainer.predict` with `BrainAgeModule.predict_step`); this module
does not import `brainage.predict`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
import yaml

from brainage.model.diagnostics import collect_diagnostics
from brainage.contracts.atomic import write_text_atomic
from brainage.contracts.bias import apply_bias_correction, fit_bias_correction
from brainage.contracts.checkpoint import read_checkpoint
from brainage.training.cli import BrainAgeCLI

__all__ = ["Arm", "Protocol", "Candidate", "load_protocol", "Comparison", "main"]

_MODULE_ARGS = ("lr", "optimizer", "momentum", "weight_decay", "warmup_epochs", "min_lr_ratio", "loss",
                "aux_loss_weight")


# -- protocol -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """One row of the table.

    Args:
        name: the row's name (e.g. "ermoe").
        configs: model configs: a name under `configs/model/` (without .yaml) or a path to a YAML file.
        grid: candidate settings of `BrainAgeModule` (lr, optimizer, momentum, weight_decay, ...), crossed with
            `configs`; one entry = one candidate per config.
        overrides: extra command-line values (dotted keys, e.g. `model.net.init_args.pool: mean`) for every candidate
            of this arm.
        epochs: this arm's budget (None = the protocol's; an arm with another budget is flagged in the table).
    """

    name: str
    configs: tuple[str, ...]
    grid: tuple[dict[str, Any], ...] = ({},)
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None


@dataclass(frozen=True)
class Protocol:
    """The comparison protocol (module docstring).

    Args:
        arms: the rows; the first is the reference unless `reference` names another.
        base: LightningCLI config layers under every model config (trainer, data chain, augmentation, batch size).
        folds: outer folds K (every subject tested once).
        val_fraction: share of the training part (the other K-1 folds) held out as inner-val.
        split_seed: seed of the stratified fold assignment.
        epochs: the budget of every arm (unless an arm sets its own).
        reference: the arm compared against every other one (ΔMAE = reference - other).
        n_boot: subject-bootstrap resamples for the CIs.
    """

    arms: tuple[Arm, ...]
    base: tuple[str, ...] = ("configs/experiment/compare.yaml",)
    folds: int = 3
    val_fraction: float = 0.2
    split_seed: int = 42
    epochs: int = 15
    reference: str | None = None
    n_boot: int = 10000

    @property
    def reference_arm(self) -> str:
        return self.reference or self.arms[0].name

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


def _config_path(name: str) -> Path:
    path = Path(name) if name.endswith((".yaml", ".yml")) else Path("configs/model") / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"model config {name!r}: {path} not found (relative to {Path.cwd()}); expected a "
                                f"name under configs/model/ or a YAML path")
    return path


def load_protocol(path: str | Path) -> Protocol:
    """Read and check a protocol YAML; ValueError naming the file and the bad value."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    try:
        arms = tuple(Arm(name=a["name"], configs=tuple(a["configs"]),
                         grid=tuple(dict(g) for g in a.get("grid") or [{}]),
                         overrides=dict(a.get("overrides") or {}), epochs=a.get("epochs"))
                     for a in raw.pop("arms"))
        protocol = Protocol(arms=arms, **{k: tuple(v) if k == "base" else v for k, v in raw.items()})
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a comparison protocol ({err}); expected arms: [{{name, configs, grid, "
                         f"overrides, epochs}}] and the fields of brainage.training.compare.Protocol") from err
    names = [a.name for a in protocol.arms]
    problems = []
    if not names or len(set(names)) != len(names):
        problems.append(f"arm names {names} must be non-empty and unique")
    if protocol.reference is not None and protocol.reference not in names:
        problems.append(f"reference={protocol.reference!r} is not an arm; arms: {names}")
    if protocol.folds < 2:
        problems.append(f"folds={protocol.folds}; expected >= 2")
    if not 0 < protocol.val_fraction < 1:
        problems.append(f"val_fraction={protocol.val_fraction}; expected in (0, 1)")
    for arm in protocol.arms:
        bad = sorted({k for g in arm.grid for k in g} - set(_MODULE_ARGS))
        if bad:
            problems.append(f"arm {arm.name!r}: grid keys {bad} are not BrainAgeModule arguments {_MODULE_ARGS}")
        if not arm.configs:
            problems.append(f"arm {arm.name!r} lists no model config")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    for arm in protocol.arms:
        for config in arm.configs:
            _config_path(config)
    return protocol


@dataclass(frozen=True)
class Candidate:
    """One model config with one set of settings: the unit of training (per outer fold)."""

    config: str
    params: tuple[tuple[str, Any], ...]  # BrainAgeModule arguments (the grid entry), sorted
    overrides: tuple[tuple[str, Any], ...]  # dotted command-line values, sorted
    epochs: int

    @property
    def name(self) -> str:
        settings = [f"{k}={v}" for k, v in self.params] + [f"{k}={v}" for k, v in self.overrides]
        return ",".join([f"epochs={self.epochs}"] + settings)

    @property
    def key(self) -> str:
        return f"{Path(self.config).stem}/{self.name}"

    def args(self) -> list[str]:
        values = [(f"model.{k}", v) for k, v in self.params] + list(self.overrides)
        return [a for k, v in values for a in (f"--{k}", _cli_value(v))] + ["--trainer.max_epochs", str(self.epochs)]


def _cli_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def candidates(protocol: Protocol, arm: Arm) -> list[Candidate]:
    """The arm's candidates in listed order: configs outer, grid inner."""
    epochs = arm.epochs or protocol.epochs
    return [Candidate(config, tuple(sorted(g.items())), tuple(sorted(arm.overrides.items())), epochs)
            for config in arm.configs for g in arm.grid]


# -- files --------------------------------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# Arguments that change how a run looks, never what it computes: left out of a unit's config hash, so adding one
# (as `data.progress` was) does not refit finished units.
_DISPLAY_ONLY = ("data.progress",)


def _config_hash(cli: BrainAgeCLI) -> str:
    """A unit's identity: the hash of its full parsed config, display-only arguments left out."""
    config = cli.config.clone()
    for key in _DISPLAY_ONLY:
        if key in config:
            del config[key]
    return hashlib.sha256(cli.parser.dump(config, skip_none=False, skip_validation=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path):
    """Yield True while this process holds an exclusive lock on `path`, False when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.strip() + ("-dirty" if dirty.strip() else "")


# -- diagnostics --------------------------------------------------------------------------------------------------
def summarise_diagnostics(diagnostics: dict[str, float]) -> dict[str, float | None]:
    """Mean load CV over MoE layers, max and mean coherence over eigen layers (None where absent)."""

    def pick(suffix: str) -> list[float]:
        return [v for k, v in diagnostics.items() if k.endswith(suffix) and math.isfinite(v)]

    load, cmax, cmean = pick("/load_cv"), pick("/coherence_max"), pick("/coherence_mean")
    return {"load_cv": float(np.mean(load)) if load else None,
            "coherence_max": float(max(cmax)) if cmax else None,
            "coherence_mean": float(np.mean(cmean)) if cmean else None}


class _InitialDiagnostics(pl.Callback):
    """Routing diagnostics of the initial weights on the first inner-val batch (before any optimizer step)."""

    def __init__(self) -> None:
        self.batch: dict | None = None
        self.values: dict[str, float] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batch = next(iter(trainer.datamodule.val_dataloader()))
        self.values = collect_diagnostics(pl_module.net, self.batch["image"].to(pl_module.device),
                                          self.batch["sex"].to(pl_module.device), max_tokens=256)


def _predictions(trainer: pl.Trainer, module: pl.LightningModule, loader, checkpoint: str) -> pd.DataFrame:
    outputs = trainer.predict(module, dataloaders=loader, ckpt_path=checkpoint)
    return pd.DataFrame({"subject_id": [s for o in outputs for s in o["subject_id"]],
                         "age": torch.cat([o["age"] for o in outputs]).double().numpy(),
                         "predicted": torch.cat([o["predicted"] for o in outputs]).double().numpy()})


# -- the runner ---------------------------------------------------------------------------------------------------
class Comparison:
    """Runs a protocol on one cohort into one output folder (see the module docstring).

    Args:
        protocol: the protocol.
        root: the cohort (anything `BrainAgeDataModule` reads).
        out: the output folder (units/, results/, cache/, locks/).
        extra: command-line values appended to every candidate (e.g. ["--trainer.accelerator", "gpu"]).
        log: where progress lines go.
    """

    def __init__(self, protocol: Protocol, root: str | Path, out: str | Path, extra: list[str] | None = None,
                 log=print) -> None:
        self.protocol, self.root, self.out = protocol, str(Path(root).resolve()), Path(out).resolve()
        self.extra, self.log = list(extra or []), log
        self.commit = _git_commit()

    # -- Lightning objects of one candidate in one outer fold --
    def cli(self, candidate: Candidate, fold: int, extra: tuple[str, ...] = ()) -> BrainAgeCLI:
        unit = self.unit_dir(candidate, fold)
        p = self.protocol
        args = [a for layer in (*p.base, str(_config_path(candidate.config))) for a in ("--config", layer)]
        args += ["--data.root", self.root, "--data.test_fold", str(fold), "--data.num_folds", str(p.folds),
                 "--data.val_fraction", str(p.val_fraction), "--data.seed", str(p.split_seed),
                 "--data.cache_dir", str(self.out / "cache"), "--trainer.default_root_dir", str(unit),
                 "--trainer.logger.init_args.save_dir", str(unit)]
        with warnings.catch_warnings():  # the driver's own sys.argv is not meant for the CLI
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            return BrainAgeCLI(args=args + candidate.args() + self.extra + list(extra), run=False)

    def unit_dir(self, candidate: Candidate, fold: int) -> Path:
        return self.out / "units" / f"fold{fold}" / candidate.key

    def _lock(self, name: str):
        return _locked(self.out / "locks" / (hashlib.sha1(name.encode()).hexdigest()[:16] + ".lock"))

    # -- one candidate fit --
    def fit_unit(self, candidate: Candidate, fold: int) -> dict | None:
        """Train `candidate` on outer fold `fold`'s inner-train; return its fit record (None: another driver is on
        it). Reads no test subject."""
        unit = self.unit_dir(candidate, fold)
        cli = self.cli(candidate, fold)
        config_hash = _config_hash(cli)
        record = _read_json(unit / "fit.json")
        if record is not None and record["config_hash"] == config_hash:
            return record
        with self._lock(f"unit:{fold}:{candidate.key}") as mine:
            if not mine:
                return None
            record = _read_json(unit / "fit.json")  # finished by another driver meanwhile
            if record is not None and record["config_hash"] == config_hash:
                return record
            if unit.exists():
                self.log(f"redo {unit} ({'config changed' if record else 'incomplete'})")
                shutil.rmtree(unit)
            return self._fit(cli, candidate, fold, unit, config_hash)

    def _fit(self, cli: BrainAgeCLI, candidate: Candidate, fold: int, unit: Path, config_hash: str) -> dict:
        self.log(f"fit fold {fold} {candidate.key}")
        trainer, module, dm = cli.trainer, cli.model, cli.datamodule
        initial = _InitialDiagnostics()
        trainer.callbacks.append(initial)
        start = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        wall = time.perf_counter() - start
        best = trainer.checkpoint_callback.best_model_path
        val = _predictions(trainer, module, dm.val_dataloader(), best)  # module now holds the best weights
        final = collect_diagnostics(module.net, initial.batch["image"].to(module.device),
                                    initial.batch["sex"].to(module.device), max_tokens=256)
        finite = bool(np.isfinite(val["predicted"]).all())
        val_mae = float((val["predicted"] - val["age"]).abs().mean()) if finite else math.nan
        write_text_atomic(unit / "val_predictions.csv", val.to_csv(index=False))
        record = {
            "candidate": candidate.key, "config": candidate.config, "params": dict(candidate.params),
            "overrides": dict(candidate.overrides), "fold": fold, "config_hash": config_hash, "commit": self.commit,
            "val_mae": val_mae, "finite": finite, "wall_s": wall, "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()), "epochs": candidate.epochs,
            "epochs_run": int(trainer.current_epoch),
            "best_epoch": int(read_checkpoint(best).raw["epoch"]),
            "best_checkpoint": str(Path(best).relative_to(unit)),
            "n_params": int(sum(p.numel() for p in module.net.parameters())),
            "n_train": len(dm.datasets["train"]), "n_val": len(dm.datasets["val"]), "n_test": len(dm.datasets["test"]),
            "diagnostics_init": summarise_diagnostics(initial.values),
            "diagnostics_end": summarise_diagnostics(final), "diagnostics_end_layers": final,
        }
        write_text_atomic(unit / "fit.json", json.dumps(jsonable(record), indent=1))
        self.log(f"  fold {fold} {candidate.key}: inner-val MAE {val_mae:.3f} y, {wall:.0f} s")
        return record

    # -- one arm in one outer fold --
    def result_dir(self, arm: str, fold: int) -> Path:
        return self.out / "results" / arm / f"fold{fold}"

    def evaluate(self, arm: Arm, fold: int) -> dict | None:
        """Fit the arm's candidates, choose one on inner-val, predict the test fold; None while a unit is busy."""
        folder = self.result_dir(arm.name, fold)
        fits = [self.fit_unit(c, fold) for c in candidates(self.protocol, arm)]
        if any(f is None for f in fits):
            return None
        signature = [(f["candidate"], f["config_hash"]) for f in fits]
        done = _read_json(folder / "result.json")
        if done is not None and done["signature"] == jsonable(signature):
            return done
        with self._lock(f"result:{fold}:{arm.name}") as mine:
            if not mine:
                return None
            return self._evaluate(arm, fold, fits, signature, folder)

    def _evaluate(self, arm: Arm, fold: int, fits: list[dict], signature: list, folder: Path) -> dict:
        scores = [f["val_mae"] if f["val_mae"] is not None and math.isfinite(f["val_mae"]) else math.inf
                  for f in fits]
        if all(math.isinf(s) for s in scores):
            raise ValueError(f"arm {arm.name!r}, fold {fold}: every candidate gave non-finite inner-val predictions "
                             f"({[f['candidate'] for f in fits]}); nothing to choose")
        chosen_index = int(np.argmin(scores))  # first of equal scores
        chosen = fits[chosen_index]
        candidate = candidates(self.protocol, arm)[chosen_index]
        unit = self.unit_dir(candidate, fold)
        # the test subjects are read now, for the chosen candidate only
        cli = self.cli(candidate, fold, extra=("--trainer.logger", "false"))  # keep the unit's metrics.csv
        cli.datamodule.setup("test")
        test = _predictions(cli.trainer, cli.model, cli.datamodule.test_dataloader(),
                            str(unit / chosen["best_checkpoint"]))
        val = pd.read_csv(unit / "val_predictions.csv")
        try:
            correction, note = fit_bias_correction(val["age"].to_numpy(), val["predicted"].to_numpy(),
                                                   fit_on=f"inner-val of outer fold {fold}, n={len(val)}"), None
        except (ValueError, np.linalg.LinAlgError) as err:
            correction, note = None, f"not fitted: {err}"
        test["corrected"] = apply_bias_correction(test["predicted"].to_numpy(), correction) if correction \
            else math.nan
        test["fold"] = fold
        abs_err = (test["predicted"] - test["age"]).abs()
        result = {
            "arm": arm.name, "fold": fold, "signature": signature, "chosen": chosen["candidate"],
            "selection": [{"candidate": f["candidate"], "val_mae": f["val_mae"], "wall_s": f["wall_s"]} for f in fits],
            "test_mae": float(abs_err.mean()), "test_mae_corrected": float((test["corrected"] - test["age"]).abs()
                                                                            .mean()),
            "n_test": len(test), "bias_correction": correction, "bias_correction_note": note,
            "wall_s_chosen": chosen["wall_s"], "wall_s_all_candidates": float(sum(f["wall_s"] for f in fits)),
            "epochs": chosen["epochs"], "best_epoch": chosen["best_epoch"], "n_params": chosen["n_params"],
            "diagnostics_init": chosen["diagnostics_init"], "diagnostics_end": chosen["diagnostics_end"],
            "commits": sorted({f["commit"] for f in fits}),
        }
        write_text_atomic(folder / "predictions.csv", test[["subject_id", "age", "predicted", "corrected", "fold"]]
                     .to_csv(index=False))
        write_text_atomic(folder / "result.json", json.dumps(jsonable(result), indent=1))
        self.log(f"result {arm.name} fold {fold}: chose {chosen['candidate']}, test MAE {result['test_mae']:.3f} y")
        return result

    def warm_cache(self, arm: Arm) -> None:
        """Preprocess the cohort into the shared cache before any fit is timed."""
        self.cli(candidates(self.protocol, arm)[0], 0).datamodule.setup("fit")

    def run(self, arms: list[str] | None = None, wait_s: float = 60.0) -> None:
        """Every (fold, arm), fold-major; units busy in another driver are retried until all are done."""
        chosen = [a for a in self.protocol.arms if arms is None or a.name in arms]
        unknown = sorted(set(arms or ()) - {a.name for a in self.protocol.arms})
        if unknown:
            raise ValueError(f"--arms {unknown}: not in the protocol; arms: {[a.name for a in self.protocol.arms]}")
        if chosen:
            self.warm_cache(chosen[0])
        pending = [(fold, arm) for fold in range(self.protocol.folds) for arm in chosen]
        while pending:
            pending = [(fold, arm) for fold, arm in pending if self.evaluate(arm, fold) is None]
            if pending:
                self.log(f"{len(pending)} (arm, fold) pairs wait for units another driver is running")
                time.sleep(wait_s)


# -- command line -------------------------------------------------------------------------------------------------
EPILOG = """examples:
  python -m brainage.training.compare run --protocol configs/compare/cpu_3mm.yaml --root cohort --out runs/compare
  python -m brainage.training.compare table --protocol configs/compare/cpu_3mm.yaml --out runs/compare
  python -m brainage.training.compare run --protocol configs/compare/cpu_3mm.yaml --root cohort --out runs/compare \\
         --arms dense sfcn --set trainer.accelerator=gpu

`run` trains what is missing (resumable), then prints the table; `table` only reads finished results. The last line
printed is one JSON object with the full table; table_<protocol>.md and .json are written next to results/.
"""


def _overrides(values: list[str]) -> list[str]:
    args = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. trainer.accelerator=gpu")
        args += [f"--{key}", value]
    return args


def main(argv: list[str] | None = None) -> int:
    from brainage.training.compare_table import build_table, print_table

    parser = argparse.ArgumentParser(prog="python -m brainage.training.compare", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "table"])
    parser.add_argument("--protocol", required=True, type=Path, help="protocol YAML (configs/compare/*.yaml)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    parser.add_argument("--root", help="the cohort (run only): BIDS folder or manifest")
    parser.add_argument("--arms", nargs="+", help="run only these arms (default: all)")
    parser.add_argument("--set", dest="values", action="append", default=[], metavar="KEY=VALUE",
                        help="a command-line value for every candidate, e.g. trainer.accelerator=gpu (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        protocol = load_protocol(args.protocol)
        extra = _overrides(args.values)
        if args.command == "run":
            if not args.root:
                parser.error("run needs --root")
            if args.threads:
                torch.set_num_threads(args.threads)
            Comparison(protocol, args.root, args.out, extra).run(args.arms)
    except (ValueError, FileNotFoundError) as err:
        print(f"compare: {err}", file=sys.stderr)
        return 2
    command = "python -m brainage.training.compare " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    table = build_table(protocol, args.out, command=command, wall_s=time.perf_counter() - start)
    print_table(table, args.out, f"table_{args.protocol.stem}")  # protocols sharing one --out keep their tables
    return 0


if __name__ == "__main__":
    sys.exit(main())

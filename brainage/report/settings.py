"""What one `brainage report` run was asked to do: the command line, typed and checked once, read by every stage."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from brainage.attribution.reference import Reference

__all__ = ["DEFAULT_METHOD", "GROUP_COLUMN", "METHODS", "Method", "REGIONAL_CHAINS", "ReportSettings", "run_id_of"]

GROUP_COLUMN = "group"  # the --group-by values in the predictions table
# region attribution methods of brainage.report.attribute (Captum)
Method = Literal["occlusion", "band_occlusion", "integrated_gradients", "band_integrated_gradients", "gradient_shap",
                 "shapley"]
METHODS: tuple[str, ...] = get_args(Method)
DEFAULT_METHOD: Method = "band_occlusion"  # chosen on the benchmark's two tuning cohorts (docs/report.md)
# --regional-chain keywords (anything else is a data YAML): the model's chain with nonlinear normalisation added when
# it has none (the default: the ranking validated on registered scans, docs/report.md), or the model's chain as is
REGIONAL_CHAINS = ("registered", "model")


def run_id_of(model: str | None) -> str | None:
    """The run id of a ``runs:/<RUN_ID>[/path]`` model URI, else None."""
    if model is None or not model.startswith("runs:/"):
        return None
    run = model.removeprefix("runs:/").strip("/").split("/")[0]
    if not run:
        raise ValueError(f"model URI {model!r} names no run; expected runs:/<RUN_ID>[/artifact path]")
    return run


@dataclass(frozen=True)
class ReportSettings:
    """The report's options (see ``brainage report --help``); ``from_args`` rejects inconsistent ones."""

    inputs: tuple[str, ...]
    out: Path
    model: str | None = None
    routing: Path | None = None
    predictions: Path | None = None
    atlas: Path | None = None
    atlas_names: Path | None = None
    ground_truth: Path | None = None
    occlusion: bool = True
    occlusion_subjects: int = 40  # top-10 rank intervals 7.5-25 ranks wide at 40 scans, 23-58 at 16-20 (docs/report.md)
    occlusion_reference: Reference = "young"
    attribution_method: Method = DEFAULT_METHOD
    regional_subjects: int = 400  # scans with a known age for the regional age models (brainage.attribution.regional)
    regional_chain: str = "registered"  # what prepares those scans: registered | model | a data YAML (REGIONAL_CHAINS)
    regional_inputs: tuple[str, ...] | None = None  # the scans for the regional age models (None: ``inputs``)
    group_by: str | None = None
    mlflow_run: str | None = None
    tracking_uri: str | None = None
    max_subjects: int | None = None
    subject_figures: int = 3
    shuffles: int = 200
    device: str | None = None
    batch_size: int = 4
    workers: int | None = None
    seed: int = 0
    include_failed: bool = False
    verbose: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReportSettings:
        fields = {name: getattr(args, name) for name in cls.__dataclass_fields__
                  if name not in ("inputs", "regional_inputs")}
        settings = cls(**fields, inputs=tuple(args.input),
                       regional_inputs=tuple(args.regional_input) if args.regional_input else None)
        settings.check()
        return settings

    def check(self) -> None:
        if (self.atlas is None) != (self.atlas_names is None):
            raise ValueError("--atlas and --atlas-names go together: a label NIfTI and the TSV naming its labels")
        for name in ("occlusion_subjects", "subject_figures", "shuffles", "batch_size", "regional_subjects"):
            if getattr(self, name) < (0 if name in ("subject_figures", "regional_subjects") else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.model is None and (self.routing is None or self.occlusion):
            raise ValueError("--model is required, except with --routing DIR and --no-occlusion (occlusion runs the "
                             "model)")
        if self.attribution_method not in METHODS:
            raise ValueError(f"--attribution-method must be one of {list(METHODS)}, got {self.attribution_method!r}")
        if self.occlusion_reference not in get_args(Reference):
            raise ValueError(f"--occlusion-reference must be one of {list(get_args(Reference))}, got "
                             f"{self.occlusion_reference!r}")
        run_id_of(self.model)  # a runs:/ URI without a run id fails here, before any work

    @property
    def run_id(self) -> str | None:
        """The MLflow run the report folder is logged to (``--mlflow-run``, else the run of a ``runs:/`` model)."""
        return self.mlflow_run or run_id_of(self.model)

    @property
    def occluded_subjects(self) -> int:
        """Scans kept for occlusion (0 with ``--no-occlusion``)."""
        return self.occlusion_subjects if self.occlusion else 0


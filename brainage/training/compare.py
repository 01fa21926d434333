"""The side-by-side table of pipelines/compare.sh: brainage's own version of the ERMoE paper's brain-age table
(arXiv 2511.10971): ERMoE-ViT vs dense ViT vs softmax-top-k MoE ViT (Switch loss) vs SFCN (Peng et al. 2021), trained
on the same synthetic cohort, split and budget.

Reads the MLflow runs `<model>-fit` and `<model>-test` of one experiment: test MAE, Pearson r and r(BAG, age) (from
`brainage test` on the held-out split), the final epoch's expert load CV averaged over MoE layers, the parameter
count of the best checkpoint, and the fit's wall time. Writes `<out>.md` and `<out>.csv`.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import pandas as pd

from brainage import tracking
from brainage.contracts.checkpoint import read_checkpoint

__all__ = ["COLUMNS", "comparison_table", "to_markdown", "main"]

COLUMNS = ["model", "test MAE (y)", "test MAE corrected (y)", "r", "r(BAG, age)", "expert load CV", "parameters",
           "training time (s)", "epochs"]


def _load_cv(metrics: dict[str, float]) -> float:
    values = [v for k, v in metrics.items() if re.fullmatch(r"moe/layer\d+/load_cv", k)]
    return sum(values) / len(values) if values else math.nan


def _parameters(tracking_uri: str | None, run_id: str) -> int:
    path = tracking.download_artifact(tracking.resolve_tracking_uri(tracking_uri), run_id, "checkpoints/best.ckpt")
    return int(sum(v.numel() for v in read_checkpoint(path).net_state.values()))


def comparison_table(experiment: str, models: list[str], tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per model from its `<model>-fit` and `<model>-test` runs; ValueError naming a missing run."""
    runs = tracking.latest_runs(experiment, tracking_uri)
    rows = []
    for model in models:
        missing = [f"{model}-{stage}" for stage in ("fit", "test") if f"{model}-{stage}" not in runs]
        if missing:
            raise ValueError(f"experiment {experiment!r} has no finished run named {missing}; found {sorted(runs)}")
        fit, test = runs[f"{model}-fit"], runs[f"{model}-test"]
        history = fit["metrics"]
        rows.append({
            "model": model,
            "test MAE (y)": test["metrics"].get("test/mae", math.nan),
            "test MAE corrected (y)": test["metrics"].get("test/corrected/mae", math.nan),
            "r": test["metrics"].get("test/r", math.nan),
            "r(BAG, age)": test["metrics"].get("test/r_bag_age", math.nan),
            "expert load CV": _load_cv(history),
            "parameters": _parameters(tracking_uri, fit["run_id"]),
            "training time (s)": fit["seconds"],
            "epochs": int(history.get("epoch", -1)) + 1,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(table: pd.DataFrame) -> str:
    def cell(column: str, value) -> str:
        if isinstance(value, float) and math.isnan(value):
            return "n/a"
        if column == "parameters":
            return f"{value / 1e6:.2f}M"
        if column in ("training time (s)", "epochs"):
            return f"{value:.0f}"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in table.columns) + " |" for _, row in table.iterrows()]
    return "\n".join(lines) + "\n"


EPILOG = """examples:
  python -m brainage.training.compare --experiment brainage-compare --models ermoe dense softmax_moe sfcn \\
         --out compare-output/table
  MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python -m brainage.training.compare --experiment brainage-compare \\
         --models ermoe sfcn --out table

Needs the finished MLflow runs <model>-fit and <model>-test (pipelines/compare.sh names them so).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brainage.training.compare", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="MLflow experiment holding the runs")
    parser.add_argument("--models", required=True, nargs="+", help="model names (run-name prefixes)")
    parser.add_argument("--out", required=True, type=Path, help="output stem: writes <out>.md and <out>.csv")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or "
                                                             "sqlite:///mlflow.db)")
    args = parser.parse_args(argv)
    try:
        table = comparison_table(args.experiment, args.models, args.tracking_uri)
    except ValueError as err:
        print(f"compare: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    markdown = to_markdown(table)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The comparison table of pipelines/compare.sh: finished outer-fold results -> one JSON object + a markdown table.

Reads `results/<arm>/fold<k>/{result.json,predictions.csv}` (written by `brainage.training.compare`) and reports,
per arm: MAE and bias-corrected MAE with subject-bootstrap 95% CIs, Pearson r, r(BAG, age), parameters, expert load
CV and coherence (initial and final weights of the chosen candidate; mean over folds), fit times and the candidate
chosen in each fold; and the reference arm paired against every other arm (`brainage.training.compare_stats`), on
uncorrected and on corrected errors. A "constant" row predicts every test subject's age as the mean age of its
fold's training part (the other K-1 folds): a model that does not beat it has not learned age.

Partial runs are reported too: each arm over the folds it has finished, and each pair over the subjects both arms
have; `complete` says whether all K folds are in. A subject that appears in two folds of one arm is an error.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from brainage.contracts.atomic import write_text_atomic
from brainage.training.compare import Protocol, candidates, jsonable
from brainage.training.compare_stats import mae_with_ci, paired_delta

__all__ = ["SELECTION_RULE", "machine", "arm_predictions", "build_table", "to_markdown", "print_table"]

SELECTION_RULE = ("per arm and outer fold: the candidate (model config x grid entry) with the lowest uncorrected "
                  "inner-val MAE of its best-epoch checkpoint; ties to the first listed; test subjects read only for "
                  "the chosen candidate")
CONSTANT = "constant"


def machine() -> dict:
    """CPU model, logical cores, torch threads, load average; the GPU when one is visible."""
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "platform": platform.platform()}
    if hasattr(os, "getloadavg"):
        info["loadavg_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def arm_predictions(out: Path, arm: str, folds: int) -> tuple[pd.DataFrame, list[dict]]:
    """The arm's test predictions over its finished folds (subject_id, age, predicted, corrected, fold) and their
    result records; ValueError when a subject is tested twice."""
    frames, results = [], []
    for fold in range(folds):
        folder = out / "results" / arm / f"fold{fold}"
        if (folder / "result.json").is_file():
            results.append(json.loads((folder / "result.json").read_text()))
            frames.append(pd.read_csv(folder / "predictions.csv", dtype={"subject_id": str}))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["subject_id", "age", "predicted", "corrected", "fold"])
    twice = table["subject_id"][table["subject_id"].duplicated()].tolist()
    if twice:
        raise ValueError(f"arm {arm!r}: subjects tested in more than one fold: {twice[:5]}; the results under "
                         f"{out / 'results' / arm} come from different splits")
    return table, results


def _constant(predictions: list[pd.DataFrame], folds: int) -> pd.DataFrame:
    """Mean age of each fold's training part as the prediction, from the union of finished test folds (complete
    only when every fold of some arm is in)."""
    every = pd.concat(predictions).drop_duplicates("subject_id")
    if sorted(every["fold"].unique().tolist()) != list(range(folds)):
        return every.iloc[:0].assign(corrected=math.nan)
    means = {k: float(every.loc[every["fold"] != k, "age"].mean()) for k in range(folds)}
    return every.assign(predicted=every["fold"].map(means), corrected=math.nan)[
        ["subject_id", "age", "predicted", "corrected", "fold"]]


def _r(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and np.std(x) > 0 and np.std(y) > 0 else math.nan


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _row(name: str, table: pd.DataFrame, results: list[dict], protocol: Protocol, epochs: int) -> dict:
    row: dict = {"arm": name, "folds_done": len(results) if results else int(table["fold"].nunique()),
                 "n": len(table), "epochs": epochs}
    row["complete"] = row["folds_done"] == protocol.folds
    if table.empty:
        return row
    age, predicted = table["age"].to_numpy(float), table["predicted"].to_numpy(float)
    row["mae"] = mae_with_ci(np.abs(predicted - age), protocol.n_boot)
    corrected = table["corrected"].to_numpy(float)
    if np.isfinite(corrected).all():
        row["mae_corrected"] = mae_with_ci(np.abs(corrected - age), protocol.n_boot)
    row["r"], row["r_bag_age"] = _r(predicted, age), _r(predicted - age, age)
    if results:
        row["chosen"] = {r["fold"]: r["chosen"] for r in results}
        row["n_params"] = {r["fold"]: r["n_params"] for r in results}
        row["fit_wall_s_chosen_mean"] = _mean([r["wall_s_chosen"] for r in results])
        row["fit_wall_s_all_candidates"] = float(sum(r["wall_s_all_candidates"] for r in results))
        for when in ("init", "end"):
            for key in ("load_cv", "coherence_max", "coherence_mean"):
                row[f"{key}_{when}"] = _mean([r[f"diagnostics_{when}"][key] for r in results])
        row["bias_correction_failed_folds"] = [r["fold"] for r in results if not r["bias_correction"]]
    return row


def _paired(reference: pd.DataFrame, other: pd.DataFrame, n_boot: int) -> dict | None:
    both = reference.merge(other, on="subject_id", suffixes=("_ref", "_other"))
    if both.empty:
        return None
    out = {"raw": paired_delta((both["predicted_ref"] - both["age_ref"]).abs().to_numpy(),
                               (both["predicted_other"] - both["age_other"]).abs().to_numpy(),
                               folds=both["fold_ref"].to_numpy(), n_boot=n_boot)}
    corrected = both[["corrected_ref", "corrected_other"]].to_numpy(float)
    if np.isfinite(corrected).all():
        out["corrected"] = paired_delta((both["corrected_ref"] - both["age_ref"]).abs().to_numpy(),
                                        (both["corrected_other"] - both["age_other"]).abs().to_numpy(),
                                        folds=both["fold_ref"].to_numpy(), n_boot=n_boot)
    return out


def _cohort_size(out: Path) -> int | None:
    """Subjects in the split of any finished unit (all units share the cohort and the split seed)."""
    split = next((out / "units").glob("fold*/*/*/splits.csv"), None)
    return None if split is None else int(pd.read_csv(split, dtype={"subject_id": str})["subject_id"].nunique())


def build_table(protocol: Protocol, out: str | Path, command: str = "", wall_s: float | None = None) -> dict:
    """The full table as one JSON-able dict (module docstring)."""
    out = Path(out)
    rows, predictions = [], {}
    for arm in protocol.arms:
        table, results = arm_predictions(out, arm.name, protocol.folds)
        predictions[arm.name] = table
        rows.append(_row(arm.name, table, results, protocol, arm.epochs or protocol.epochs))
    finished = [p for p in predictions.values() if not p.empty]
    constant = _constant(finished, protocol.folds) if finished else None
    if constant is not None and not constant.empty:
        predictions[CONSTANT] = constant
        rows.append(_row(CONSTANT, constant, [], protocol, 0))
    reference = protocol.reference_arm
    ref_params = rows[0].get("n_params") if rows[0]["arm"] == reference else None
    for row in rows:
        if ref_params and row.get("n_params"):
            ratios = [row["n_params"][k] / ref_params[k] for k in row["n_params"] if k in ref_params]
            row["param_ratio_to_reference"] = _mean(ratios)
    paired = []
    for name, table in predictions.items():
        if name == reference or predictions[reference].empty or table.empty:
            continue
        stats = _paired(predictions[reference], table, protocol.n_boot)
        if stats is not None:
            paired.append({"reference": reference, "other": name, **stats})
    keys = {c.key for a in protocol.arms for c in candidates(protocol, a)}
    arms = {a.name for a in protocol.arms}
    results = [json.loads(p.read_text()) for p in (out / "results").glob("*/fold*/result.json")
               if p.parent.parent.name in arms]
    units = [u for u in (json.loads(p.read_text()) for p in (out / "units").glob("fold*/*/*/fit.json"))
             if u["candidate"] in keys]
    return jsonable({
        "command": command, "wall_s": wall_s,
        "compute_s_all_units": float(sum(u["wall_s"] for u in units)),  # the protocol's candidates only
        "machine": machine(),
        "protocol": {"folds": protocol.folds, "val_fraction": protocol.val_fraction,
                     "split_seed": protocol.split_seed, "epochs": protocol.epochs, "reference": reference,
                     "n_boot": protocol.n_boot, "base": list(protocol.base), "selection_rule": SELECTION_RULE,
                     "bias_correction": "de Lange & Cole 2020, fitted on the chosen candidate's inner-val predictions",
                     "arms": {a.name: [c.key for c in candidates(protocol, a)] for a in protocol.arms}},
        "n_subjects_tested": len(set().union(*(set(p["subject_id"]) for p in predictions.values()))),
        "n_cohort": _cohort_size(out),
        "commits": sorted({c for r in results for c in r["commits"]}),
        "models": rows, "paired": paired,
    })


def _ci(stats: dict | None, digits: int = 2) -> str:
    if not stats:
        return "n/a"
    return f"{stats['mae']:.{digits}f} [{stats['ci_low']:.{digits}f}, {stats['ci_high']:.{digits}f}]"


def _num(value, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _arrow(row: dict, key: str) -> str:
    start, end = row.get(f"{key}_init"), row.get(f"{key}_end")
    return "n/a" if start is None and end is None else f"{_num(start)} -> {_num(end)}"


MODEL_COLUMNS = ["model", "folds", "test MAE (y) [95% CI]", "corrected MAE (y) [95% CI]", "r", "r(BAG, age)",
                 "parameters", "params / ref", "load CV init -> end", "coherence max init -> end",
                 "coherence mean init -> end", "fit s (chosen, mean)", "fit s (all candidates)", "chosen per fold"]
PAIRED_COLUMNS = ["reference vs", "n", "ΔMAE (y) [95% CI]", "relative", "Wilcoxon p", "reference better",
                  "per-fold signs", "ΔMAE corrected [95% CI]", "p corrected"]


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _model_cells(row: dict, epochs: int, folds: int) -> list[str]:
    params = sorted(set((row.get("n_params") or {}).values()))
    budget = "" if row["epochs"] in (epochs, 0) else f" ({row['epochs']} epochs)"
    return [row["arm"] + budget, f"{row['folds_done']}/{folds}", _ci(row.get("mae")), _ci(row.get("mae_corrected")),
            _num(row.get("r")), _num(row.get("r_bag_age")), ", ".join(f"{v / 1e6:.2f}M" for v in params) or "n/a",
            _num(row.get("param_ratio_to_reference")), _arrow(row, "load_cv"), _arrow(row, "coherence_max"),
            _arrow(row, "coherence_mean"), _num(row.get("fit_wall_s_chosen_mean"), ".0f"),
            _num(row.get("fit_wall_s_all_candidates"), ".0f"),
            "; ".join(f"{k}: {v}" for k, v in (row.get("chosen") or {}).items()) or "-"]


def _delta(stats: dict) -> str:
    return f"{stats['delta_mae']:+.2f} [{stats['ci_low']:+.2f}, {stats['ci_high']:+.2f}]"


def _paired_cells(pair: dict) -> list[str]:
    raw, cor = pair["raw"], pair.get("corrected")
    relative = None if raw["relative"] is None else 100 * raw["relative"]
    return [pair["other"], str(raw["n"]), _delta(raw), f"{_num(relative, '+.1f')}%", f"{raw['wilcoxon_p']:.2g}",
            f"{raw['a_better']}/{raw['n']}", raw.get("fold_signs", ""), _delta(cor) if cor else "n/a",
            f"{cor['wilcoxon_p']:.2g}" if cor else "n/a"]


def to_markdown(table: dict) -> str:
    """Models table, paired table and the run's provenance as markdown."""
    p, m = table["protocol"], table["machine"]
    gpu = f", GPU {m['gpu']}" if "gpu" in m else ""
    lines = [
        f"Command: `{table['command']}`", "",
        (f"Machine: {m['cpu']}, {m['logical_cores']} logical cores{gpu}, torch {m['torch']} ({m['torch_threads']} "
         f"threads); load average {m.get('loadavg_1_5_15')}. Wall time of this invocation "
         f"{_num(table['wall_s'], '.0f')} s; training time of all units {table['compute_s_all_units']:.0f} s."), "",
        (f"Protocol: {p['folds']}-fold outer CV over {table['n_cohort']} subjects (split seed {p['split_seed']}; "
         f"{table['n_subjects_tested']} tested so far), every subject tested once; {p['epochs']} epochs; "
         f"inner-val = {p['val_fraction']} of each training part. "
         f"Selection: {p['selection_rule']}. Bias correction: {p['bias_correction']}. CIs: subject bootstrap, "
         f"{p['n_boot']} resamples."), "",
        _markdown_row(MODEL_COLUMNS), "|" + "---|" * len(MODEL_COLUMNS),
        *(_markdown_row(_model_cells(row, p["epochs"], p["folds"])) for row in table["models"]), "",
        f"Paired per-subject absolute errors, ΔMAE = {p['reference']} - other (negative: {p['reference']} better):",
        "", _markdown_row(PAIRED_COLUMNS), "|" + "---|" * len(PAIRED_COLUMNS),
        *(_markdown_row(_paired_cells(pair)) for pair in table["paired"]),
    ]
    return "\n".join(lines) + "\n"


def print_table(table: dict, out: str | Path, name: str) -> None:
    """Write `name`.md and `name`.json under `out`, print the markdown, then the JSON object as the last line."""
    out = Path(out)
    markdown = to_markdown(table)
    write_text_atomic(out / f"{name}.md", markdown)
    write_text_atomic(out / f"{name}.json", json.dumps(table, indent=1))
    print(markdown)
    print(json.dumps(table))

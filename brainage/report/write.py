"""Write stage of `brainage report`: the result's tables (CSV) and maps (NIfTI, MNI affine), the page, MLflow.

Every file is written atomically (``brainage.contracts.atomic``), so a reader never sees half a table;
``index.html`` is written last. Layout:

  tables/predictions.csv                                  one row per input (as `brainage predict`)
  tables/layer{L}_region_expert_top1.csv, ..._gated.csv   region x expert counts and row fractions
  tables/layer{L}_enrichment.csv                          log odds, chi-square p and BH q per (region, expert)
  tables/mutual_information.csv                           I(expert; region) vs within-subject shuffles
  tables/occlusion_sensitivity.csv                        regions ranked by age contribution (occlusion)
  tables/effect_occlusion.csv                             with ground truth: each planted effect occluded at once
  tables/regional_age_models.csv                          model-free regional age models: interior gain per region
                                                          (ranked) and the gain on all its voxels
  tables/groups_bag.csv, groups_expert_share.csv          with --group-by: BAG and expert use per group
  maps/layer{L}_expert{E}_freq.nii.gz                     per-expert top-1 frequency, model grid, MNI affine
  maps/occlusion_sensitivity.nii.gz                       age contribution (years) per region
  maps/regional_age_gain.nii.gz                           regional age models' interior gain (years) per region
  index.html                                              the report (offline, images embedded)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainage.contracts.atomic import atomic_path
from brainage.report import render as R
from brainage.report.analysis import ReportResult

__all__ = ["save_csv", "save_nifti", "report_files", "write_report", "log_to_mlflow"]


def save_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_nifti(volume: np.ndarray, affine: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(np.asarray(volume, dtype=np.float32), affine), str(tmp))


def _mutual_information(result: ReportResult) -> pd.DataFrame:
    return pd.DataFrame([{"layer": r.layer, "mi_bits": r.mi.observed, "shuffled_mean_bits": r.mi.shuffled_mean,
                          "shuffled_sd_bits": r.mi.shuffled_std, "ratio": r.mi.ratio, "p_value": r.mi.p_value,
                          "shuffles": len(r.mi.shuffled)} for r in result.layers])


def report_files(result: ReportResult) -> dict[str, Callable[[Path], None]]:
    """Relative path -> writer of every table and map of the result (the page not included)."""
    files: dict[str, Callable[[Path], None]] = {}

    def table(name: str, frame: pd.DataFrame) -> None:
        files[f"tables/{name}"] = lambda path: save_csv(frame, path)

    def volume(name: str, data: np.ndarray) -> None:
        files[f"maps/{name}"] = lambda path: save_nifti(data, result.affine, path)

    for r in result.layers:
        table(f"layer{r.layer}_region_expert_top1.csv", r.top1)
        table(f"layer{r.layer}_region_expert_gated.csv", r.gated)
        table(f"layer{r.layer}_enrichment.csv", r.enrichment)
        for e in range(result.num_experts):
            volume(f"layer{r.layer}_expert{e}_freq.nii.gz", r.frequency[..., e])
    table("mutual_information.csv", _mutual_information(result))
    if result.regions is not None:
        table("occlusion_sensitivity.csv", result.regions.table)
        volume("occlusion_sensitivity.nii.gz", result.regions.volume)
        if result.regions.effects is not None:
            table("effect_occlusion.csv", result.regions.effects)
    if result.regional is not None:
        table("regional_age_models.csv", result.regional.table)
        volume("regional_age_gain.nii.gz", result.regional.volume)
    if result.groups is not None:
        g = result.groups
        table("groups_bag.csv", g.bag.rename(columns={"group": g.column}))
        table("groups_expert_share.csv", g.shares.rename(columns={"group": g.column}))
    return files


def write_report(result: ReportResult, page: str, out: Path, on_file: Callable[[], None] = lambda: None) -> Path:
    """Write every table and map, then ``index.html``; returns the page's path. ``tables/predictions.csv`` is
    written by :func:`save_csv` as soon as the predictions exist (also when no scan could be routed)."""
    for name, write in report_files(result).items():
        write(out / name)
        on_file()
    index = R.write_html(out / "index.html", page)
    on_file()
    return index


def log_to_mlflow(out: Path, run_id: str, tracking_uri: str | None) -> None:
    """Log the report folder to an MLflow run as artifacts under ``report/``."""
    from brainage.tracking import log_directory, resolve_tracking_uri

    try:
        log_directory(run_id, out, "report", tracking_uri)
    except Exception as err:  # noqa: BLE001 - mlflow raises several types for unknown runs and stores
        raise ValueError(f"report written to {out}, but logging it to MLflow run {run_id!r} at "
                         f"{resolve_tracking_uri(tracking_uri)} failed: {err}") from err

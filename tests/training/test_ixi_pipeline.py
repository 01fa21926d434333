"""pipelines/ixi.sh on a fabricated IXI-layout folder: synthetic MNI-space scans renamed IXI###-Site-####-T1.nii.gz
plus the demographic sheet's CSV export -> fit -> predict on the held-out split -> report."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # runs pipelines/ixi.sh end to end

ROOT = Path(__file__).resolve().parents[2]
SITES = ("Guys", "HH", "IOP")


def _fabricate_ixi(cohort: Path, out: Path, copies: int = 1) -> pd.DataFrame:
    """Copy `brainage synth` scans (each ``copies`` times) into IXI names and write the sheet as IXI exports it
    (IXI_ID, SEX_ID, AGE)."""
    participants = pd.read_csv(cohort / "participants.tsv", sep="\t")
    out.mkdir(parents=True)
    rows = []
    for i, record in enumerate(list(participants.itertuples()) * copies):
        source = next((cohort / record.participant_id / "anat").glob("*_T1w.nii.gz"))
        ixi_id = 2 + 3 * i  # IXI numbers are sparse
        shutil.copy(source, out / f"IXI{ixi_id:03d}-{SITES[i % 3]}-{1000 + i:04d}-T1.nii.gz")
        rows.append({"IXI_ID": ixi_id, "SEX_ID (1=m, 2=f)": 1 if record.sex == "M" else 2, "AGE": record.age})
    pd.DataFrame(rows).to_csv(out / "IXI.csv", index=False)
    return pd.DataFrame(rows)


def test_ixi_pipeline_on_a_fabricated_ixi_folder(cohort12, tmp_path):
    sheet = _fabricate_ixi(cohort12, tmp_path / "IXI-T1", copies=2)  # 24 scans: the regional models fit on all
    out = tmp_path / "out"
    tiny = ["--data.spacing", "6.0", "--data.shape", "[24, 32, 24]", "--data.batch_size", "2", "--data.num_workers",
            "0", "--data.val_fraction", "0.34", "--data.test_fraction", "0.17", "--data.augment", "false",
            "--model.net.init_args.img_size", "[24, 32, 24]", "--model.net.init_args.embed_dim", "32",
            "--model.net.init_args.depth", "2", "--model.net.init_args.num_heads", "2",
            "--model.net.init_args.moe.num_experts", "4", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PREPARE": "skip", "RES": "1p5mm"}
    proc = subprocess.run(["bash", "pipelines/ixi.sh", str(tmp_path / "IXI-T1"), str(out), *tiny], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    splits = pd.read_csv(out / "train" / "splits.csv")
    assert len(splits) == len(sheet) == 24
    assert set(splits["site"]) == set(SITES)  # read through the IXI reader: the site comes from the file name
    assert sorted(splits["age"].round(2)) == sorted(sheet["AGE"].round(2))
    predictions = list(csv.DictReader(open(out / "predictions.csv")))
    test_ids = set(splits.loc[splits["split"] == "test", "subject_id"])
    assert {r["subject_id"] for r in predictions} == test_ids
    assert all(r["status"] == "ok" and float(r["predicted_age"]) > 0 for r in predictions)
    assert (out / "report" / "index.html").exists()
    regional = pd.read_csv(out / "report" / "tables" / "regional_age_models.csv")
    assert len(regional) > 0 and regional["gain"].notna().all()
    assert "Only 24 scans" in (out / "report" / "index.html").read_text()  # all of splits.csv, not the held-out ones
    assert "skipped" in proc.stdout  # prepare was skipped on request


def test_ixi_pipeline_usage_errors(tmp_path):
    proc = subprocess.run(["bash", "pipelines/ixi.sh"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "IXI_DIR" in proc.stderr
    proc = subprocess.run(["bash", "pipelines/ixi.sh", str(tmp_path / "missing")], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "missing" in proc.stderr

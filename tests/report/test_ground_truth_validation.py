"""Ground-truth validation of the attribution report on a trained model (issue: reports a neuroscientist can trust).

The demo pipeline's cohort and model (`make demo`): `brainage synth` writes 400 subjects with planted age effects
(ground_truth.json), the demo's ERMoE ViT (configs/demo.yaml) is trained on them with LightningCLI, and
`brainage report` runs its default attribution (band occlusion since 2026-12-02; region occlusion before) on held-out
subjects. The ranking must put the planted regions at the top at twice chance or better (precision@k, k = the number
of planted regions), and expert-region mutual information must clearly exceed its label-shuffled baseline.
The departures from the demo are the budget, to keep CI under its time limit: 20 epochs instead of 30, and the
regional age models on the 60 held-out scans instead of the whole cohort (`--regional-input`: 400 registrations).
Measured on this cohort with the default attribution (one run each, the development VM): 30 epochs: test MAE 5.39 y,
precision@16 = 0.44, MI ratios 11.0-13.5; 20 epochs: test MAE 5.55 y, precision@16 = 0.50, MI ratios 7.1-13.9.
The slowest test of the suite: alone on 2 cores, synth 82 s, fit 318 s (30 epochs) and report 65 s were measured.
Earlier, with region occlusion: precision@16 = 0.56 at 30 epochs. It is not robust to the cohort: a 240-subject
cohort written at 3 mm (seed 5, 24 epochs, val MAE 6.9 y) gave 0.19, the model there reading the deep regions the
ventricle warp displaces (README, known limits).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from brainage.attribution.regional import NEAR_MIN_GAIN, NEAR_MM
from brainage.attribution.validation import load_ground_truth, precision_at_k
from brainage.data.synth import synthesize_cohort
from brainage.report.command import main as report_main
from brainage.training.cli import BrainAgeCLI
from tests.report.conftest import assert_zone_rule

ROOT = Path(__file__).resolve().parents[2]
SUBJECTS, SEED, SPACING, EPOCHS = 400, 1, 2.0, 20  # pipelines/demo.sh; configs/demo.yaml trains 30 epochs
# ~9 min on one core share of an idle 2-core machine: the suite-wide 900 s limit is too tight on a slower CI runner
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # trains the demo model
PRECISION_BOUND = 0.375  # 6 of 16 planted regions in the top 16; chance = 16 / 85 = 0.19
# 8 of 16 for the model-free regional ranking on these 60 scans, registered by default: measured 0.56, and 0.38 on
# the model's plain chain (--regional-chain model; docs/report.md)
REGIONAL_BOUND = 0.5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("gt")
    cohort = work / "cohort"
    synthesize_cohort(cohort, n=SUBJECTS, seed=SEED, spacing=SPACING, workers=os.cpu_count() or 1)
    callbacks = work / "callbacks.yaml"
    callbacks.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(work / "checkpoints"), "filename": "best", "monitor": "val/mae", "mode": "min",
                       "enable_version_counter": False}}]}}))
    BrainAgeCLI(args=["fit", "--config", str(ROOT / "configs/demo.yaml"), "--config", str(callbacks),
                      "--data.root", str(cohort), "--trainer.max_epochs", str(EPOCHS),
                      "--trainer.default_root_dir", str(work), "--trainer.enable_progress_bar", "false",
                      "--trainer.enable_model_summary", "false",
                      "--trainer.logger.init_args.tracking_uri", f"sqlite:///{work / 'mlflow.db'}"])
    report = work / "report"
    code = report_main(["--model", str(work / "checkpoints" / "best.ckpt"), "--input", str(work / "test.csv"),
                        "--out", str(report), "--ground-truth", str(cohort / "ground_truth.json"),
                        "--occlusion-subjects", "16", "--shuffles", "100", "--subject-figures", "0"])
    assert code == 0
    return cohort, report


def test_occlusion_ranks_planted_regions_first(trained):
    cohort, report = trained
    truth = load_ground_truth(cohort / "ground_truth.json")
    ranking = pd.read_csv(report / "tables" / "occlusion_sensitivity.csv").sort_values("rank")
    precision = precision_at_k(ranking["name"], truth.regions)
    chance = len(truth.regions) / len(ranking)
    assert precision >= PRECISION_BOUND, f"precision@{len(truth.regions)} = {precision:.2f} (chance {chance:.2f})"
    html = (report / "index.html").read_text()
    assert f"precision@{len(truth.regions)}" in html  # the report states the same number


def test_regional_age_models_rank_every_region_with_intervals(trained):
    """The model-free regional ranking runs on the held-out scans (60 with a known age, registered by default) and
    the page states its precision beside the model attribution's."""
    cohort, report = trained
    truth = load_ground_truth(cohort / "ground_truth.json")
    regional = pd.read_csv(report / "tables" / "regional_age_models.csv")
    assert regional["rank"].tolist() == list(range(1, len(regional) + 1)) and len(regional) >= 80
    assert regional["demoted"].is_monotonic_increasing  # marked near the ventricles, no change of their own: last
    assert all(group["evidence"].is_monotonic_decreasing for _, group in regional.groupby("demoted"))
    assert (regional["ci_low"] <= regional["ci_high"]).all()
    assert_zone_rule(regional)
    near = (regional["gain"] >= NEAR_MIN_GAIN) & (regional["ventricle_mm"] <= NEAR_MM)
    assert (regional["near_ventricles"] == near).all() and regional["ventricle_mm"].notna().sum() >= 80
    assert regional["contraction"].notna().sum() >= 80  # every region but the ventricles has a share
    assert (regional["rank_low"] <= regional["rank_high"]).all()
    precision = precision_at_k(regional["region"], truth.regions)
    html = (report / "index.html").read_text()
    assert "Where the scans age (model-free)" in html
    assert "60 scans with a known age prepared by the model&#x27;s chain with nonlinear normalisation" in html
    assert f"regional age models (model-free, interiors) {precision:.2f}" in html
    assert precision >= REGIONAL_BOUND, f"regional precision@{len(truth.regions)} = {precision:.2f}"
    assert (regional["n_voxels"] < regional["n_voxels_all"]).mean() > 0.5  # borders left out of most regions
    assert (regional["gain_all_low"] <= regional["gain_all"]).all()
    narrowed = regional.set_index("region")  # the atlas has lateral ventricles: the gain away from them beside it
    assert (narrowed["n_voxels_away"] <= narrowed["n_voxels"]).all()
    assert narrowed.loc["L-caudate", "n_voxels_away"] < narrowed.loc["L-caudate", "n_voxels"]
    assert narrowed.loc["L-lateral-ventricle", "n_voxels_away"] == narrowed.loc["L-lateral-ventricle", "n_voxels"]
    assert "without the voxels within 7.5 mm of the lateral ventricles" in html


def test_expert_region_mutual_information_beats_shuffled_labels(trained):
    _, report = trained
    mi = pd.read_csv(report / "tables" / "mutual_information.csv")
    assert len(mi) == 4  # one row per MoE layer of the demo net
    assert (mi["ratio"] > 3).all() and (mi["p_value"] < 0.05).all(), mi.to_string()

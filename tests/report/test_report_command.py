"""`brainage report` end to end on a tiny random-init BrainAgeViT and a synthetic BIDS cohort (real NIfTI files, a
real sqlite MLflow store, headless Chromium when installed)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib import image as mpimg

from brainage.contracts.checkpoint import checkpoint_metadata, save_checkpoint
from brainage.contracts.routing import ScanRouting, routing_filename, save_routing
from brainage.data.inputs import read_inputs
from brainage.data.preprocessing import Preprocessing
from brainage.data.synth import synthesize_cohort
from brainage.model import BrainAgeViT, MoEConfig
from brainage.predict import load_model, predict_iter
from brainage.report.command import main
from brainage.report.settings import DEFAULT_METHOD, run_id_of
from brainage.tracking import run_artifacts

pytestmark = pytest.mark.slow  # the report end to end

SHAPE = (24, 32, 24)
EVIL = "<script>alert(1)</script>"
DIAGNOSIS = ["CN", "AD", "CN", "MCI"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    synthesize_cohort(out, n=4, seed=3, spacing=4.0, workers=1)
    participants = pd.read_csv(out / "participants.tsv", sep="\t", dtype=str)
    participants["diagnosis"] = DIAGNOSIS
    participants.to_csv(out / "participants.tsv", sep="\t", index=False)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = BrainAgeViT(img_size=SHAPE, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                      moe=MoEConfig(num_experts=3, top_k=2))
    pre = Preprocessing(spacing=6.0, shape=SHAPE, augment=False)
    meta = checkpoint_metadata(net, pre.to_dict(), pre.contract(), 50.0, 15.0, {"age_mean": 50.0}, {}, None)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.ckpt", net.state_dict(), meta)


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory) -> tuple[str, str]:
    """(tracking URI, run id) of a run in a fresh sqlite store whose artifacts stay under tmp."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("report-test", artifact_location=(root / "artifacts").as_uri())
    return uri, client.create_run(experiment).info.run_id


@pytest.fixture(scope="module")
def report(cohort, checkpoint, mlflow_run, tmp_path_factory) -> Path:
    """One full report: manifest with a planted subject id, a broken file, a diagnosis column; logged to MLflow."""
    work = tmp_path_factory.mktemp("report")
    participants = pd.read_csv(cohort / "participants.tsv", sep="\t")
    scans = sorted(cohort.glob("sub-*/anat/*_T1w.nii.gz"))
    bad = work / "bad&<i>.nii.gz"
    bad.write_bytes(b"not a nifti")
    manifest = pd.DataFrame({"subject_id": [EVIL, *participants["participant_id"][1:], "broken"],
                             "path": [*map(str, scans), str(bad)], "age": [*participants["age"], 40.0],
                             "diagnosis": [*DIAGNOSIS, "<b>x</b>"]})
    manifest.to_csv(work / "manifest.csv", index=False)
    out = work / "out"
    uri, run_id = mlflow_run
    code = main(["--model", str(checkpoint), "--input", str(work / "manifest.csv"), "--out", str(out),
                 "--ground-truth", str(cohort / "ground_truth.json"), "--occlusion-subjects", "3",
                 "--shuffles", "20", "--subject-figures", "1", "--workers", "0", "--group-by", "diagnosis",
                 "--mlflow-run", run_id, "--tracking-uri", uri])
    assert code == 1  # report written, one input failed
    return out


def test_report_writes_tables_maps_and_a_self_contained_page(report):
    top1 = pd.read_csv(report / "tables" / "layer1_region_expert_top1.csv")
    gated = pd.read_csv(report / "tables" / "layer1_region_expert_gated.csv")
    fractions = [f"fraction_{e}" for e in range(3)]
    np.testing.assert_allclose(top1[fractions].sum(axis=1), 1.0)
    np.testing.assert_allclose(top1["voxels"], gated["voxels"], rtol=1e-5)  # gates sum to 1 per token
    assert "L-lateral-ventricle" in set(top1["region"])
    freq = nib.load(report / "maps" / "layer1_expert0_freq.nii.gz")
    assert freq.shape == SHAPE and np.all(np.abs(np.diag(freq.affine)[:3]) == 6.0)
    total = sum(np.asarray(nib.load(report / "maps" / f"layer1_expert{e}_freq.nii.gz").dataobj) for e in range(3))
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # every voxel has exactly one top-1 expert
    ranked = pd.read_csv(report / "tables" / "occlusion_sensitivity.csv")
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert ranked["null_corrected"].is_monotonic_decreasing and (ranked["ci_low"] <= ranked["ci_high"]).all()
    assert (ranked["rank_low"] <= ranked["rank_high"]).all() and (ranked["method"] == DEFAULT_METHOD).all()
    np.testing.assert_allclose(ranked["own"] + ranked["shell"], ranked["contribution"], atol=1e-6)  # band = its parts
    assert (ranked["n_attributed"] > ranked["n_voxels"]).any()  # the boundary shells are attributed with the regions
    assert (np.sign(ranked["t"]) == np.sign(ranked["null_corrected"])).all()  # t of the same per-scan values
    effects = pd.read_csv(report / "tables" / "effect_occlusion.csv")  # each planted effect occluded at once
    assert {"ventricle_enlargement", "hippocampal_atrophy", "null regions (control)"} <= set(effects["effect"])
    assert (effects["regions"] > 0).all() and effects["share_positive"].between(0, 1).all()
    assert (effects["ci_low"] <= effects["ci_high"]).all()
    mi = pd.read_csv(report / "tables" / "mutual_information.csv")
    assert sorted(mi["layer"]) == [0, 1] and (mi["shuffles"] == 20).all()
    page = (report / "index.html").read_text()
    assert "Research use only" in page and "Validation against ground truth" in page and "precision@" in page
    assert "How to read this report" in page and "youngest" in page  # occlusion reference named in the page
    assert "not run: 5 scans with a known age in the inputs" in page  # 4 + the broken one; 20 or more needed
    assert "region itself (y)</th>" in page and "boundary shell (y)</th>" in page  # the band's two parts, labelled
    # scatter, the layers' expert maps as two compact grids (dominant expert; expert by layer), occlusion map,
    # subject, groups
    assert page.count("data:image/png;base64,") >= 1 + 2 + 1 + 1 + 1
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)


def test_user_strings_are_escaped(report):
    page = (report / "index.html").read_text()
    assert "<script" not in page and html.escape(EVIL) in page  # planted id shown as text (table and subject heading)
    assert html.escape("bad&<i>.nii.gz") in page and "<i>" not in page


def test_groups_show_bag_and_expert_share(report):
    bag = pd.read_csv(report / "tables" / "groups_bag.csv")
    predictions = pd.read_csv(report / "tables" / "predictions.csv")
    assert bag["diagnosis"].tolist() == ["AD", "CN", "MCI"]  # the broken scan's group has no predicted scan
    assert bag["n"].tolist() == [1, 2, 1]
    cn = predictions[predictions["group"] == "CN"]["brain_age_gap"]
    assert bag.set_index("diagnosis").loc["CN", "bag_mean"] == pytest.approx(cn.mean(), abs=1e-6)
    assert bag.set_index("diagnosis").loc["CN", "bag_sd"] == pytest.approx(cn.std(ddof=1), abs=1e-6)
    share = pd.read_csv(report / "tables" / "groups_expert_share.csv")
    assert sorted(share["layer"].unique()) == [0, 1] and len(share) == 6
    np.testing.assert_allclose(share[[f"expert_{e}" for e in range(3)]].sum(axis=1), 1.0)
    page = (report / "index.html").read_text()
    assert "Groups by diagnosis" in page


def test_report_is_logged_to_the_mlflow_run(report, mlflow_run):
    uri, run_id = mlflow_run
    artifacts = set(run_artifacts(uri, run_id))
    assert {"report/index.html", "report/tables/predictions.csv", "report/maps/layer1_expert2_freq.nii.gz",
            "report/tables/groups_bag.csv"} <= artifacts
    assert run_id_of(f"runs:/{run_id}") == run_id and run_id_of(f"runs:/{run_id}/checkpoints/best.ckpt") == run_id
    assert run_id_of("best.ckpt") is None


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_the_page_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium / chromium-browser / google-chrome binary on PATH")
    shot = tmp_path / "page.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={shot}",
                    (report / "index.html").as_uri()], check=True, capture_output=True, timeout=120)
    pixels = mpimg.imread(shot)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert pixels.shape[:2] == (2400, 1280)
    ink = (pixels < 0.9).any(axis=-1)  # not (near) white
    assert ink.mean() > 0.05, f"only {ink.mean():.1%} of the screenshot is not white"
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200, f"only {len(colours)} distinct colours: no figures drawn?"
    rows = ink.mean(axis=1)
    assert (rows[1200:] > 0.01).mean() > 0.2  # the lower half is drawn too, not just the title


def test_report_from_saved_routing(cohort, checkpoint, tmp_path, capsys):
    model = load_model(checkpoint)
    table = read_inputs([str(cohort)])
    folder = tmp_path / "routing"
    predicted = {}
    for index, result in enumerate(predict_iter(model, table, return_routing=True, num_workers=0)):
        # named as `brainage predict --save-routing` names them: subject, session and the input row index
        name = routing_filename(result.row["subject_id"], result.row["session"], index)
        save_routing(folder / name, ScanRouting(result.affine, model.preprocessing.shape, result.predicted_age,
                                                tuple(result.routing)))
        predicted[result.row["subject_id"]] = result.predicted_age
    (folder / routing_filename(table["subject_id"].iloc[3], "", 3)).unlink()  # one scan without routing -> error row
    (folder / routing_filename(table["subject_id"].iloc[0], "", 0)).rename(  # the plain name is found too
        folder / routing_filename(table["subject_id"].iloc[0], ""))
    out = tmp_path / "no-model"
    code = main(["--routing", str(folder), "--input", str(cohort), "--out", str(out), "--no-occlusion",
                 "--shuffles", "10", "--subject-figures", "0", "--group-by", "diagnosis"])
    assert code == 1
    stages = [line for line in capsys.readouterr().err.splitlines() if line.startswith("report: ")]
    assert [line.split(" ")[2] for line in stages if line.endswith("...")] == ["routing", "analyse", "render", "write"]
    rows = pd.read_csv(out / "tables" / "predictions.csv")
    assert rows["status"].tolist() == ["ok"] * 3 + ["error"] and "no saved routing" in rows["error"].iloc[-1]
    for subject, age in zip(rows["subject_id"][:3], rows["predicted_age"][:3]):
        assert age == pytest.approx(predicted[subject], abs=0.01)
    assert not (out / "tables" / "occlusion_sensitivity.csv").exists()
    # the same tables as a model run on the same scans
    direct = tmp_path / "direct"
    main(["--model", str(checkpoint), "--input", str(cohort), "--out", str(direct), "--no-occlusion",
          "--shuffles", "10", "--subject-figures", "0", "--max-subjects", "3", "--workers", "0"])
    saved_table = pd.read_csv(out / "tables" / "layer1_region_expert_top1.csv")
    direct_table = pd.read_csv(direct / "tables" / "layer1_region_expert_top1.csv")
    pd.testing.assert_frame_equal(saved_table, direct_table)
    # occlusion with saved routing runs the model on the kept scans only
    with_model = tmp_path / "occlusion"
    assert main(["--model", str(checkpoint), "--routing", str(folder), "--input", str(cohort), "--out",
                 str(with_model), "--occlusion-subjects", "2", "--shuffles", "10", "--subject-figures", "0",
                 "--workers", "0"]) == 1
    assert len(pd.read_csv(with_model / "tables" / "occlusion_sensitivity.csv")) > 10
    capsys.readouterr()
    assert main(["--routing", str(folder), "--input", str(cohort), "--out", str(tmp_path / "x")]) == 2
    assert "--model is required" in capsys.readouterr().err


def test_usage_errors_exit_2_and_name_the_problem(tmp_path, capsys, checkpoint, cohort):
    atlas_only = ["--model", str(checkpoint), "--input", str(tmp_path), "--out", str(tmp_path / "r"),
                  "--atlas", str(tmp_path / "a.nii.gz")]
    assert main(atlas_only) == 2
    assert "--atlas and --atlas-names go together" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing.ckpt"), "--input", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    assert main(["--model", str(checkpoint), "--input", str(cohort), "--out", str(tmp_path / "g"),
                 "--group-by", "handedness"]) == 2
    assert "'handedness' not found" in capsys.readouterr().err
    assert main(["--routing", str(tmp_path / "nope"), "--input", str(cohort), "--out", str(tmp_path / "n"),
                 "--no-occlusion"]) == 2
    assert "nope" in capsys.readouterr().err

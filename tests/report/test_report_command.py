"""`brainage report` end to end on a tiny random-init BrainAgeViT and a synthetic BIDS cohort (real NIfTI files)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainage.data.synth import synthesize_cohort
from brainage.data.transforms import Preprocessing
from brainage.model import BrainAgeViT, MoEConfig
from brainage.report.command import main
from brainage.training.card import checkpoint_metadata

SHAPE = (24, 32, 24)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    synthesize_cohort(out, n=3, seed=3, spacing=4.0, workers=1)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = BrainAgeViT(img_size=SHAPE, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                      moe=MoEConfig(num_experts=3, top_k=2))
    pre = Preprocessing(spacing=6.0, shape=SHAPE, augment=False)
    meta = checkpoint_metadata(net, pre.to_dict(), pre.contract(), 50.0, 15.0, {"age_mean": 50.0}, {}, None)
    path = tmp_path_factory.mktemp("model") / "tiny.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "brainage": meta}, path)
    return path


EVIL = "<script>alert(1)</script>"


def test_report_writes_tables_maps_and_a_self_contained_page(cohort, checkpoint, tmp_path, capsys):
    # manifest: a subject id planted with markup, and a broken file whose name holds markup (becomes an error row)
    participants = pd.read_csv(cohort / "participants.tsv", sep="\t")
    scans = sorted(cohort.glob("sub-*/anat/*_T1w.nii.gz"))
    bad = tmp_path / "bad&<i>.nii.gz"
    bad.write_bytes(b"not a nifti")
    manifest = pd.DataFrame({"subject_id": [EVIL, *participants["participant_id"][1:], "broken"],
                             "path": [*map(str, scans), str(bad)], "age": [*participants["age"], 40.0]})
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "report"
    code = main(["--model", str(checkpoint), "--input", str(tmp_path / "manifest.csv"), "--out", str(out),
                 "--ground-truth", str(cohort / "ground_truth.json"), "--occlusion-subjects", "2",
                 "--shuffles", "20", "--subject-figures", "1", "--workers", "0"])
    assert code == 1  # report written, one input failed
    assert f"report: {out / 'index.html'}" in capsys.readouterr().out
    top1 = pd.read_csv(out / "tables" / "layer1_region_expert_top1.csv")
    gated = pd.read_csv(out / "tables" / "layer1_region_expert_gated.csv")
    fractions = [f"fraction_{e}" for e in range(3)]
    np.testing.assert_allclose(top1[fractions].sum(axis=1), 1.0)
    np.testing.assert_allclose(top1["voxels"], gated["voxels"], rtol=1e-5)  # gates sum to 1 per token
    assert "L-lateral-ventricle" in set(top1["region"])
    freq = nib.load(out / "maps" / "layer1_expert0_freq.nii.gz")
    assert freq.shape == SHAPE and np.all(np.abs(np.diag(freq.affine)[:3]) == 6.0)
    total = sum(np.asarray(nib.load(out / "maps" / f"layer1_expert{e}_freq.nii.gz").dataobj) for e in range(3))
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # every voxel has exactly one top-1 expert
    ranked = pd.read_csv(out / "tables" / "occlusion_sensitivity.csv")
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1)) and (ranked["mean_abs_delta"] >= 0).all()
    mi = pd.read_csv(out / "tables" / "mutual_information.csv")
    assert sorted(mi["layer"]) == [0, 1] and (mi["shuffles"] == 20).all()
    page = (out / "index.html").read_text()
    assert "Research use only" in page and "Validation against ground truth" in page and "precision@" in page
    assert page.count("data:image/png;base64,") >= 1 + 3 + 1 + 1  # scatter, 3 expert maps, occlusion, 1 subject
    assert "<script" not in page and html.escape(EVIL) in page  # planted id shown as text (table and subject heading)
    assert html.escape("bad&<i>.nii.gz") in page and "<i>" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)


def test_usage_errors_exit_2_and_name_the_problem(tmp_path, capsys, checkpoint):
    atlas_only = ["--model", str(checkpoint), "--input", str(tmp_path), "--out", str(tmp_path / "r"),
                  "--atlas", str(tmp_path / "a.nii.gz")]
    assert main(atlas_only) == 2
    assert "--atlas and --atlas-names go together" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing.ckpt"), "--input", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "missing.ckpt" in capsys.readouterr().err

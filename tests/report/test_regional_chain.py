"""`brainage report --regional-chain`: the regional age models run on scans prepared by another data chain (the
shipped registered one) than the model's, skip and name a scan that chain cannot read, and refuse a chain file that
is missing, holds no preprocessing list or names a transform outside the allow-list."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from brainage.contracts.checkpoint import checkpoint_metadata, save_checkpoint
from brainage.data.preprocessing import Preprocessing, PreprocessingError
from brainage.data.synth import synthesize_cohort
from brainage.model import BrainAgeViT, MoEConfig
from brainage.report.collect import read_chain
from brainage.report.command import main

ROOT = Path(__file__).resolve().parents[2]
REGISTERED = ROOT / "configs" / "data" / "synthetic_registered.yaml"
SHAPE = (24, 32, 24)


def test_read_chain_takes_a_data_yaml_or_a_fit_config_and_refuses_the_rest(tmp_path):
    chain = read_chain(REGISTERED)
    assert chain.spacing == 3.0 and any(e["class_path"].endswith("RegisterToTemplated") for e in chain.spec)
    fit = tmp_path / "fit.yaml"
    data = yaml.safe_load(REGISTERED.read_text())
    fit.write_text(yaml.safe_dump({"trainer": {"max_epochs": 1}, "data": data}))
    assert read_chain(fit) == chain
    fit.write_text(yaml.safe_dump({"data": {**data, "spacing": 6.0, "shape": [24, 32, 24]}}))
    assert (read_chain(fit).spacing, read_chain(fit).shape) == (6.0, (24, 32, 24))  # the datamodule's shorthands
    with pytest.raises(FileNotFoundError, match="--regional-chain file not found"):
        read_chain(tmp_path / "absent.yaml")
    (tmp_path / "empty.yaml").write_text("batch_size: 8\n")
    with pytest.raises(ValueError, match="no preprocessing list found"):
        read_chain(tmp_path / "empty.yaml")
    (tmp_path / "evil.yaml").write_text("preprocessing:\n  - {class_path: os.system, init_args: {command: 'true'}}\n")
    with pytest.raises(PreprocessingError):
        read_chain(tmp_path / "evil.yaml")


@pytest.mark.slow  # registers 23 scans
def test_report_fits_the_regional_models_on_registered_scans(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    synthesize_cohort(cohort, n=23, seed=4, spacing=4.0, workers=1)
    bad = sorted(cohort.glob("sub-0003/anat/*.nii.gz"))[0]
    img = nib.load(bad)
    nib.save(nib.Nifti1Image(np.ones(img.shape, np.float32), img.affine), bad)  # constant: no chain reads it
    torch.manual_seed(0)
    net = BrainAgeViT(img_size=SHAPE, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                      moe=MoEConfig(num_experts=3, top_k=2))
    pre = Preprocessing(spacing=6.0, shape=SHAPE, augment=False)
    meta = checkpoint_metadata(net, pre.to_dict(), pre.contract(), 50.0, 15.0, {"age_mean": 50.0}, {}, None)
    model = save_checkpoint(tmp_path / "tiny.ckpt", net.state_dict(), meta)
    out = tmp_path / "report"
    absent = tmp_path / "absent.yaml"
    args = ["--model", str(model), "--input", str(cohort), "--out", str(out)]
    assert main([*args, "--regional-chain", str(absent)]) == 2
    assert f"--regional-chain file not found: {absent}" in capsys.readouterr().err and not out.exists()  # before work
    assert main(["--model", str(model), "--input", str(cohort), "--out", str(out), "--no-occlusion",
                 "--regional-chain", str(REGISTERED), "--shuffles", "5", "--subject-figures", "0",
                 "--workers", "0"]) == 1  # report written, one input failed (the constant scan)
    table = pd.read_csv(out / "tables" / "regional_age_models.csv")
    assert len(table) >= 80 and table["gain"].is_monotonic_decreasing  # the 3 mm registered grid, not the model's
    page = (out / "index.html").read_text()
    err = capsys.readouterr().err
    assert f"regional age models: skipped {bad}: " in err and "constant" in err  # named, with the reason
    assert "22 scans with a known age prepared by synthetic_registered.yaml, 1 skipped" in page
    gain = nib.load(out / "maps" / "regional_age_gain.nii.gz")
    assert gain.shape == SHAPE  # painted on the model's grid for the page

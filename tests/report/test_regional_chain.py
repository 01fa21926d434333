"""`brainage report --regional-chain`: by default the regional age models run on scans prepared by the model's chain
with nonlinear normalisation added; `model` keeps the model's own chain, and a data YAML (the shipped registered one)
prepares them by that chain. Scans the chain cannot read are skipped and named; a chain file that is missing, holds no
preprocessing list or names a transform outside the allow-list is refused."""

from __future__ import annotations

import dataclasses
import html
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
from brainage.predict.model import load_model
from brainage.report.collect import read_chain, regional_chain
from brainage.report.command import main
from brainage.report.settings import ReportSettings

ROOT = Path(__file__).resolve().parents[2]
REGISTERED = ROOT / "configs" / "data" / "synthetic_registered.yaml"
PLAIN = ROOT / "configs" / "data" / "synthetic.yaml"
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


def test_registration_is_added_to_a_plain_chain_at_its_spacing():
    plain = read_chain(PLAIN)
    assert not plain.registered and read_chain(REGISTERED).registered
    assert plain.with_registration() == read_chain(REGISTERED)  # the shipped registered chain is this one
    registered = read_chain(REGISTERED)
    assert registered.with_registration() is registered  # never registered twice
    coarse = Preprocessing(spacing=6.0, shape=SHAPE, augment=False).with_registration()
    steps = [e["class_path"].rsplit(".", 1)[1] for e in coarse.spec]
    assert steps[steps.index("Orientationd") + 1] == "RegisterToTemplated"
    assert coarse.spec[steps.index("RegisterToTemplated")]["init_args"]["spacing"] == 6.0
    assert (coarse.spacing, coarse.shape) == (6.0, SHAPE)


def _tiny_checkpoint(path: Path, pre: Preprocessing) -> Path:
    torch.manual_seed(0)
    net = BrainAgeViT(img_size=SHAPE, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                      moe=MoEConfig(num_experts=3, top_k=2))
    meta = checkpoint_metadata(net, pre.to_dict(), pre.contract(), 50.0, 15.0, {"age_mean": 50.0}, {}, None)
    return save_checkpoint(path, net.state_dict(), meta)


def test_the_regional_chain_is_resolved_from_the_model_or_a_file(tmp_path):
    plain = Preprocessing(spacing=6.0, shape=SHAPE, augment=False)
    model = load_model(str(_tiny_checkpoint(tmp_path / "plain.ckpt", plain)), "cpu")
    registered = load_model(str(_tiny_checkpoint(tmp_path / "reg.ckpt", plain.with_registration())), "cpu")
    settings = ReportSettings(inputs=("x",), out=tmp_path / "out", model="plain.ckpt")
    assert settings.regional_chain == "registered"  # the default
    assert regional_chain(settings, model) == plain.with_registration()  # registration added
    assert regional_chain(settings, registered) is None  # the model's own pass already registers: no second pass
    assert regional_chain(settings, None) is None  # saved routing only: nothing to derive it from
    assert regional_chain(dataclasses.replace(settings, regional_chain="model"), model) is None
    apart = dataclasses.replace(settings, regional_chain="model", regional_inputs=("cohort/",))
    assert regional_chain(apart, model) is model.preprocessing  # other scans: prepared apart, by the model's chain
    own = registered.preprocessing
    assert regional_chain(dataclasses.replace(apart, regional_chain="registered"), registered) is own
    from_file = dataclasses.replace(settings, regional_chain=str(REGISTERED))
    assert regional_chain(from_file, model) == read_chain(REGISTERED)
    assert regional_chain(dataclasses.replace(settings, regional_chain=str(REGISTERED), regional_subjects=0),
                          model) is None  # off


@pytest.mark.slow  # registers 23 scans twice
def test_report_fits_the_regional_models_on_registered_scans(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    synthesize_cohort(cohort, n=23, seed=4, spacing=4.0, workers=1)
    bad = sorted(cohort.glob("sub-0003/anat/*.nii.gz"))[0]
    img = nib.load(bad)
    nib.save(nib.Nifti1Image(np.ones(img.shape, np.float32), img.affine), bad)  # constant: no chain reads it
    model = _tiny_checkpoint(tmp_path / "tiny.ckpt", Preprocessing(spacing=6.0, shape=SHAPE, augment=False))
    out = tmp_path / "report"
    absent = tmp_path / "absent.yaml"
    args = ["--model", str(model), "--input", str(cohort), "--out", str(out)]
    assert main([*args, "--regional-chain", str(absent)]) == 2
    assert f"--regional-chain file not found: {absent}" in capsys.readouterr().err and not out.exists()  # before work
    assert main(["--model", str(model), "--input", str(cohort), "--out", str(out), "--no-occlusion",
                 "--regional-chain", str(REGISTERED), "--shuffles", "5", "--subject-figures", "0",
                 "--workers", "0"]) == 1  # report written, one input failed (the constant scan)
    table = pd.read_csv(out / "tables" / "regional_age_models.csv")
    assert len(table) >= 80 and table["demoted"].is_monotonic_increasing  # the 3 mm registered grid, not the model's
    assert all(group["evidence"].is_monotonic_decreasing for _, group in table.groupby("demoted"))  # demoted ones last
    page = (out / "index.html").read_text()
    assert "contraction t" in page and "Order: evidence." in page  # the order's columns and its explanation
    assert "border voxel holds in part" in page  # the bleed pattern, said beside the matched filter
    assert ("each score is also taken beside the push" in page) == table["push_falloff"].all()  # said when it is
    err = capsys.readouterr().err
    assert f"regional age models: skipped {bad}: " in err and "constant" in err  # named, with the reason
    assert "22 scans with a known age prepared by synthetic_registered.yaml, 1 skipped" in page
    assert "from other regions, all of them (fewer than 200 scans: no voxel cap)" in page  # below CAP_FROM_SUBJECTS
    gain = nib.load(out / "maps" / "regional_age_gain.nii.gz")
    assert gain.shape == SHAPE  # painted on the model's grid for the page
    quick = ["--no-occlusion", "--shuffles", "5", "--subject-figures", "0", "--workers", "0"]
    assert main([*args[:-1], str(tmp_path / "default"), *quick]) == 1  # no --regional-chain: registered
    page = html.unescape((tmp_path / "default" / "index.html").read_text())
    assert ("22 scans with a known age prepared by the model's chain with nonlinear normalisation "
            "(--regional-chain registered), 1 skipped") in page
    assert main([*args[:-1], str(tmp_path / "own"), *quick, "--regional-chain", "model"]) == 1
    assert "22 scans with a known age on the main model grid" in (tmp_path / "own" / "index.html").read_text()
    held_out = tmp_path / "held_out.csv"  # the report on 3 scans, the regional models on the whole cohort
    pd.read_csv(cohort / "participants.tsv", sep="\t").iloc[3:6].assign(
        path=lambda t: [str(next(cohort.glob(f"{s}/anat/*.nii.gz"))) for s in t["participant_id"]]
    )[["path", "age"]].to_csv(held_out, index=False)
    assert main(["--model", str(model), "--input", str(held_out), "--out", str(tmp_path / "apart"), *quick,
                 "--regional-chain", "model", "--regional-input", str(cohort)]) == 0  # the bad scan is not an input
    page = html.unescape((tmp_path / "apart" / "index.html").read_text())
    assert ("22 scans with a known age from --regional-input, prepared by the model's chain (--regional-chain "
            "model), 1 skipped") in page
    assert main(["--model", str(model), "--input", str(held_out), "--out", str(tmp_path / "few"), *quick,
                 "--regional-input", str(held_out)]) == 2  # refused before any work
    assert f"--regional-input {held_out}: found 3 scans, 3 with a known age; the regional age models need at least 20" \
        in capsys.readouterr().err and not (tmp_path / "few").exists()

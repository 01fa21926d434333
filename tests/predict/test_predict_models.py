"""Model loading for prediction: checkpoint path, MLflow run and registered model (real sqlite store), the input
contract check, and refusal of files that are not brainage checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from tests.helpers.predict import GRID, SPACING, read_rows, save_checkpoint, write_scans

from brainage.data.datamodule import BrainAgeDataModule
from brainage.data.preprocessing import Preprocessing, default_deterministic
from brainage.predict import ModelLoadError, load_model, main
from brainage.tracking import register_model


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_ckpt):
    """A real sqlite MLflow store with one run holding checkpoints/best.ckpt, registered as brainage-tiny v1."""
    tmp_path = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("predict", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    best = tmp_path / "upload" / "best.ckpt"
    best.parent.mkdir()
    best.write_bytes(tiny_ckpt.read_bytes())
    client.log_artifact(run.info.run_id, str(best), "checkpoints")
    client.set_terminated(run.info.run_id)
    version = register_model(run.info.run_id, "brainage-tiny", uri)
    return uri, run.info.run_id, version


def test_checkpoint_run_and_registered_model_give_the_same_net(store, tiny_ckpt):
    uri, run_id, version = store
    assert version == "1"
    x = torch.randn(2, 1, 16, 16, 16)
    reference = load_model(tiny_ckpt).net(x).pred
    for spec in (f"runs:/{run_id}", f"runs:/{run_id}/checkpoints/best.ckpt", f"models:/brainage-tiny/{version}"):
        model = load_model(spec, tracking_uri=uri)
        torch.testing.assert_close(model.net(x).pred, reference, msg=spec)


def test_cli_predicts_with_a_registered_model_from_the_environment_store(store, tmp_path, monkeypatch):
    uri, _, version = store
    write_scans(tmp_path / "scans", 2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "pred.csv"
    code = main(["--model", f"models:/brainage-tiny/{version}", "--input", str(tmp_path / "scans"),
                 "--output", str(out), "--workers", "0"])
    assert code == 0
    assert [r["status"] for r in read_rows(out)] == ["ok", "ok"]


def test_a_downloaded_checkpoint_is_removed_when_the_process_exits(store):
    """Each prediction from an MLflow URI downloads the checkpoint: the copy must not pile up in the temp folder."""
    uri, run_id, _ = store
    code = ("import sys; from brainage.predict.model import load_model, resolve_model_path; "
            "path = resolve_model_path(sys.argv[1], sys.argv[2]); load_model(path); "
            "assert path.is_file() and path.stat().st_size > 0; print(path)")
    done = subprocess.run([sys.executable, "-c", code, f"runs:/{run_id}", uri], capture_output=True, text=True,
                          check=True, timeout=300)
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.name == "best.ckpt" and path.parent.name.startswith("brainage-")
    assert not path.exists() and not path.parent.exists()  # the whole download folder is gone


def test_unknown_run_or_model_is_a_clear_error(store):
    uri, _, _ = store
    with pytest.raises(ModelLoadError, match="could not be fetched"):
        load_model("models:/no-such-model/1", tracking_uri=uri)
    with pytest.raises(ModelLoadError, match="runs:/0123456789abcdef"):
        load_model("runs:/0123456789abcdef", tracking_uri=uri)


def test_predict_rebuilds_the_exact_chain_of_the_checkpoint(tmp_path):
    """A non-default chain declared for training (robust percentile scaling, extra smoothing) is what predict runs:
    the same tensor as the datamodule's deterministic output for the same file, not the default chain."""
    chain = [*default_deterministic(SPACING, GRID)[:5],
             {"class_path": "monai.transforms.GaussianSmoothd", "init_args": {"sigma": 1.0}},
             {"class_path": "monai.transforms.ScaleIntensityRangePercentilesd",
              "init_args": {"lower": 1, "upper": 99, "b_min": 0.0, "b_max": 1.0, "clip": True}},
             *default_deterministic(SPACING, GRID)[6:]]
    data = BrainAgeDataModule(str(tmp_path), preprocessing=chain, augment=True)
    pre = data.preprocessing
    ckpt = save_checkpoint(tmp_path / "custom.ckpt", contract=pre.contract(), preprocessing=pre.to_dict())
    model = load_model(ckpt)
    assert model.preprocessing == Preprocessing(chain, augment=False)
    assert model.preprocessing.augmentation().transforms == ()  # predict never augments
    (scan,) = write_scans(tmp_path / "scans", 1)
    expected = pre.deterministic()({"image": str(scan)})["image"]
    got = model.transform({"image": str(scan)})["image"]
    torch.testing.assert_close(got.as_tensor(), expected.as_tensor(), atol=0, rtol=0)
    default = Preprocessing(spacing=SPACING, shape=GRID).deterministic()({"image": str(scan)})["image"]
    assert not torch.allclose(got.as_tensor(), default.as_tensor(), atol=1e-2)  # the chain mattered
    assert float(got.min()) >= 0 and float(got.max()) <= 1  # percentile-scaled, clipped


@pytest.mark.parametrize("class_path", ["os.system", "builtins.eval", "monai.transforms.Lambdad"])
def test_checkpoint_with_a_disallowed_transform_is_refused_before_anything_runs(tmp_path, class_path):
    marker = tmp_path / "pwned"
    stored = Preprocessing(spacing=SPACING, shape=GRID, augment=False).to_dict()
    stored["deterministic"].insert(2, {"class_path": class_path,
                                       "init_args": {"command": f"touch {marker}", "func": f"touch {marker}"}})
    ckpt = save_checkpoint(tmp_path / "evil.ckpt", preprocessing=stored)
    with pytest.raises(ModelLoadError, match="preprocessing spec is refused.*not allowed|refused: .*refused"):
        load_model(ckpt)
    assert not marker.exists()


def test_checkpoint_with_an_incomplete_chain_is_refused(tmp_path):
    stored = Preprocessing(spacing=SPACING, shape=GRID, augment=False).to_dict()
    stored["deterministic"] = [e for e in stored["deterministic"] if not e["class_path"].endswith("Spacingd")]
    with pytest.raises(ModelLoadError, match="no resampling in the chain"):
        load_model(save_checkpoint(tmp_path / "nospacing.ckpt", preprocessing=stored))


def test_checkpoint_of_the_old_format_gets_the_default_chain(tmp_path):
    """Checkpoints written before chains were stored hold only the grid (and the old augmentation knobs)."""
    old = {"spacing": SPACING, "shape": list(GRID), "augment": True, "affine_prob": 0.0, "bias_field_prob": 0.0}
    model = load_model(save_checkpoint(tmp_path / "old.ckpt", preprocessing=old))
    assert model.preprocessing == Preprocessing(spacing=SPACING, shape=GRID, augment=False)


@pytest.mark.parametrize("key, value, message", [
    ("spacing_mm", 2.0, "spacing_mm: card says 2.0, preprocessing does 4.0"),
    ("shape", [32, 32, 32], "shape: card says"),
    ("orientation", "LPS", "orientation: card says 'LPS'"),
    ("normalisation", "min-max", "normalisation"),
])
def test_contract_mismatch_is_refused(tmp_path, key, value, message):
    contract = Preprocessing(spacing=4.0, shape=(16, 16, 16)).contract() | {key: value}
    bad = save_checkpoint(tmp_path / "bad.ckpt", contract=contract)
    with pytest.raises(ModelLoadError, match="input contract does not match") as err:
        load_model(bad)
    assert message in str(err.value)


def test_non_brainage_pickled_and_missing_models(tmp_path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(ModelLoadError, match="not a brainage checkpoint"):
        load_model(plain)
    evil = tmp_path / "evil.ckpt"
    torch.save({"brainage": object()}, evil)
    with pytest.raises(ModelLoadError, match="never unpickles"):
        load_model(evil)
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "missing.ckpt")
    write_scans(tmp_path / "scans", 1)
    assert main(["--model", str(evil), "--input", str(tmp_path / "scans"), "--output", str(tmp_path / "o.csv")]) == 2
    assert not (tmp_path / "o.csv").exists()

"""Model loading for prediction: checkpoint path, MLflow run and registered model (real sqlite store), the input
contract check, and refusal of files that are not brainage checkpoints."""

from __future__ import annotations

import mlflow
import pytest
import torch
from predict_fixtures import read_rows, save_checkpoint, write_scans

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


def test_unknown_run_or_model_is_a_clear_error(store):
    uri, _, _ = store
    with pytest.raises(ModelLoadError, match="could not be fetched"):
        load_model("models:/no-such-model/1", tracking_uri=uri)
    with pytest.raises(ModelLoadError, match="runs:/0123456789abcdef"):
        load_model("runs:/0123456789abcdef", tracking_uri=uri)


@pytest.mark.parametrize("key, value, message", [
    ("spacing_mm", 2.0, "spacing_mm: card says 2.0, preprocessing does 4.0"),
    ("shape", [32, 32, 32], "shape: card says"),
    ("orientation", "LPS", "orientation: card says 'LPS'"),
    ("normalisation", "min-max", "normalisation"),
])
def test_contract_mismatch_is_refused(tmp_path, key, value, message):
    from brainage.data.transforms import Preprocessing

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

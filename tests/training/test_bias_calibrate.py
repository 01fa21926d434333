"""Age-bias correction end to end: fitted on validation at the end of fit (best weights), stored in the checkpoint
and card, used by validate/test for corrected metrics, and refitted on user controls by `brainage calibrate`."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from brainage.predict import load_model
from brainage.contracts.checkpoint import read_checkpoint
from brainage.contracts.bias import fit_bias_correction
from brainage.calibrate import main as calibrate_main
from brainage.training.callbacks import validation_predictions
from brainage.training.cli import BrainAgeCLI
from tests.helpers.training import fit_args

pytestmark = pytest.mark.slow  # trains a model


@pytest.fixture(scope="module")
def trained(cohort12, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bias-run")
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    # a 3-epoch model barely follows age: accept any positive slope so the mechanism is exercised
    cli = BrainAgeCLI(args=["fit", *fit_args(cohort12, run_dir, uri, epochs=3, min_slope=1e-6),
                            "--model.lr", "0.003"])
    return run_dir, uri, cli


def test_correction_is_fitted_on_validation_with_the_best_weights(trained):
    run_dir, uri, cli = trained
    best = run_dir / "checkpoints" / "best.ckpt"
    card = read_checkpoint(best).card
    correction = card["bias_correction"]
    assert correction["fit_on"].startswith("validation split, n=4")
    age, predicted = validation_predictions(cli.model.net, best, cli.datamodule.datasets["val"], 2, torch.device("cpu"))
    expected = fit_bias_correction(age, predicted, fit_on="", min_slope=1e-6)
    assert correction["slope"] == pytest.approx(expected["slope"], rel=1e-5)
    assert correction["intercept"] == pytest.approx(expected["intercept"], rel=1e-5)
    val_ages = sorted(cli.datamodule.datasets["val"].rows["age"].astype(float))
    assert sorted(age) == pytest.approx(val_ages, abs=1e-4)  # the validation split, never the test split
    on_disk = json.loads((run_dir / "checkpoints" / "best.card.json").read_text())
    assert on_disk["bias_correction"] == correction
    for key in ("input_contract", "training_cohort", "validation_metrics", "versions", "intended_use"):
        assert on_disk[key], key
    assert "not for diagnosis" in on_disk["intended_use"] and "val/mae" in on_disk["validation_metrics"]
    assert on_disk["training_cohort"]["n_train"] == 6 and on_disk["training_cohort"]["age_min"] > 0
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("brainage-demo").experiment_id])
    assert run.data.metrics["bias_correction/slope"] == pytest.approx(correction["slope"])


def test_validate_and_test_report_corrected_metrics(trained):
    run_dir, _, cli = trained
    best = str(run_dir / "checkpoints" / "best.ckpt")
    (val,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)
    # on its own fit set the linear correction centres the gap: corrected mean BAG = 0
    assert abs(val["val/corrected/bag_mean"]) < 0.05
    assert val["val/n"] == 4 and "val/corrected/r_bag_age" in val
    (test,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)
    assert test["test/n"] == 2 and "test/corrected/mae" in test and "test/mae" in test


def test_calibrate_refits_on_user_controls(trained, cohort12, tmp_path, capsys):
    run_dir, _, _ = trained
    out = tmp_path / "calibrated.ckpt"
    code = calibrate_main(["--model", str(run_dir / "checkpoints" / "best.ckpt"), "--input", str(cohort12),
                           "--output", str(out), "--workers", "0", "--min-slope", "1e-6"])
    assert code == 0 and "calibrated model" in capsys.readouterr().out
    loaded = load_model(out)
    fit = loaded.card["bias_correction"]
    assert fit["fit_on"] == f"user controls: {cohort12}, n=12" and fit["n"] == 12
    assert json.loads(out.with_suffix(".card.json").read_text())["bias_correction"] == fit
    original = read_checkpoint(run_dir / "checkpoints" / "best.ckpt").raw
    calibrated = read_checkpoint(out).raw
    assert all(torch.equal(original["state_dict"][k], v) for k, v in calibrated["state_dict"].items())


def test_calibrate_errors_and_help(tmp_path, capsys, cohort12):
    assert calibrate_main(["--model", str(tmp_path / "missing.ckpt"), "--input", str(cohort12),
                           "--output", str(tmp_path / "x.ckpt")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        calibrate_main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "models:/" in text and "de Lange" in text

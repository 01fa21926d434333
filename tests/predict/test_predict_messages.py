"""What `brainage predict` tells a new user: why rows failed (without --verbose), that a JSON file is not a model
(never torch's advice to unpickle), and what the bias-corrected age is for, with the sample size said once."""

from __future__ import annotations

from brainage.predict import main, summarise
from tests.helpers.predict import write_scans


def test_failed_rows_say_why_without_verbose(tmp_path, tiny_ckpt, capsys):
    write_scans(tmp_path / "scans", 1)
    missing = tmp_path / "missing_dir"
    code = main(["--model", str(tiny_ckpt), "--input", str(tmp_path / "scans"), str(missing), "--output",
                 str(tmp_path / "out.csv"), "--workers", "0"])
    assert code == 1
    captured = capsys.readouterr()
    assert "1 of 2 scans predicted, 1 failed" in captured.out
    (line,) = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert str(missing) in line and "not found" in line


def test_a_json_file_is_not_a_model_and_no_unpickling_advice(tmp_path, capsys):
    (tmp_path / "model.json").write_text('{"net": "BrainAgeViT"}\n')
    write_scans(tmp_path / "scans", 1)
    assert main(["--model", str(tmp_path / "model.json"), "--input", str(tmp_path / "scans"), "--output",
                 str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert "model.json: not a checkpoint file (it starts with b'{\"net\": \"Bra')" in err
    assert "weights_only" not in err and "Traceback" not in err


def test_summary_says_n_once_and_what_the_correction_is_for():
    correction = {"slope": 0.6, "intercept": 20.0, "fit_on": "validation split, n=60, best checkpoint best.ckpt",
                  "n": 60}
    rows = [{"status": "ok", "age": str(a), "predicted_age": str(p), "corrected_age": str((p - 20.0) / 0.6)}
            for a, p in ((30.0, 40.0), (50.0, 50.0), (70.0, 62.0))]
    text = "\n".join(summarise(rows, {"bias_correction": correction, "training_cohort": {"age_mean": 50.0}}))
    assert text.count("n=60") == 1
    assert "removes the dependence of the brain-age gap on age" in text and "not an accuracy fix" in text
    assert "(corrected_age: " in text
    calibrated = {**correction, "fit_on": "user controls: controls.csv", "n": 12}
    assert "n=12" in "\n".join(summarise(rows, {"bias_correction": calibrated}))

"""A crafted checkpoint must not run code: the preprocessing chain's arguments are allow-listed per transform, so
predict, report and calibrate refuse the model (exit 2) before anything is built."""

from __future__ import annotations

import pytest
from tests.helpers.predict import GRID, SPACING, save_checkpoint, write_scans

from brainage.data.preprocessing import Preprocessing
from brainage.predict import ModelLoadError, load_model
from brainage.predict import main as predict_main
from brainage.report.command import main as report_main
from brainage.calibrate import main as calibrate_main


@pytest.fixture
def hostile(tmp_path):
    """A checkpoint whose stored chain holds the reported LoadImaged payload, and the marker it would create."""
    marker = tmp_path / "marker"
    chain = Preprocessing(spacing=SPACING, shape=GRID, augment=False).to_dict()
    payload = {"class_path": "monai.transforms.LoadImaged",
               "init_args": {"keys": "unused", "allow_missing_keys": True, "reader": "os.system",
                             "command": f"id > {marker}"}}
    chain["deterministic"] = [payload, *chain["deterministic"]]
    return save_checkpoint(tmp_path / "hostile.ckpt", preprocessing=chain), marker


def test_load_model_refuses_the_payload(hostile):
    ckpt, marker = hostile
    with pytest.raises(ModelLoadError, match="preprocessing spec is refused.*LoadImaged"):
        load_model(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["predict", "report", "calibrate"])
def test_commands_exit_2_and_run_nothing(hostile, tmp_path, capsys, command):
    ckpt, marker = hostile
    scans = tmp_path / "scans"
    write_scans(scans, 3)
    argv = {"predict": [predict_main, "--output", str(tmp_path / "p.csv")],
            "report": [report_main, "--out", str(tmp_path / "report")],
            "calibrate": [calibrate_main, "--output", str(tmp_path / "calibrated.ckpt")]}[command]
    code = argv[0](["--model", str(ckpt), "--input", str(scans), *argv[1:]])
    assert code == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "calibrated.ckpt").exists()

"""`brainage fit` on bad input: one line on stderr naming the problem, exit status 2, no traceback, and no run in a
real sqlite MLflow store (the run is created only after the arguments and the data passed their checks)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from brainage.training.cli import main
from tests.helpers.predict import brain, write_scan
from tests.helpers.training import ROOT, TINY_ARGS

pytestmark = pytest.mark.slow  # each case builds the LightningCLI (about 15 s per case on a loaded 2-core machine)


def _runs(uri: str) -> list:
    client = mlflow.MlflowClient(tracking_uri=uri)
    return [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]


def _tiny_bids(root: Path, n: int) -> Path:
    lines = ["participant_id\tage"]
    for i in range(n):
        write_scan(root / f"sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz", brain((40, 48, 40), seed=i))
        lines.append(f"sub-{i:02d}\t{30 + i}")
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


CASES = {
    "missing data root": (["--data.root", "{tmp}/missing"], "data root '{tmp}/missing' does not exist"),
    "empty data root": (["--data.root", "{tmp}/empty"], "found 0 images with a known age; expected at least 3"),
    "too few subjects": (["--data.root", "{tmp}/two"], "found 2 images with a known age; expected at least 3"),
    "top_k above num_experts": (["--model.net.init_args.moe.top_k", "9"],
                                "invalid configuration: MoEConfig.top_k=9 must be in 1..num_experts=4"),
    "missing --ckpt_path": (["--ckpt_path", "{tmp}/nope.ckpt"], "--ckpt_path {tmp}/nope.ckpt: file not found"),
    "JSON --ckpt_path": (["--ckpt_path", "{tmp}/model.json"], "model.json: not a checkpoint file"),
    "model grid differs from data grid": (["--model.net.init_args.img_size", "[32, 32, 32]"],
                                          "model img_size=(32, 32, 32) does not match data shape=(24, 32, 24)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_fit_exits_2_with_one_line_and_creates_no_run(case, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # the demo config writes under demo-output/: keep it in tmp
    (tmp_path / "empty").mkdir()
    _tiny_bids(tmp_path / "two", 2)
    _tiny_bids(tmp_path / "five", 5)
    (tmp_path / "model.json").write_text('{"net": "BrainAgeViT"}\n')
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra, expected = CASES[case]
    args = ["fit", "--config", str(ROOT / "configs/demo.yaml"), *TINY_ARGS, "--data.root", str(tmp_path / "five"),
            "--trainer.logger.init_args.tracking_uri", uri, "--trainer.max_epochs", "1",
            *[a.format(tmp=tmp_path) for a in extra]]
    assert main(args) == 2
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("brainage fit: error: "), err
    assert expected.format(tmp=tmp_path) in errors[0]
    assert "Traceback" not in err and "weights_only" not in err
    assert _runs(uri) == []  # the store holds no run, not even a FAILED one
    assert not list(tmp_path.rglob("*.ckpt"))

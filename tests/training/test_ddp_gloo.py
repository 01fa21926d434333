"""`brainage fit` with DDP across 2 CPU processes (gloo): the logged validation metrics cover ALL validation
samples exactly once (an odd count, so Lightning's DistributedSampler pads with a repeat that must not count), and
equal a single-process evaluation of the same checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainage.predict import load_model, predict_iter
from tests.helpers.training import fit_args

pytestmark = pytest.mark.slow  # 2-process DDP training


def test_ddp_two_cpu_processes_gather_all_validation_samples(cohort12, tmp_path):
    run_dir = tmp_path / "ddp"
    args = [*fit_args(cohort12, run_dir, f"sqlite:///{run_dir / 'mlflow.db'}", epochs=1),
            "--data.val_fraction", "0.42", "--trainer.strategy", "ddp", "--trainer.devices", "2",
            "--trainer.accelerator", "cpu", "--trainer.logger.init_args.experiment_name", "ddp"]
    brainage = Path(sys.executable).parent / "brainage"
    proc = subprocess.run([str(brainage), "fit", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "world_size: 2" in proc.stderr or "MEMBER: 2/2" in proc.stderr  # really two processes

    splits = pd.read_csv(run_dir / "splits.csv")
    val = splits[splits["split"] == "val"]
    assert len(val) % 2 == 1  # odd: one rank gets a padded repeat
    card = json.loads((run_dir / "checkpoints" / "best.card.json").read_text())
    logged = card["validation_metrics"]
    assert logged["val/n"] == len(val)

    model = load_model(run_dir / "checkpoints" / "best.ckpt")
    predicted = np.array([r.predicted_age for r in predict_iter(model, val, num_workers=0)])
    ages = val["age"].to_numpy(dtype=float)
    assert logged["val/mae"] == pytest.approx(np.abs(predicted - ages).mean(), abs=1e-3)
    assert logged["val/bag_mean"] == pytest.approx((predicted - ages).mean(), abs=1e-3)

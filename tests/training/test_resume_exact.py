"""A run killed mid-training (hard exit in the middle of an epoch) and resumed with `--ckpt_path last` ends
with the same weights and metrics as an uninterrupted run: tiny data, deterministic mode, augmentation on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from brainage.training.cli import BrainAgeCLI
from tests.helpers.training import fit_args

pytestmark = pytest.mark.slow  # trains, kills and resumes

KILLER = '''
import os
import lightning.pytorch as pl


class ExitMidEpoch(pl.Callback):
    """Die like a killed job (no cleanup, no teardown) in the middle of epoch `epoch`."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            os._exit(3)
'''


def _args(cohort: Path, run_dir: Path) -> list[str]:
    return [*fit_args(cohort, run_dir, f"sqlite:///{run_dir / 'mlflow.db'}", epochs=2), "--data.augment", "true",
            "--trainer.deterministic", "true", "--seed_everything", "123"]


@pytest.fixture
def two_threads():
    """Same torch thread count in this process and in the killed subprocess: float reductions then match."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield {"OMP_NUM_THREADS": "2"}
    torch.set_num_threads(before)


def test_killed_and_resumed_run_matches_uninterrupted(cohort12, tmp_path, two_threads):
    straight = BrainAgeCLI(args=["fit", *_args(cohort12, tmp_path / "straight")])
    assert straight.trainer.current_epoch == 2

    killed_dir = tmp_path / "killed"
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "exit_after.py").write_text(KILLER)
    # keep the caller's PYTHONPATH: the subprocess must import the same brainage as this process
    path = os.pathsep.join(p for p in (str(tmp_path / "helpers"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **two_threads, "PYTHONPATH": path}
    brainage = Path(sys.executable).parent / "brainage"
    proc = subprocess.run([str(brainage), "fit", *_args(cohort12, killed_dir), "--trainer.callbacks+",
                           "exit_after.ExitMidEpoch"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    last = killed_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0

    resumed = BrainAgeCLI(args=["fit", *_args(cohort12, killed_dir), "--ckpt_path", "last"])
    assert resumed.trainer.current_epoch == 2

    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(last, map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1 and a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-6, atol=1e-7, msg=key)
    val_a, val_b = a["brainage"]["card"]["validation_metrics"], b["brainage"]["card"]["validation_metrics"]
    assert set(val_a) == set(val_b) and "val/mae" in val_a
    for key in val_a:
        assert abs(val_a[key] - val_b[key]) <= 1e-5 * max(1.0, abs(val_a[key])), key

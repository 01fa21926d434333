"""Preprocessing the cohort in setup shows progress on a terminal (stderr a real pty here), follows the Trainer's
`enable_progress_bar`, stays quiet when stderr is not a terminal, and `progress=True` forces it."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import sys
import termios

import lightning.pytorch as pl
import pytest

from brainage.data.datamodule import BrainAgeDataModule
from tests.helpers.predict import brain, write_scan


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress-cohort")
    lines = ["participant_id\tage"]
    for i in range(6):
        write_scan(root / f"sub-{i}/anat/sub-{i}_T1w.nii.gz", brain((24, 28, 24), seed=i))
        lines.append(f"sub-{i}\t{30 + 7 * i}")
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


def _setup(cohort, stderr, progress=None, enable_progress_bar=None) -> BrainAgeDataModule:
    dm = BrainAgeDataModule(str(cohort), spacing=6.0, shape=(8, 8, 8), val_fraction=0.34, test_fraction=0.0,
                            augment=False, progress=progress)
    if enable_progress_bar is not None:
        dm.trainer = pl.Trainer(enable_progress_bar=enable_progress_bar, logger=False, enable_checkpointing=False,
                                enable_model_summary=False, default_root_dir=str(cohort.parent / "run"))
    old, sys.stderr = sys.stderr, stderr
    try:
        dm.setup("fit")
    finally:
        sys.stderr = old
    return dm


def _on_a_terminal(cohort, **kwargs) -> str:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    with os.fdopen(slave, "w") as terminal:
        assert terminal.isatty()
        _setup(cohort, terminal, **kwargs)
        terminal.flush()
        os.set_blocking(master, False)
        try:
            return os.read(master, 1 << 16).decode(errors="replace")
        except BlockingIOError:
            return ""
        finally:
            os.close(master)


def test_bar_on_a_terminal_when_the_trainer_shows_progress(cohort):
    out = _on_a_terminal(cohort, enable_progress_bar=True)
    assert "preprocess" in out and "6/6" in out


def test_no_bar_when_the_trainer_hides_its_progress_bar(cohort):
    assert "preprocess" not in _on_a_terminal(cohort, enable_progress_bar=False)


def test_quiet_when_not_a_terminal_unless_forced(cohort):
    quiet, forced = io.StringIO(), io.StringIO()
    _setup(cohort, quiet, enable_progress_bar=True)
    _setup(cohort, forced, progress=True, enable_progress_bar=False)
    assert quiet.getvalue() == ""
    assert "preprocess" in forced.getvalue() and "6/6" in forced.getvalue()

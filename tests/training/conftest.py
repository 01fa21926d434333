"""Fixtures of the training tests (helpers in tests/helpers/training.py): one tiny synthetic cohort per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainage.data.synth import synthesize_cohort


@pytest.fixture(scope="session")
def cohort12(tmp_path_factory) -> Path:
    """12 synthetic subjects (BIDS, several sites): 6 train, 4 val, 2 test with the TINY_ARGS split."""
    out = tmp_path_factory.mktemp("cohort12")
    synthesize_cohort(out, n=12, seed=11, spacing=3.0, workers=1)
    return out

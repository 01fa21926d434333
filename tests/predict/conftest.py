"""Fixtures for predict tests (helpers in tests/helpers/predict.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers.predict import save_checkpoint


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.ckpt")

"""The checkpoint contract: safe reading refuses pickles, foreign files, wrong types and non-finite values; writes
are atomic and round-trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainage.contracts.bias import apply_bias_correction, check_bias_correction, fit_bias_correction
from brainage.contracts.checkpoint import CheckpointError, read_checkpoint, save_checkpoint, update_card
from tests.helpers.predict import save_checkpoint as tiny_checkpoint


def _tampered(tmp_path, edit) -> object:
    """A tiny checkpoint with `edit(raw)` applied, written back by hand (as an attacker would)."""
    raw = read_checkpoint(tiny_checkpoint(tmp_path / "good.ckpt")).raw
    edit(raw)
    path = tmp_path / "tampered.ckpt"
    torch.save(raw, path)
    return path


def test_round_trip_and_card_update(tmp_path):
    good = read_checkpoint(tiny_checkpoint(tmp_path / "a.ckpt"))
    assert good.net_name == "BrainAgeViT" and good.target_std > 0 and good.bias_correction is None
    copy = read_checkpoint(save_checkpoint(tmp_path / "b.ckpt", good.net_state, good.raw["brainage"]))
    assert all(torch.equal(copy.net_state[k], v) for k, v in good.net_state.items())
    card = update_card(tmp_path / "b.ckpt", tmp_path / "c.ckpt", note="hello")
    assert card["note"] == "hello" and read_checkpoint(tmp_path / "c.ckpt").card["note"] == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt", "b.ckpt", "c.ckpt"]  # no temporary files left


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw["state_dict"].__setitem__(next(iter(raw["state_dict"])), torch.tensor([math.nan])),
     "not finite"),
    (lambda raw: raw["state_dict"].__setitem__(next(iter(raw["state_dict"])), torch.tensor([math.inf])),
     "not finite"),
    (lambda raw: raw["brainage"]["target"].__setitem__("std", 0.0), "target.std is 0.0"),
    (lambda raw: raw["brainage"]["target"].__setitem__("mean", math.nan), "target.mean is nan"),
    (lambda raw: raw["brainage"]["target"].__setitem__("mean", "fifty"), "target.mean is 'fifty'"),
    (lambda raw: raw["brainage"]["card"].__setitem__("bias_correction", {"slope": 0.0, "intercept": 1.0}),
     "slope is 0.0"),
    (lambda raw: raw["brainage"]["card"].__setitem__("bias_correction", {"slope": math.nan, "intercept": 1.0}),
     "finite numbers"),
    (lambda raw: raw["brainage"]["card"].__setitem__("bias_correction", "yes"), "bias_correction is a str"),
    (lambda raw: raw["brainage"].__setitem__("card", ["a"]), "card is a list"),
    (lambda raw: raw["brainage"]["net"].__setitem__("name", 3), "net.name is 3"),
    (lambda raw: raw["brainage"].__setitem__("format", "other/9"), "not a brainage checkpoint"),
])
def test_tampered_checkpoints_are_refused_with_the_entry_named(tmp_path, edit, message):
    path = _tampered(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)


def test_pickles_and_foreign_files_are_refused(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"brainage": object()}, evil)
    with pytest.raises(CheckpointError, match="never unpickles") as err:
        read_checkpoint(evil)
    assert "weights_only" not in str(err.value) and "can still be loaded" not in str(err.value)  # never suggested
    json_file = tmp_path / "model.json"
    json_file.write_text("{}")
    with pytest.raises(CheckpointError, match="model.json"):
        read_checkpoint(json_file)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_bias_correction_refuses_nan_and_non_positive_slopes():
    age = np.array([20.0, 40.0, 60.0, 80.0])
    with pytest.raises(ValueError, match="finite"):
        fit_bias_correction(age, np.array([30.0, math.nan, 50.0, 60.0]), fit_on="x")
    with pytest.raises(ValueError, match="not above min_slope"):
        fit_bias_correction(age, np.full(4, 50.0), fit_on="x")  # flat predictions: slope 0
    fit = fit_bias_correction(age, 0.5 * age + 25.0, fit_on="x")
    assert check_bias_correction(fit, "card") is fit
    np.testing.assert_allclose(apply_bias_correction(0.5 * age + 25.0, fit), age)
    assert check_bias_correction(None, "card") is None
    with pytest.raises(ValueError, match="positive slope"):
        check_bias_correction({"slope": -0.5, "intercept": 1.0}, "card")

"""The shipped comparison protocols (configs/compare/*.yaml): every candidate instantiates through the real CLI with
the protocol's layers, and the parameter-matched dense ViT matches the ERMoE model."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainage.training.cli import BrainAgeCLI
from brainage.training.compare import Candidate, _config_hash, _config_path, candidates, load_protocol

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = sorted((ROOT / "configs" / "compare").glob("*.yaml"))


def _cli(protocol, candidate: Candidate) -> BrainAgeCLI:
    layers = [*protocol.base, str(_config_path(candidate.config))]
    return BrainAgeCLI(args=[a for layer in layers for a in ("--config", layer)] + candidate.args()
                       + ["--data.test_fold", "0", "--data.num_folds", str(protocol.folds)], run=False)


def _parameters(cli: BrainAgeCLI) -> int:
    return sum(p.numel() for p in cli.model.net.parameters())


@pytest.mark.parametrize("path", PROTOCOLS, ids=lambda p: p.name)
def test_protocol_candidates_instantiate(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    protocol = load_protocol(path)
    assert protocol.folds >= 3 and protocol.reference_arm in {a.name for a in protocol.arms}
    seen = set()
    for arm in protocol.arms:
        for candidate in candidates(protocol, arm):
            if (candidate.config, candidate.overrides) in seen:
                continue
            seen.add((candidate.config, candidate.overrides))
            cli = _cli(protocol, candidate)
            assert cli.trainer.max_epochs == candidate.epochs and cli.datamodule.test_fold == 0
            for key, value in candidate.params:
                assert cli.model.hparams[key] == value
            for key, value in candidate.overrides:  # e.g. model.net.init_args.pool
                assert cli.model.net.init_args[key.rsplit(".", 1)[-1]] == value


def test_main_protocol_arms_and_parameter_matched_dense(monkeypatch):
    monkeypatch.chdir(ROOT)
    protocol = load_protocol(ROOT / "configs" / "compare" / "cpu_3mm.yaml")
    arms = {a.name: a for a in protocol.arms}
    assert set(arms) == {"ermoe", "ermoe_designs", "ermoe_fullrank", "dense", "dense_matched", "softmax_moe", "sfcn"}
    assert protocol.reference == "ermoe"
    assert arms["sfcn"].grid and all(e["optimizer"] in ("adamw", "sgd") for e in arms["sfcn"].grid)
    assert tuple(arms["ermoe"].configs) == ("vit_ermoe_tiny",) == tuple(arms["ermoe_designs"].configs[:1])
    # every shipped tiny ERMoE design competes in ermoe_designs, except full rank (its fits cost ~2x): its own arm
    designs = {p.stem for p in (ROOT / "configs" / "model").glob("vit_ermoe_*_tiny.yaml")} | {"vit_ermoe_tiny"}
    assert set(arms["ermoe_designs"].configs) == designs - {"vit_ermoe_fullrank_tiny"}
    assert tuple(arms["ermoe_fullrank"].configs) == ("vit_ermoe_fullrank_tiny",)
    assert len({a.epochs or protocol.epochs for a in protocol.arms}) == 1  # one budget
    size = {name: _parameters(_cli(protocol, candidates(protocol, arm)[0])) for name, arm in arms.items()}
    # the matched dense model matches the first-listed (default) ERMoE design; the table's "params / ref" column
    # shows the ratio to the design actually chosen in each fold
    assert abs(size["dense_matched"] / size["ermoe"] - 1) < 0.05, (arms["ermoe"].configs[0], size)
    assert size["dense"] < 0.6 * size["dense_matched"]


def test_bad_protocols_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.yaml"
    bad.write_text("arms: [{name: a, configs: [vit_dense_tiny], grid: [{learning_rate: 0.1}]}]\nreference: b\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*reference='b'.*grid keys \['learning_rate'\]"):
        load_protocol(bad)
    bad.write_text("arms: [{name: a, configs: [no_such_model]}]\n")
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        load_protocol(bad)
    bad.write_text("folds: 3\n")
    with pytest.raises(ValueError, match="not a comparison protocol"):
        load_protocol(bad)


def test_unit_identity_ignores_display_only_arguments_but_not_the_model(monkeypatch):
    """Finished units are kept when a display-only argument (`data.progress`) is set, refit when the model changes."""
    monkeypatch.chdir(ROOT)
    protocol = load_protocol(ROOT / "configs" / "compare" / "cpu_3mm.yaml")
    candidate = candidates(protocol, protocol.arms[0])[0]
    base = _config_hash(_cli(protocol, candidate))
    layers = [a for layer in (*protocol.base, str(_config_path(candidate.config))) for a in ("--config", layer)]
    shown = BrainAgeCLI(args=[*layers, *candidate.args(), "--data.test_fold", "0", "--data.num_folds",
                              str(protocol.folds), "--data.progress", "true"], run=False)
    assert _config_hash(shown) == base
    deeper = BrainAgeCLI(args=[*layers, *candidate.args(), "--data.test_fold", "0", "--data.num_folds",
                               str(protocol.folds), "--model.net.init_args.depth", "3"], run=False)
    assert _config_hash(deeper) != base

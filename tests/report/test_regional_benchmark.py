"""benchmarks/regional.py on a small real cohort: it ranks a strongly planted darkening first, writes its results
atomically and resumes from them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainage.attribution.regional import DARKENING_MAX, GROWTH_MARGIN, NEAR_MIN_GAIN
from brainage.data.effects import parse_effects
from brainage.data.synth import synthesize_cohort
from brainage.reference.atlas import load_default_atlas
from tests.report.conftest import assert_zone_rule

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # writes and preprocesses a 30-subject cohort


def _benchmark():
    spec = importlib.util.spec_from_file_location("regional_benchmark", ROOT / "benchmarks" / "regional.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_regional_benchmark_finds_a_strong_darkening_and_resumes(tmp_path):
    cohort = tmp_path / "cohort"
    effects = parse_effects("intensity:precuneus*2", load_default_atlas().names.values())
    synthesize_cohort(cohort, n=30, seed=5, spacing=3.0, workers=1, effects=effects)
    bench = _benchmark()
    folder = tmp_path / "out"
    chain = ROOT / "configs" / "data" / "synthetic.yaml"
    result = bench.run_cohort(folder, cohort, chain, None, folds=5, n_boot=200, margin=4.5)
    assert result["margin_mm"] == 4.5 and result["seed"] == 0 and 0 <= result["precision_all_voxels"] <= 1
    assert result["subjects"] == 30 and result["k"] == 2 and result["chance"] == pytest.approx(2 / 85)
    assert set(result["planted_ranks"]) == {"L-precuneus", "R-precuneus"}
    # a darkening at strength 2: one hemisphere first, the other in the top 5 of 85. At 30 scans its evidence sits among
    # near ties (3.2-3.6): the bleed pattern (H) lowers its contraction t from 0.80 to 0.38 and moves it from 3 to 5
    ranks = result["planted_ranks"]
    assert min(ranks.values()) == 1 and max(ranks.values()) <= 5, ranks
    both = result["planted_ranks_bilateral"]  # the bilateral order lists a structure's two rows together
    assert abs(both["L-precuneus"] - both["R-precuneus"]) == 1
    assert result["precision_bilateral"] == sum(r <= 2 for r in both.values()) / 2
    assert result["order"] == bench.ORDER and 0 <= result["precision_gain_order"] <= 1  # as the report orders them
    assert 0 <= result["precision_without_bleed"] <= 1  # G, the contraction scores without the bleed pattern
    assert result["versions"]["SimpleITK"] != "not installed" and set(result["versions"]) >= {"numpy", "scipy"}
    table = pd.read_csv(folder / "regional.csv")
    assert table["contraction"].notna().sum() >= 80  # every region but the ventricles (and any too small)
    assert_zone_rule(table)
    assert table["darkening"].notna().sum() >= 80
    assert len(table) == 85 and table["demoted"].is_monotonic_increasing  # regions demoted, if any: last
    assert all(group["evidence"].is_monotonic_decreasing for _, group in table.groupby("demoted"))
    se = (table["ci_high"] - table["ci_low"]) / (2 * 1.959963984540054)  # the gain's standard error
    t = table["contraction_t"].fillna(0.0)
    signed = table["darkening"].abs() < -DARKENING_MAX  # a map that does not change uniformly: a negative t counts
    np.testing.assert_allclose(table["evidence"], np.where(se > 0, table["gain"] / se, 0.0)
                               + np.where(signed, t, t.clip(lower=0.0)), rtol=1e-9, atol=1e-9)
    ventricles = table[table["region"].str.endswith("lateral-ventricle")]
    gains, pull = ventricles["gain"] >= NEAR_MIN_GAIN, ventricles["pull"].fillna(0.0)
    grows = (gains & (ventricles["expansion"] >= GROWTH_MARGIN * pull)).any()
    assert table["push_falloff"].eq(grows).all()  # one choice per table: the t beside the push's falloff or not
    assert result["push_falloff"] == grows  # and F's, without the margin, beside it
    assert result["push_falloff_without_growth_margin"] == (gains & (ventricles["expansion"] >= pull)).any()
    if result["push_falloff_without_growth_margin"] == grows:  # the same t: the same order
        assert result["precision_without_growth_margin"] == result["precision"]
    assert table["contraction_t"].notna().sum() >= 80  # every region with a share, the ventricles without
    assert (table["n_voxels"] <= table["n_voxels_all"]).all() and (table["n_voxels"] < table["n_voxels_all"]).any()
    assert json.loads((folder / "result.json").read_text()) == result
    assert not list(folder.glob(".*.tmp*"))  # atomic writes leave no temporary file
    # resumes: a finished cohort is read back, not recomputed (a missing cohort would fail to load)
    assert bench.run_cohort(folder, tmp_path / "absent", chain, None, 5, 200, 4.5) == result
    with pytest.raises(ValueError, match="use a fresh --out"):  # another margin: not silently mixed with these
        bench.run_cohort(folder, tmp_path / "absent", chain, None, 5, 200, 0.0)
    with pytest.raises(ValueError, match="use a fresh --out"):  # a subsample: not mixed with these either
        bench.run_cohort(folder, tmp_path / "absent", chain, None, 5, 200, 4.5, scans=20)
    with pytest.raises(ValueError, match="use a fresh --out"):  # size-matched gains: not mixed with these
        bench.run_cohort(folder, tmp_path / "absent", chain, None, 5, 200, 4.5, max_voxels=10)
    capped = bench.run_cohort(tmp_path / "capped", cohort, chain, None, 5, 200, 4.5, max_voxels=10)
    assert capped["max_voxels"] == 10 and result["max_voxels"] is None
    assert max(capped["planted_ranks"].values()) <= 4, capped["planted_ranks"]
    with pytest.raises(ValueError, match="use a fresh --out"):  # screened voxels: not mixed with random draws
        bench.run_cohort(tmp_path / "capped", tmp_path / "absent", chain, None, 5, 200, 4.5, max_voxels=10,
                         screen=True)
    screened = bench.run_cohort(tmp_path / "screened", cohort, chain, None, 5, 200, 4.5, max_voxels=10, screen=True)
    assert screened["screen"] and not capped["screen"] and screened["max_voxels"] == 10
    assert max(screened["planted_ranks"].values()) <= 4, screened["planted_ranks"]
    with pytest.raises(ValueError, match="use a fresh --out"):  # a ventricular margin: not mixed with these
        bench.run_cohort(folder, tmp_path / "absent", chain, None, 5, 200, 4.5, ventricle_margin=7.5)
    wide = bench.run_cohort(tmp_path / "wide", cohort, chain, None, 5, 200, 4.5, ventricle_margin=7.5,
                            all_voxels=False)  # the precuneus lies far from the ventricles: still found
    assert wide["ventricle_margin_mm"] == 7.5 and result["ventricle_margin_mm"] == 0.0
    assert "precision_all_voxels" not in wide and max(wide["planted_ranks"].values()) <= 4, wide["planted_ranks"]
    narrowed = pd.read_csv(tmp_path / "wide" / "regional.csv").set_index("region")["n_voxels"]
    before = table.set_index("region")["n_voxels"]
    assert set(narrowed.index) == set(before.index)
    narrowed = narrowed[before.index]
    assert (narrowed <= before).all() and narrowed["L-caudate"] < before["L-caudate"]  # the caudate hugs a ventricle
    assert narrowed["L-lateral-ventricle"] == before["L-lateral-ventricle"]  # the ventricles keep their interiors
    drawn = bench.run_cohort(tmp_path / "drawn", cohort, chain, None, 5, 200, 4.5, scans=20)
    assert drawn["subjects"] == 20 and drawn["scans_drawn"] == 20 and result["scans_drawn"] is None
    with pytest.raises(ValueError, match="31 scans asked for, the cohort has 30"):
        bench.run_cohort(tmp_path / "too_many", cohort, chain, None, 5, 200, 4.5, scans=31)

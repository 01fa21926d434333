"""Planted effects chosen by option: parsing, files, random draws, and a cohort written with them (real NIfTI) whose
ground truth names the chosen regions and whose images change only there."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from scipy import ndimage as ndi

from brainage.data import synth
from brainage.data.effects import PlantedEffect, draw_effects, parse_counts, parse_effects, read_effects_option
from brainage.reference.atlas import load_default_atlas
from brainage.reference.templates import mni_grid

NAMES = list(load_default_atlas().names.values())
SPACING = 3.0
DEFAULT_SUM_SEED5_4MM = 20807946  # voxel sum of sub-0001 (seed 5, 4 mm) written by synth before effects were options
CHOSEN_SUM_SEED5_4MM = 20813310  # the same with two chosen effects, written by synth before --effect-spread (5d3084d)


def test_string_form_resolves_hemispheres_directions_and_strength():
    effects = parse_effects("atrophy:hippocampus, intensity:brighten:L-precuneus*1.5,atrophy:lateral-ventricle", NAMES)
    assert effects[0] == PlantedEffect("atrophy", ("L-hippocampus", "R-hippocampus"), "shrink")
    assert effects[1] == PlantedEffect("intensity", ("L-precuneus",), "brighten", 1.5)
    assert effects[2].direction == "grow"  # the ventricles enlarge with atrophy
    assert effects[0].amplitude(20.0) == 1.0 and effects[0].amplitude(85.0) == pytest.approx(0.675)
    assert effects[1].amplitude(60.0) == pytest.approx(0.005 * 1.5 * 40)
    assert parse_effects("atrophy:brainstem", NAMES)[0].regions == ("B-brainstem",)


@pytest.mark.parametrize("text, message", [
    ("atrophy:hipocampus", "did you mean"),
    ("atrophy:darken:caudate", "shrink or grow"),
    ("shape:caudate", "effect kind"),
    ("atrophy:caudate*x", "not a number"),
    ("atrophy:caudate,intensity:L-caudate", "planted twice"),
    ("atrophy", "expected KIND"),
    ("intensity:caudate*9", "strength"),
])
def test_bad_effects_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_effects(text, NAMES)


def test_effect_files_json_and_yaml(tmp_path):
    spec = [{"kind": "atrophy", "regions": ["L-thalamusproper"]}, {"kind": "intensity", "regions": "putamen",
                                                                      "direction": "brighten", "strength": 2}]
    (tmp_path / "e.json").write_text(json.dumps(spec))
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(spec))
    a, b = read_effects_option(str(tmp_path / "e.json"), NAMES), read_effects_option(str(tmp_path / "e.yaml"), NAMES)
    assert a == b and a[1].regions == ("L-putamen", "R-putamen") and a[1].strength == 2.0
    (tmp_path / "bad.json").write_text(json.dumps([{"kind": "atrophy", "regions": ["caudate"], "size": 1}]))
    with pytest.raises(ValueError, match="unknown keys"):
        read_effects_option(str(tmp_path / "bad.json"), NAMES)
    with pytest.raises(FileNotFoundError):
        read_effects_option(str(tmp_path / "missing.yaml"), NAMES)


def test_random_draws_depend_on_the_seed_and_respect_eligibility():
    volumes = synth.atlas_volumes_mm3()
    counts = parse_counts("atrophy=2,intensity=3")
    a, b, c = (draw_effects(counts, seed, volumes) for seed in (4, 4, 5))
    assert a == b and a != c
    assert [e.kind for e in a] == ["atrophy"] * 2 + ["intensity"] * 3
    for effect in a:
        assert len(effect.regions) == 2 and all(volumes[r] >= 2000 for r in effect.regions)
        assert effect.kind == "atrophy" or "lateral-ventricle" not in effect.regions[0]
    with pytest.raises(ValueError, match="KIND=COUNT"):
        parse_counts("atrophy:2")
    with pytest.raises(ValueError, match="cannot draw"):
        draw_effects({"intensity": 500}, 0, volumes)


def _images(root: Path) -> dict[str, np.ndarray]:
    return {p.name.split("_")[0]: np.asarray(nib.load(p).dataobj, dtype=np.float64)
            for p in sorted(root.glob("sub-*/anat/*_T1w.nii.gz"))}


def test_cohort_with_chosen_effects_changes_only_their_regions(tmp_path):
    """Same subjects (same seed, one site, no nuisance) at ages 10-20 (no effect) and 84-85: the difference is the
    planted effects only, inside the planted regions, their displaced neighbours and a few mm around them."""
    effects = parse_effects("atrophy:L-thalamusproper,intensity:R-precuneus", NAMES)
    kw = {"n": 2, "seed": 3, "spacing": SPACING, "workers": 1, "nuisance": False, "n_sites": 1, "effects": effects}
    young = synth.synthesize_cohort(tmp_path / "young", age_range=(10.0, 20.0), **kw)
    old = synth.synthesize_cohort(tmp_path / "old", age_range=(84.0, 85.0), **kw)
    truth = json.loads((old / "ground_truth.json").read_text())
    assert [e["name"] for e in truth["effects"]] == ["atrophy:shrink:L-thalamusproper",
                                                     "intensity:darken:R-precuneus"]
    thal, prec = truth["effects"]
    assert thal["kind"] == "atrophy" and list(thal["regions"]) == ["L-thalamusproper"] and thal["displaced"]
    assert prec["kind"] == "intensity" and list(prec["regions"]) == ["R-precuneus"] and "displaced" not in prec
    assert set(truth["signal_regions"]) == {"L-thalamusproper", "R-precuneus"}
    assert set(truth["indirect_regions"]) == set(thal["displaced"]) - {"R-precuneus"}
    assert truth["settings"]["effects"][0]["regions"] == ["L-thalamusproper"]

    atlas = load_default_atlas()
    shape, affine = mni_grid(SPACING)
    labels = atlas.resample_to(shape, affine)
    ids = atlas.ids_by_name()
    thalamus, precuneus = labels == ids["L-thalamusproper"], labels == ids["R-precuneus"]
    # The contraction field decays as exp(-d / 5 mm) and is cut at the structure's bounding box + 20 mm (4 decays, up
    # to 20 * sqrt(3) mm away at its corners); the intensity change has a 1 mm Gaussian edge. Beyond that only
    # sub-0.01 mm displacements at sharp edges remain: under 1 % of the white-matter level (1000).
    reach = ((ndi.distance_transform_edt(~thalamus, sampling=SPACING) <= 20 * 3**0.5 + SPACING)
             | (ndi.distance_transform_edt(~precuneus, sampling=SPACING) <= 2 * SPACING))
    a, b = _images(young), _images(old)
    for pid in a:
        diff = b[pid] - a[pid]
        assert np.abs(diff[~reach]).max() <= 10, "intensity changed away from the planted regions"
        assert diff[precuneus].mean() < -50  # darkened
        right = np.abs(diff[labels == ids["R-thalamusproper"]]).mean()  # moves a little: the midline is near
        assert np.abs(diff[thalamus]).mean() > 20 and right < 0.5 * np.abs(diff[thalamus]).mean()
        assert diff[thalamus].mean() < 0  # contraction: its edge voxels now sample darker surroundings


def test_default_cohort_is_unchanged_by_the_effects_option(tmp_path):
    """The default (demo) effects render exactly as before effects became an option: digest of the first voxels."""
    root = synth.synthesize_cohort(tmp_path / "d", n=1, seed=5, spacing=4.0, workers=1)
    image = _images(root)["sub-0001"]
    truth = json.loads((root / "ground_truth.json").read_text())
    assert [e["name"] for e in truth["effects"]] == ["ventricle_enlargement", "hippocampal_atrophy",
                                                     "cortical_thinning", "white_matter_change"]
    assert "effects" not in truth["settings"] and truth["effects"][0]["displaced"]
    assert int(image.sum()) == DEFAULT_SUM_SEED5_4MM


def test_effect_spread_gives_every_effect_its_own_age(tmp_path):
    """--effect-spread: each planted effect follows biological age + its own N(0, spread) offset. The same subjects
    (same ages, sexes, sites) with and without spread differ only inside the planted regions, each region darker
    exactly when its own effect's offset is positive."""
    effects = parse_effects("intensity:L-precuneus,intensity:R-superiorfrontal", NAMES)
    kw = {"n": 6, "seed": 4, "spacing": 4.0, "workers": 1, "nuisance": False, "n_sites": 1, "effects": effects,
          "age_range": (50.0, 60.0)}
    plain = synth.synthesize_cohort(tmp_path / "plain", **kw)
    spread = synth.synthesize_cohort(tmp_path / "spread", effect_spread=10.0, **kw)
    t0, t1 = (json.loads((root / "ground_truth.json").read_text()) for root in (plain, spread))
    assert "effect_spread" not in t0["settings"] and t1["settings"]["effect_spread"] == 10.0
    assert all(s["effect_age_offsets"] == {} for s in t0["subjects"])
    keep = ("participant_id", "age", "sex", "site", "biological_age")
    assert [{k: s[k] for k in keep} for s in t0["subjects"]] == [{k: s[k] for k in keep} for s in t1["subjects"]]
    offsets = np.array([[s["effect_age_offsets"][e.name] for e in effects] for s in t1["subjects"]])  # (6, 2)
    assert offsets.shape == (6, 2) and 3 < offsets.std() < 20 and not np.allclose(offsets[:, 0], offsets[:, 1])

    shape, affine = mni_grid(4.0)
    atlas = load_default_atlas()
    labels, ids = atlas.resample_to(shape, affine), atlas.ids_by_name()
    masks = [labels == ids[e.regions[0]] for e in effects]
    near = ndi.distance_transform_edt(~(masks[0] | masks[1]), sampling=4.0) <= 12.0  # edge + site blur: < 9 mm
    a, b = _images(plain), _images(spread)
    for i, pid in enumerate(sorted(a)):
        diff = b[pid] - a[pid]
        assert np.abs(diff[~near]).max() == 0, "spread changed voxels away from the planted regions"
        for j, mask in enumerate(masks):
            if abs(offsets[i, j]) > 1:  # older own age -> darker region
                assert np.sign(diff[mask].mean()) == -np.sign(offsets[i, j]), (pid, effects[j].name)


def test_effect_spread_needs_planted_effects(tmp_path, capsys):
    assert synth.main(["--n", "2", "--out", str(tmp_path / "c"), "--effect-spread", "5"]) == 2
    assert "effect_spread needs planted effects" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_chosen_effects_without_spread_are_unchanged_by_the_spread_option(tmp_path):
    """Chosen effects without --effect-spread render exactly as before the option existed: the offsets have a random
    stream of their own."""
    effects = parse_effects("atrophy:L-thalamusproper,intensity:R-precuneus", NAMES)
    root = synth.synthesize_cohort(tmp_path / "c", n=1, seed=5, spacing=4.0, workers=1, effects=effects)
    assert int(_images(root)["sub-0001"].sum()) == CHOSEN_SUM_SEED5_4MM

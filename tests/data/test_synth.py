"""Synthetic cohort: determinism, BIDS/JSON contract, MNI geometry, planted age effects, site differences, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from scipy.stats import spearmanr

from brainage.reference.atlas import load_default_atlas, resample_labels
from brainage.data import synth
from brainage.reference.templates import load_icbm152, mni_grid

SPACING = 3.0


def _image(root: Path, pid: str) -> nib.Nifti1Image:
    return nib.load(root / pid / "anat" / f"{pid}_T1w.nii.gz")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth.synthesize_cohort(tmp_path_factory.mktemp("a"), n=3, seed=5, spacing=SPACING, workers=1)


@pytest.mark.slow  # end to end in a subprocess
def test_same_seed_same_files_whatever_the_workers(cohort, tmp_path):
    again = synth.synthesize_cohort(tmp_path / "b", n=3, seed=5, spacing=SPACING, workers=2)
    for name in ("participants.tsv", "participants.json", "dataset_description.json", "ground_truth.json"):
        assert (cohort / name).read_text() == (again / name).read_text()
    for pid in pd.read_csv(cohort / "participants.tsv", sep="\t")["participant_id"]:
        a, b = _image(cohort, pid), _image(again, pid)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
    other = synth.synthesize_cohort(tmp_path / "c", n=1, seed=6, spacing=SPACING, workers=1)
    pid = "sub-0001"
    assert not np.array_equal(np.asarray(_image(cohort, pid).dataobj), np.asarray(_image(other, pid).dataobj))


def test_bids_and_ground_truth_contract(cohort):
    table = pd.read_csv(cohort / "participants.tsv", sep="\t", dtype=str)
    assert list(table.columns) == ["participant_id", "age", "sex", "site"]
    assert table["participant_id"].tolist() == ["sub-0001", "sub-0002", "sub-0003"]
    assert all(len(a.split(".")[1]) == 1 and 20 <= float(a) <= 85 for a in table["age"])
    assert set(table["sex"]) <= {"M", "F"} and set(table["site"]) == {"site-A", "site-B", "site-C"}
    description = json.loads((cohort / "dataset_description.json").read_text())
    assert description["Name"] and description["BIDSVersion"]

    truth = json.loads((cohort / "ground_truth.json").read_text())
    names = load_default_atlas().names
    by_name = {v: k for k, v in names.items()}
    for group in ("signal_regions", "indirect_regions", "null_regions"):
        assert all(by_name[name] == idx for name, idx in truth[group].items())
    signal, null = set(truth["signal_regions"]), set(truth["null_regions"])
    assert {"L-lateral-ventricle", "R-lateral-ventricle", "L-hippocampus", "R-hippocampus"} <= signal
    assert not signal & null and not signal & set(truth["indirect_regions"]) and len(null) >= 10
    assert set(truth["signal_regions"]) | set(truth["indirect_regions"]) | null == set(names.values())
    effects = {e["name"]: e for e in truth["effects"]}
    assert set(effects) == {"ventricle_enlargement", "hippocampal_atrophy", "cortical_thinning", "white_matter_change"}
    assert all(e["functional_form"] and e["effect_per_decade"] for e in effects.values())
    assert truth["settings"]["seed"] == 5 and truth["settings"]["n"] == 3 and truth["settings"]["spacing"] == SPACING
    assert truth["settings"]["n_sites"] == 3 and len(truth["sites"]) == 3 and len(truth["subjects"]) == 3


def test_volumes_are_skull_stripped_mni(cohort):
    shape, affine = mni_grid(SPACING)
    assert shape == (66, 78, 63)
    brain = load_default_atlas().resample_to(shape, affine) > 0
    t1, t1_affine = load_icbm152("t1")
    template_brain = resample_labels((t1 > 0).astype(np.uint8), t1_affine, shape, affine) > 0
    far_from_brain = ndi.distance_transform_edt(~template_brain, sampling=SPACING) > 20
    for pid in ("sub-0001", "sub-0002", "sub-0003"):
        img = _image(cohort, pid)
        data = np.asarray(img.dataobj)
        assert data.shape == shape and data.dtype == np.int16
        np.testing.assert_allclose(img.affine, affine)
        assert int(img.header["sform_code"]) == 4
        assert np.all(np.isfinite(img.get_fdata()))
        assert data[0, 0, 0] == 0 and not data[far_from_brain].any()
        assert np.mean(data[brain] > 0) > 0.85  # atlas regions are inside the (deformed, rescaled) brain
        assert 0.15 < np.mean(data > 0) < 0.35


def test_reference_ventricle_volume_follows_the_nominal_ratio():
    """Warp the template ventricle mask with the calibrated field: the volume ratio 30 -> 70 y is ~2 as documented."""
    from brainage.reference.atlas import lateral_ventricle_masks

    ctx = synth._build_context(SPACING)
    left, right, affine = lateral_ventricle_masks()
    mask = (left | right).astype(np.float32)
    vent_warp, _ = synth._structure_warps()
    volumes = {}
    for age in (30.0, 70.0):
        ratio = math.exp(synth.age_effects(age)["ventricle_log_volume_ratio"])
        pts = ctx.points + np.float32(vent_warp.amplitude(ratio)) * ctx.warps["ventricle_enlargement"]
        volumes[age] = ndi.map_coordinates(mask, (pts - affine[:3, 3]).T, order=1).sum() * SPACING**3 / 1000.0
    assert 1.6 < volumes[70.0] / volumes[30.0] < 2.5
    assert 10 < volumes[30.0] < 40


def test_age_effects_are_monotone_without_nuisance(tmp_path):
    root = synth.synthesize_cohort(
        tmp_path / "clean", n=8, seed=3, spacing=SPACING, workers=1, nuisance=False, n_sites=1
    )
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    shape, affine = mni_grid(SPACING)
    labels = load_default_atlas().resample_to(shape, affine)
    around_ventricles = ndi.binary_dilation(np.isin(labels, [201, 202]), iterations=2)
    hippocampus = np.isin(labels, [load_default_atlas().ids_by_name()[n] for n in ("L-hippocampus", "R-hippocampus")])
    dark, hippo = [], []
    for pid in table["participant_id"]:
        data = _image(root, pid).get_fdata()
        wm_level = np.percentile(data[data > 0], 90)
        dark.append(np.mean(data[around_ventricles] < 0.5 * wm_level))  # CSF fraction near the ventricles
        hippo.append(np.mean(data[hippocampus]))  # one site, no bias field: raw intensities are comparable
    assert table["age"].max() - table["age"].min() > 30
    assert spearmanr(table["age"], dark).statistic > 0.8
    # Hippocampal atrophy accelerates after 60 y (and sex changes brain size): compare old with young.
    hippo = np.array(hippo)
    assert hippo[table["age"] > 70].max() < hippo[table["age"] < 45].min()


def test_sites_differ_in_contrast_and_noise(tmp_path):
    root = synth.synthesize_cohort(tmp_path / "sites", n=3, seed=0, spacing=SPACING, workers=1, n_sites=3)
    table = pd.read_csv(root / "participants.tsv", sep="\t").set_index("site")
    level, noise = {}, {}
    for site, pid in table["participant_id"].items():
        data = _image(root, pid).get_fdata()
        inner = ndi.binary_erosion(data > 0, iterations=3)
        level[site] = np.percentile(data[inner], 90)
        # Noise: robust spread of the difference between neighbouring voxels inside the brain (/ WM level).
        diff = (data[1:] - data[:-1])[inner[1:] & inner[:-1]]
        noise[site] = np.median(np.abs(diff - np.median(diff))) / level[site]
    assert level["site-B"] < level["site-A"] < level["site-C"]  # scale 0.85 / 1.0 / 1.2
    assert noise["site-B"] > noise["site-C"]  # sigma 0.04 vs 0.012 of WM
    smooth = {}  # z detail / x detail: site C acquires 5 mm slices along z
    for site, pid in table["participant_id"].items():
        data = _image(root, pid).get_fdata()
        inner = ndi.binary_erosion(data > 0, iterations=3)
        dz = np.abs(np.diff(data, axis=2))[inner[:, :, 1:] & inner[:, :, :-1]].mean()
        dx = np.abs(np.diff(data, axis=0))[inner[1:] & inner[:-1]].mean()
        smooth[site] = dz / dx
    assert smooth["site-C"] < 0.8 * min(smooth["site-A"], smooth["site-B"])
    params = [synth.site_params(k) for k in range(6)]
    assert len({(p.gamma, p.noise_sigma) for p in params}) == 6 and params[5].name == "site-F"


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        synth.main(["--help"])
    assert exc.value.code == 0 and "examples" in capsys.readouterr().out
    assert synth.main(["--n", "0", "--out", str(tmp_path / "x")]) == 2
    assert "n must be a positive integer" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    assert synth.main(["--n", "1", "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert synth.main(["--n", "1", "--out", str(tmp_path / "ok"), "--spacing", "4", "--workers", "1"]) == 0
    assert (tmp_path / "ok" / "sub-0001" / "anat" / "sub-0001_T1w.nii.gz").is_file()


def test_thick_slices_keep_constants_and_smooth_only_along_z():
    constant = np.full((6, 5, 30), 7.0, np.float32)
    np.testing.assert_allclose(synth.thick_slices(constant, 5.0, 1.0), constant, rtol=1e-6)
    z = np.arange(40, dtype=np.float32)
    stripes = np.broadcast_to(np.sin(2 * np.pi * z / 4.0), (4, 3, 40)).copy()  # 4 mm period < 5 mm slices
    out = synth.thick_slices(stripes, 5.0, 1.0)
    assert out.shape == stripes.shape and np.abs(out[..., 5:-5]).max() < 0.3 * np.abs(stripes).max()
    ramp = np.broadcast_to(z, (4, 3, 40)).copy()  # linear along z survives linear interpolation (away from edges)
    np.testing.assert_allclose(synth.thick_slices(ramp, 5.0, 1.0)[..., 10:-10], ramp[..., 10:-10], atol=1e-3)
    assert synth.thick_slices(stripes, 2.0, 2.0) is stripes  # not thicker than the grid: unchanged

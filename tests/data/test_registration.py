"""Nonlinear normalisation to ICBM152 (`brainage.data.registration`, `RegisterToTemplated`) on real NIfTI files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, Orientationd
from scipy import ndimage as ndi

from brainage.data.preprocessing import Preprocessing, PreprocessingError, default_deterministic
from brainage.data.registration import TemplateRegistration, _sample
from brainage.data.transforms import ImageError, LoadVolumed, RegisterToTemplated
from brainage.reference.templates import icbm152_on_grid, load_icbm152, mni_grid


def _chain(**kwargs) -> Compose:
    return Compose([LoadVolumed(), EnsureChannelFirstd(keys="image", channel_dim="no_channel"),
                    Orientationd(keys="image", axcodes="RAS"), RegisterToTemplated(**kwargs)])


def test_registration_undoes_a_known_deformation(write_nifti):
    """The 2 mm ICBM152 T1 seen through a smooth random deformation (up to 4 mm) and a 3 mm shift, written as int16
    NIfTI: registered back, it matches the template far better than before."""
    template, affine = icbm152_on_grid(2.0)
    rng = np.random.default_rng(0)
    field = np.stack([ndi.gaussian_filter(rng.normal(size=template.shape), 10.0) for _ in range(3)])  # (3, X, Y, Z)
    field *= 2.0 / np.abs(field).max()  # at most 2 voxels (4 mm)
    field[1] += 1.5  # a 3 mm shift along y
    moving = ndi.map_coordinates(template, np.indices(template.shape) + field, order=1)
    path = write_nifti("sub-01_T1w.nii.gz", np.round(moving * 1000).astype(np.int16), affine)

    out = _chain(spacing=2.0)({"image": str(path)})["image"]  # (1, X, Y, Z)

    assert tuple(out.shape) == (1, *template.shape)
    np.testing.assert_allclose(np.asarray(out.affine), mni_grid(2.0)[1])
    brain = ndi.binary_erosion(template > 0.05, iterations=3)
    registered = out[0].numpy() / 1000.0
    before = np.abs(moving - template)[brain].mean()
    after = np.abs(registered - template)[brain].mean()
    assert after < 0.5 * before, (before, after)
    assert np.corrcoef(registered[brain], template[brain])[0, 1] > 0.97


def test_sampling_matches_scipy_on_an_oblique_anisotropic_grid():
    """The grid_sample fast path against scipy's map_coordinates (trilinear, 0 outside), in millimetres."""
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(20, 24, 18)).astype(np.float32)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, 2.0, 2.5])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    voxels = rng.uniform([-1, -1, -1], [20, 24, 18], size=(500, 3))  # some outside the volume
    points = voxels @ affine[:3, :3].T + affine[:3, 3]

    fast = _sample(torch.from_numpy(volume), affine, torch.from_numpy(points.astype(np.float32))).numpy()

    inside = np.all((voxels >= 0) & (voxels <= np.array(volume.shape) - 1), axis=1)
    reference = ndi.map_coordinates(volume, voxels.T, order=1, mode="constant", cval=0.0)
    np.testing.assert_allclose(fast[inside], reference[inside], atol=1e-4)
    assert inside.sum() > 300 and np.all(np.abs(fast[~inside]) <= np.abs(volume).max())


def test_displacement_is_a_function_of_millimetres_not_of_the_grid():
    """A control grid holding a linear function of position interpolates to that function exactly wherever it is
    asked (the fit and output grids differ), so the field fitted at 4 mm is the one applied at 2 or 3 mm."""
    reg = TemplateRegistration(control_points=(5, 6, 4))
    t1, affine = load_icbm152("t1")
    low = affine[:3, 3]
    high = low + np.diag(affine)[:3] * (np.array(t1.shape) - 1)
    axes = [np.linspace(low[a], high[a], n) for a, n in enumerate(reg.control_points)]
    xs, ys, zs = np.meshgrid(*axes, indexing="ij")
    control = torch.from_numpy(np.stack([0.02 * xs, -0.01 * ys + 1.0, 0.03 * zs])[None].astype(np.float32))
    points = torch.from_numpy(np.random.default_rng(2).uniform(low, high, size=(400, 3)).astype(np.float32))

    field = reg._displacement(control, points).numpy()

    p = points.numpy()
    expected = np.stack([0.02 * p[:, 0], -0.01 * p[:, 1] + 1.0, 0.03 * p[:, 2]], axis=1)
    np.testing.assert_allclose(field, expected, atol=1e-3)


def test_an_image_that_does_not_match_the_template_is_refused(write_nifti):
    """Noise in a box is not a T1: the fit ends far below min_correlation, and the error names the file."""
    noise = np.random.default_rng(3).uniform(0, 1000, size=(60, 72, 60)).astype(np.float32)
    path = write_nifti("not-a-brain.nii.gz", noise, np.diag([3.0, 3.0, 3.0, 1.0]) @ _centred(noise.shape))
    loaded = Compose(_chain().transforms[:-1])({"image": str(path)})
    with pytest.raises(ImageError) as err:  # called directly: Compose would wrap it in a RuntimeError
        RegisterToTemplated(spacing=3.0, iterations=10)(loaded)
    message = str(err.value)
    assert "not-a-brain.nii.gz" in message and "correlation" in message and "expected >= 0.5" in message


def _centred(shape: tuple[int, ...]) -> np.ndarray:
    """Voxel -> voxel-unit affine with the volume's centre at 0 (scaled by the caller)."""
    out = np.eye(4)
    out[:3, 3] = -(np.array(shape) - 1) / 2
    return out


@pytest.mark.parametrize("init_args, found", [
    ({"iterations": 10**9}, "iterations=1000000000"),
    ({"control_points": [7, 8, 1000]}, "control_points"),
    ({"fit_spacing": 0.01}, "fit_spacing=0.01"),
    ({"spacing": 50.0}, "spacing=50.0"),
    ({"smoothness": -1.0}, "smoothness=-1.0"),
])
def test_a_checkpoint_cannot_ask_for_unbounded_work(init_args, found):
    """A chain read from a checkpoint is untrusted: out-of-range arguments are refused before any scan is read."""
    chain = default_deterministic()
    chain.insert(4, {"class_path": "brainage.data.transforms.RegisterToTemplated", "init_args": init_args})
    with pytest.raises(PreprocessingError, match="RegisterToTemplated") as err:
        Preprocessing(chain)
    assert found in str(err.value)


def test_the_chain_places_registration_between_orientation_and_resampling():
    chain = default_deterministic()
    entry = {"class_path": "brainage.data.transforms.RegisterToTemplated", "init_args": {"spacing": 3.0}}
    good = Preprocessing(chain[:4] + [entry] + chain[4:])
    assert "registration" in good.contract() and "registration" not in Preprocessing(chain).contract()
    with pytest.raises(PreprocessingError, match="RegisterToTemplated after Orientationd and before Spacingd"):
        Preprocessing(chain[:5] + [entry] + chain[5:])  # after Spacingd


def test_training_drops_a_scan_that_fails_registration_and_keeps_the_rest(tmp_path):
    """A real synthetic cohort with one scan replaced by noise, set up with the registered chain: the noise scan is
    dropped with a reason naming it and the correlation; every other scan is registered onto the MNI grid."""
    import nibabel as nib

    from brainage.data.datamodule import BrainAgeDataModule
    from brainage.data.synth import synthesize_cohort

    root = synthesize_cohort(tmp_path / "cohort", n=10, seed=4, spacing=4.0, workers=1)
    bad = root / "sub-0003" / "anat" / "sub-0003_T1w.nii.gz"
    img = nib.load(bad)
    noise = np.random.default_rng(5).uniform(0, 1000, size=img.shape).astype(np.int16)
    nib.save(nib.Nifti1Image(noise, img.affine), bad)
    chain = default_deterministic(spacing=4.0, shape=(40, 48, 40))
    chain.insert(4, {"class_path": "brainage.data.transforms.RegisterToTemplated",
                     "init_args": {"spacing": 4.0, "iterations": 20}})
    dm = BrainAgeDataModule(str(root), preprocessing=chain, augment=False, batch_size=2, val_fraction=0.3,
                            test_fraction=0.2)

    dm.setup("fit")

    (dropped,) = [d for d in dm.dropped if "sub-" in str(d["subject_id"])]
    assert dropped["subject_id"] == "sub-0003"
    assert "sub-0003_T1w.nii.gz" in dropped["reason"] and "correlation" in dropped["reason"]
    kept = [dm.datasets[name][i]["image"] for name in dm.datasets for i in range(len(dm.datasets[name]))]
    assert len(kept) == 9 and all(tuple(x.shape) == (1, 40, 48, 40) and torch.isfinite(x).all() for x in kept)


@pytest.mark.slow  # end to end in a subprocess
def test_registration_benchmark_runs_and_registered_scans_match_the_template_better():
    """benchmarks/registration.py on 2 synthetic scans ends with one JSON line (no timing assertions); the registered
    chain's outputs correlate with the template better than the plain chain's."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "registration.py"), "--scans", "2"],
                          capture_output=True, text=True, timeout=600, cwd=root, check=True)
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["scans"] == 2 and last["plain_s_per_scan"] > 0 and last["registered_s_per_scan"] > 0
    assert last["correlation_registered"] > last["correlation_plain"], last

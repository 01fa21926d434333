"""The fast decode/resample steps (brainage.data.fastpath) against the reference MONAI chain they replace."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImage, Spacingd

from brainage.data.fastpath import HAVE_ISAL, AxisAlignedSpacingd, IsalNibabelReader, accelerate, nifti_loader
from brainage.data.preprocessing import Preprocessing
from brainage.data.transforms import LoadVolumed
from brainage.predict.decode import explain_failure

warnings.filterwarnings("ignore", category=FutureWarning)


def brain(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Noisy ellipsoid with zero background, like a skull-stripped T1 (float32)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))  # (3, X, Y, Z)
    inside = (grid**2).sum(0) < 0.7
    return (inside * (100 + 10 * np.random.default_rng(seed).standard_normal(shape))).astype(np.float32)


def mni_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    return affine


def save(path: Path, data: np.ndarray, affine: np.ndarray, klass=nib.Nifti1Image, slope: float | None = None) -> str:
    img = klass(data, affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 3.0)
    nib.save(img, path)
    return str(path)


def assert_same_load(path: str) -> None:
    ref = LoadImage(image_only=True)(path)
    fast = nifti_loader()(path)
    assert fast.dtype == ref.dtype and fast.shape == ref.shape
    assert torch.equal(fast.as_tensor(), ref.as_tensor())
    assert torch.equal(fast.affine, ref.affine)
    assert set(fast.meta) == set(ref.meta)
    for key in ref.meta:
        np.testing.assert_array_equal(np.asarray(fast.meta[key]), np.asarray(ref.meta[key]), err_msg=key)


@pytest.mark.skipif(not HAVE_ISAL, reason="isal not installed (the reader then is the reference)")
@pytest.mark.parametrize("name, dtype, klass, slope", [
    ("f32.nii.gz", np.float32, nib.Nifti1Image, None),
    ("i16_scaled.nii.gz", np.int16, nib.Nifti1Image, 0.5),
    ("plain.nii", np.float32, nib.Nifti1Image, None),
    ("nifti2.nii.gz", np.float32, nib.Nifti2Image, None),
])
def test_isal_reader_loads_what_nibabel_loads(tmp_path, name, dtype, klass, slope):
    data = brain((24, 28, 20)).astype(dtype)
    path = save(tmp_path / name, data, mni_affine((1.0, 1.0, 1.0)), klass, slope)
    assert IsalNibabelReader._read_one(path) is not None  # the fast path itself runs, not the fallback
    assert_same_load(path)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not_nifti"])
def test_isal_loader_fails_like_the_reference(tmp_path, damage):
    path = Path(save(tmp_path / "x.nii.gz", brain((24, 28, 20)), mni_affine((1.0, 1.0, 1.0))))
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "corrupt":
        path.write_bytes(raw[:200] + bytes(b ^ 0x5A for b in raw[200:400]) + raw[400:])
    else:
        path.write_bytes(gzip.compress(b"this is not a NIfTI header" * 40))
    errors = []
    for loader in (LoadImage(image_only=True), nifti_loader()):
        with pytest.raises(Exception) as info:
            loader(str(path))
        errors.append((type(info.value), str(info.value), explain_failure(str(path), info.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("in_shape, in_spacing, out_spacing", [
    ((182, 218, 182), (1.0, 1.0, 1.0), 1.5),
    ((91, 109, 91), (2.0, 2.0, 2.0), 3.0),
    ((60, 70, 50), (1.0, 1.2, 0.9), 1.5),  # anisotropic input
    ((40, 44, 36), (1.5, 1.5, 1.5), 1.0),  # upsampling
])
def test_axis_aligned_spacing_matches_monai(in_shape, in_spacing, out_spacing):
    img = MetaTensor(torch.from_numpy(brain(in_shape))[None], affine=torch.as_tensor(mni_affine(in_spacing)))
    ref = Spacingd(keys="image", pixdim=(out_spacing,) * 3, mode="bilinear")
    fast = AxisAlignedSpacingd(ref)
    assert fast.plan(img) is not None  # the fast path runs, not the fallback
    want = ref({"image": img})["image"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. MONAI's "Setting affine, but the applied meta contains an affine"
        got = fast({"image": img})["image"]
    assert got.shape == want.shape and got.dtype == want.dtype == torch.float32
    assert torch.equal(got.affine, want.affine)
    assert torch.equal(got != 0, want != 0)  # same non-zero (brain) mask, which NormalizeIntensityd depends on
    torch.testing.assert_close(got.as_tensor(), want.as_tensor(), rtol=1e-6, atol=1e-4)


def test_axis_aligned_spacing_falls_back_to_the_reference():
    """Oblique input, already at the target spacing (a MONAI no-op), or another mode: the wrapped Spacingd runs."""
    oblique = mni_affine((1.0, 1.0, 1.0))
    c, s = np.cos(0.2), np.sin(0.2)
    oblique[:3, :3] = oblique[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    cases = [(oblique, Spacingd(keys="image", pixdim=(1.5,) * 3, mode="bilinear")),
             (mni_affine((1.5,) * 3), Spacingd(keys="image", pixdim=(1.5,) * 3, mode="bilinear")),
             (mni_affine((1.0,) * 3), Spacingd(keys="image", pixdim=(2.0,) * 3, mode="nearest"))]
    for affine, ref in cases:
        img = MetaTensor(torch.from_numpy(brain((30, 34, 28)))[None], affine=torch.as_tensor(affine))
        fast = AxisAlignedSpacingd(ref)
        assert fast.plan(img) is None
        assert torch.equal(fast({"image": img})["image"], ref({"image": img})["image"])


@pytest.mark.parametrize("spacing, shape", [(1.5, (112, 136, 112)), (3.0, (56, 64, 56)), (1.0, (160, 192, 160))])
def test_accelerated_chain_matches_reference_chain(tmp_path, spacing, shape):
    """File -> model input: the predict chain against Preprocessing.deterministic() on a 1 mm MNI .nii.gz."""
    path = save(tmp_path / "t1.nii.gz", brain((182, 218, 182), seed=3), mni_affine((1.0, 1.0, 1.0)))
    reference = Preprocessing(spacing=spacing, shape=shape, augment=False).deterministic()
    fast = accelerate(reference)
    want, got = reference({"image": path})["image"], fast({"image": path})["image"]
    assert got.shape == want.shape == (1, *shape)
    assert torch.equal(got.affine, want.affine)
    torch.testing.assert_close(got.as_tensor(), want.as_tensor(), rtol=0, atol=1e-5)


def test_accelerate_swaps_the_steps_it_knows():
    """Guards the wiring: if transforms.py renames LoadVolumed.nifti or drops Spacingd, this names what stopped."""
    chain = Preprocessing(spacing=1.5, shape=(112, 136, 112), augment=False).deterministic()
    fast = accelerate(chain)
    kinds = [type(step) for step in fast.transforms]
    assert Spacingd not in kinds and AxisAlignedSpacingd in kinds
    loader = next(step for step in fast.transforms if isinstance(step, LoadVolumed))
    readers = [type(r) for r in loader.nifti.readers]
    assert (IsalNibabelReader in readers) == HAVE_ISAL
    original = next(step for step in chain.transforms if isinstance(step, LoadVolumed))
    assert IsalNibabelReader not in [type(r) for r in original.nifti.readers]  # the reference chain is untouched
    assert isinstance(fast, Compose)

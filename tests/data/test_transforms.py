from __future__ import annotations

import numpy as np
import pytest
import torch

from brainage.data.cache import load_volume
from brainage.data.preprocessing import Preprocessing
from brainage.data.transforms import ImageError, ValidateT1


def test_preprocessing_output_shape_affine_and_normalisation(write_nifti):
    path = write_nifti("a.nii.gz")  # 40 x 48 x 40 at 4 mm
    out = Preprocessing(spacing=6.0, shape=(24, 32, 24)).deterministic()({"image": str(path)})["image"]
    assert tuple(out.shape) == (1, 24, 32, 24) and out.dtype == torch.float32
    brain = out[out != 0]
    assert abs(float(brain.mean())) < 0.2 and abs(float(brain.std()) - 1) < 0.2
    spacing = np.sqrt((np.asarray(out.affine)[:3, :3] ** 2).sum(0))
    np.testing.assert_allclose(spacing, 6.0, atol=1e-4)


def test_world_coordinates_survive_preprocessing(write_nifti):
    """A bright voxel planted at a known world coordinate is found at the same world coordinate afterwards."""
    data = np.zeros((40, 48, 40), np.float32) + 1
    data[30:33, 10:13, 25:28] = 50  # centre voxel (31, 11, 26)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-80, -96, -80]
    world = affine @ np.array([31, 11, 26, 1.0])
    out = Preprocessing(spacing=4.0, shape=(32, 40, 32), augment=False).deterministic()(
        {"image": str(write_nifti("p.nii.gz", data, affine))})["image"]
    peak = np.unravel_index(int(torch.argmax(out[0])), out.shape[1:])
    found = np.asarray(out.affine) @ np.array([*peak, 1.0])
    np.testing.assert_allclose(found[:3], world[:3], atol=4.01)


def test_single_volume_4d_is_accepted(write_nifti):
    path = write_nifti("four.nii.gz", brain_4d := np.random.default_rng(0).random((40, 48, 40, 1)).astype(np.float32))
    image, error = load_volume(Preprocessing(spacing=6.0, shape=(24, 32, 24)).deterministic(), str(path))
    assert error is None and tuple(image.shape) == (1, 24, 32, 24) and brain_4d.ndim == 4


@pytest.mark.parametrize("name, data, expected", [
    ("flat.nii.gz", np.ones((20, 20, 20), np.float32), "constant image"),
    ("nan.nii.gz", np.where(np.arange(8000).reshape(20, 20, 20) == 5, np.nan, 1.0).astype(np.float32), "NaN"),
    ("multi.nii.gz", np.random.default_rng(0).random((20, 20, 20, 3)).astype(np.float32), "one volume"),
    ("slice.nii.gz", np.random.default_rng(0).random((20, 20)).astype(np.float32), "3D volume"),
])
def test_bad_images_give_reasons_naming_file(write_nifti, name, data, expected):
    path = write_nifti(name, data, np.eye(4))
    image, error = load_volume(Preprocessing(spacing=2.0, shape=(16, 16, 16)).deterministic(), str(path))
    assert image is None and name in error and expected in error


def test_corrupt_and_non_nifti_files(tmp_path):
    transform = Preprocessing().deterministic()
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    text = tmp_path / "notes.nii"
    text.write_text("not an image")
    for path in (corrupt, text):
        image, error = load_volume(transform, str(path))
        assert image is None and path.name in error


def test_validate_rejects_degenerate_affine_and_voxel_size():
    from monai.data import MetaTensor

    img = MetaTensor(torch.rand(20, 20, 20), affine=torch.zeros(4, 4))
    with pytest.raises(ImageError, match="degenerate affine"):
        ValidateT1()(img, name="x.nii")
    img = MetaTensor(torch.rand(20, 20, 20), affine=torch.diag(torch.tensor([30.0, 30.0, 30.0, 1.0])))
    with pytest.raises(ImageError, match="voxel size"):
        ValidateT1()(img, name="x.nii")


def test_bad_preprocessing_arguments():
    with pytest.raises(ValueError, match="spacing=\\[50.0, 50.0, 50.0\\] mm"):
        Preprocessing(spacing=50)
    with pytest.raises(ValueError, match="shape"):
        Preprocessing(shape=(4, 4, 4))

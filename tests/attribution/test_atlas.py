"""Atlas module: planted geometry through the resampling, the default DK + ventricle atlas, user-atlas errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.reference.atlas import VENTRICLE_LABELS, Atlas, load_atlas, load_default_atlas
from brainage.reference.templates import load_icbm152


def _write_atlas(tmp_path: Path, labels: np.ndarray, affine: np.ndarray, table: str, name: str = "names.tsv"):
    img_path, tsv_path = tmp_path / "atlas.nii.gz", tmp_path / name
    nib.save(nib.Nifti1Image(labels.astype(np.int16), affine), img_path)
    tsv_path.write_text(table)
    return img_path, tsv_path


def _reference_resample(atlas: Atlas, shape, affine) -> np.ndarray:
    """Voxel-by-voxel loop: target centre -> mm -> nearest source voxel."""
    inv = np.linalg.inv(atlas.affine)
    out = np.zeros(shape, dtype=np.int32)
    for ijk in np.ndindex(*shape):
        src = np.rint(inv @ affine @ np.array([*ijk, 1.0]))[:3].astype(int)
        if np.all(src >= 0) and np.all(src < atlas.labels.shape):
            out[ijk] = atlas.labels[tuple(src)]
    return out


def test_planted_patch_lands_at_its_mni_coordinate(tmp_path):
    src_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    src_affine[:3, 3] = (-20.0, -20.0, -20.0)
    labels = np.zeros((40, 40, 40), dtype=np.int16)
    # Patch 7 covers MNI x 2..10, y -8..0, z 8..16 (voxel = mm + 20).
    labels[22:31, 12:21, 28:37] = 7
    labels[5:8, 5:8, 5:8] = 3
    img, tsv = _write_atlas(tmp_path, labels, src_affine, "index\tname\n3\tcorner\n7\tpatch\n")
    atlas = load_atlas(img, tsv)
    assert atlas.names == {3: "corner", 7: "patch"}

    tgt_affine = np.diag([3.0, 3.0, 3.0, 1.0])
    tgt_affine[:3, 3] = (-19.4, -21.0, -18.0)  # shifted origin, not on the source grid (no rounding ties)
    shape = (14, 14, 14)
    out = atlas.resample_to(shape, tgt_affine)
    assert out.dtype == np.int32 and out.shape == shape
    np.testing.assert_array_equal(out, _reference_resample(atlas, shape, tgt_affine))
    ijk = np.argwhere(out == 7)
    mm = ijk * 3.0 + tgt_affine[:3, 3]
    assert np.all((mm >= [1.5, -8.5, 7.5]) & (mm <= [10.5, 0.5, 16.5]))  # inside the planted box (+- half voxel)
    np.testing.assert_allclose(mm.mean(axis=0), [6.0, -4.0, 12.0], atol=1.6)
    assert len(ijk) == 27  # 9 mm cube on a 3 mm grid


def test_resample_outside_field_of_view_is_background(tmp_path):
    labels = np.ones((10, 10, 10), dtype=np.int16)
    img, tsv = _write_atlas(tmp_path, labels, np.eye(4), "id\tlabel\n1\tall\n")
    far = np.eye(4)
    far[:3, 3] = 100.0
    assert not load_atlas(img, tsv).resample_to((5, 5, 5), far).any()


def test_default_atlas_regions_and_ventricles():
    atlas = load_default_atlas()
    assert atlas.labels.shape == (146, 182, 155)
    np.testing.assert_allclose(np.diag(atlas.affine)[:3], [1.0, 1.0, 1.0])
    assert nib.aff2axcodes(atlas.affine) == ("R", "A", "S")
    ids = set(np.unique(atlas.labels).tolist()) - {0}
    assert ids == set(range(1, 84)) | set(VENTRICLE_LABELS)
    assert len(atlas.names) == 85 and len(set(atlas.names.values())) == 85
    assert atlas.names[201] == "L-lateral-ventricle" and atlas.names[202] == "R-lateral-ventricle"
    assert {"L-hippocampus", "R-hippocampus", "R-superiorfrontal", "B-brainstem"} <= set(atlas.names.values())
    for label, sign in ((201, -1), (202, 1)):
        ijk = np.argwhere(atlas.labels == label)
        volume_ml = len(ijk) / 1000.0
        assert 3.0 < volume_ml < 30.0
        x, y, z = ijk.mean(axis=0) + atlas.affine[:3, 3]
        assert 8 < sign * x < 25 and -30 < y < 5 and 5 < z < 25


def test_default_atlas_lands_on_the_template_brain():
    atlas = load_default_atlas()
    t1, affine = load_icbm152("t1")
    on_template = atlas.resample_to(t1.shape, affine)
    assert np.mean(t1[on_template > 0] > 0) > 0.99
    # Hippocampus and ventricles at their textbook places, ventricles dark on the template.
    hippo = np.argwhere(on_template == atlas.ids_by_name()["R-hippocampus"]).mean(axis=0) + affine[:3, 3]
    np.testing.assert_allclose(hippo, [26, -23, -14], atol=6)
    assert np.median(t1[on_template == 201]) < 0.45 < np.median(t1[on_template == 35])  # ventricle vs thalamus


def test_load_atlas_is_liberal_about_columns(tmp_path):
    labels = np.zeros((4, 4, 4))
    labels[1, 1, 1] = 2
    img, tsv = _write_atlas(tmp_path, labels, np.eye(4), "ID,Label,hemisphere\n2,thing,L\n", name="n.csv")
    assert load_atlas(img, tsv).names == {2: "L-thing"}


def test_load_atlas_errors_name_the_file(tmp_path):
    labels = np.zeros((4, 4, 4))
    labels[1, 1, 1] = 2
    labels[2, 2, 2] = 9
    img, tsv = _write_atlas(tmp_path, labels, np.eye(4), "index\tregion_colour\n2\tred\n")
    with pytest.raises(ValueError, match=r"names\.tsv.*no region name column"):
        load_atlas(img, tsv)
    tsv.write_text("index\tname\n2\tthing\n")
    with pytest.raises(ValueError, match=r"atlas\.nii\.gz.*\[9\].*not listed"):
        load_atlas(img, tsv)
    tsv.write_text("index\tname\n2\tthing\n9\tthing\n")
    with pytest.raises(ValueError, match="unique"):
        load_atlas(img, tsv)
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        load_atlas(tmp_path / "missing.nii.gz", tsv)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), dtype=np.int16), np.eye(4)), tmp_path / "four_d.nii.gz")
    with pytest.raises(ValueError, match="four_d.nii.gz.*3D"):
        load_atlas(tmp_path / "four_d.nii.gz", tsv)

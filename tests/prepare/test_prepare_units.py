"""Unit tests of the prepare plumbing: RAS <-> ITK conversions, transform conversion, QC metric and HTML, CLI errors."""

from __future__ import annotations

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK", reason="the 'prepare' extra (SimpleITK) is not installed")

from brainage.prepare import qc  # noqa: E402
from brainage.prepare.command import main, output_key  # noqa: E402
from brainage.prepare.phantom import pose_matrix  # noqa: E402
from brainage.prepare.register import from_sitk, to_sitk, transform_to_ras  # noqa: E402
from brainage.reference.templates import icbm152_on_grid  # noqa: E402


def _oblique_affine() -> np.ndarray:
    affine = pose_matrix((12.0, -7.0, 30.0), (3.0, -20.0, 11.0), 1.0) @ np.diag([1.2, 0.9, 2.5, 1.0])
    return affine


def test_to_sitk_keeps_the_world_position_of_every_voxel():
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    affine = _oblique_affine()
    image = to_sitk(data, affine)
    for ijk in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        lps = np.asarray(image.TransformIndexToPhysicalPoint(ijk))
        ras = affine[:3, :3] @ np.asarray(ijk) + affine[:3, 3]
        assert np.allclose(lps, ras * [-1, -1, 1])  # ITK world is LPS
        assert image[ijk] == pytest.approx(float(data[ijk]))
    back, back_affine = from_sitk(image)
    assert np.array_equal(back, data) and np.allclose(back_affine, affine)


def test_to_sitk_rejects_a_sheared_affine():
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(ValueError, match="shear"):
        to_sitk(np.zeros((2, 2, 2)), affine)


def test_transform_to_ras_matches_itk_point_mapping():
    matrix = pose_matrix((5.0, -3.0, 8.0), (4.0, 2.0, -6.0), 1.05, np.array([1.0, -18.0, 8.0]))
    matrix[:3, :3] = matrix[:3, :3] @ np.array([[1.0, 0.05, 0.0], [0.0, 1.0, 0.02], [0.0, 0.0, 0.97]])
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = flip @ matrix @ flip
    centre = np.array([10.0, -5.0, 3.0])  # ITK: x -> M (x - c) + c + t, so t = b - c + M c for x -> M x + b
    translation = lps[:3, 3] - centre + lps[:3, :3] @ centre
    transform = sitk.AffineTransform(lps[:3, :3].ravel().tolist(), translation.tolist(), centre.tolist())
    assert np.allclose(transform_to_ras(transform), matrix)
    point = np.array([30.0, -40.0, 25.0])
    mapped = np.asarray(transform.TransformPoint((flip[:3, :3] @ point).tolist()))
    assert np.allclose(flip[:3, :3] @ mapped, matrix[:3, :3] @ point + matrix[:3, 3])


def test_qc_assess_against_a_reference_correlation():
    template, _ = icbm152_on_grid(4.0)
    good = qc.assess(template * 900.0, 4.0)
    assert good.status == "ok" and good.ncc == pytest.approx(1.0) and good.coverage == pytest.approx(1.0)
    cropped = template.copy()
    cropped[:, :, template.shape[2] // 2:] = 0.0  # upper half of the brain missing
    result = qc.assess(cropped, 4.0)
    inside = template > 0.05
    assert result.ncc == pytest.approx(np.corrcoef(cropped[inside], template[inside])[0, 1], abs=1e-6)
    assert result.status == "fail" and "covers" in result.reason
    with pytest.raises(ValueError, match="MNI grid"):
        qc.assess(template[:-1], 4.0)


def test_qc_html_escapes_user_strings():
    png = qc.qc_png(icbm152_on_grid(4.0)[0], 4.0, "<b>x</b>")
    rows = [{"key": "k", "subject_id": "<script>alert(1)</script>", "session": "ses-&1", "qc_status": "fail",
             "qc_ncc": 0.2, "qc_coverage": 0.5, "qc_reason": "bad <reason>", "source_path": "/a/<b>.nii"}]
    page = qc.qc_html(rows, {"k": png})
    assert "<script>" not in page and "&lt;script&gt;" in page and "ses-&amp;1" in page
    assert "bad &lt;reason&gt;" in page and page.count("data:image/png;base64,") == 1


def test_output_key_is_a_safe_file_name():
    assert output_key("sub-01", "ses-2") == "sub-01_ses-2"
    assert output_key("../a b/c", "") == "a_b_c"
    with pytest.raises(ValueError, match="empty"):
        output_key("..", "")


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--skull-strip", "template"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--input", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--skull-strip", "template"]) == 2
    assert "no T1 images found" in capsys.readouterr().err
    assert main(["--input", str(tmp_path), "--out", str(tmp_path / "o"), "--spacing", "9"]) == 2
    assert "spacing" in capsys.readouterr().err

"""End-to-end tests of `brainage prepare` on synthetic raw heads with a known pose (real NIfTI, real SimpleITK,
real worker processes): registration accuracy, QC flagging, manifest, HTML, resume and bit-identical output."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

pytest.importorskip("SimpleITK", reason="the 'prepare' extra (SimpleITK) is not installed")

from brainage.data.inputs import read_inputs  # noqa: E402
from brainage.prepare.command import PrepareSettings, main, prepare_subject  # noqa: E402
from brainage.prepare.phantom import rms_displacement, synthetic_raw_head  # noqa: E402
from brainage.prepare.steps import deepbet_available  # noqa: E402
from brainage.reference.templates import icbm152_on_grid, load_icbm152, mni_grid  # noqa: E402

pytestmark = pytest.mark.slow  # registration and skull stripping end to end

SPACING = 2.0  # output grid for the tests (the default is 1 mm)
RAW_SPACING = 3.0  # downsampled raw inputs keep the tests fast


def _brain_points() -> np.ndarray:
    """(n, 3) MNI mm of (every 20th) template brain voxel: where the RMS displacement is measured."""
    t1, affine = load_icbm152("t1")
    return np.argwhere(t1 > 0)[::20] @ affine[:3, :3].T + affine[:3, 3]


def _random_pose(seed: int) -> tuple[tuple[float, ...], tuple[float, ...], float]:
    rng = np.random.default_rng(seed)
    rotation = tuple(float(a) for a in rng.uniform(-10.0, 10.0, size=3))
    translation = tuple(float(t) for t in rng.uniform(-10.0, 10.0, size=3))
    return rotation, translation, float(rng.uniform(0.9, 1.1))


def _write_head(path: Path, pose: tuple, seed: int, broken: bool = False) -> np.ndarray:
    """Write a synthetic raw head; ``broken``: top 45 % of the field of view cut off and left-right flipped."""
    head = synthetic_raw_head(*pose, spacing=RAW_SPACING, bias_strength=0.4, seed=seed)
    data = head.data
    if broken:
        data = data.copy()
        data[:, :, int(0.55 * data.shape[2]):] = 0.0  # (X, Y, Z): superior part missing
        data = data[::-1]  # flipped voxel order with an unchanged affine: left and right swapped
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, head.affine), path)
    return head.mni_to_world


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """A BIDS folder with a well-posed head, a head rotated by 90 degrees and a cropped + flipped head, prepared with
    2 worker processes."""
    root = tmp_path_factory.mktemp("prepare")
    raw = root / "raw"
    truth = {
        "sub-good": _write_head(raw / "sub-good" / "anat" / "sub-good_T1w.nii.gz", _random_pose(7), seed=1),
        "sub-rot90": _write_head(raw / "sub-rot90" / "anat" / "sub-rot90_T1w.nii.gz",
                                 ((90.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1.0), seed=2),
        "sub-cropped": _write_head(raw / "sub-cropped" / "anat" / "sub-cropped_T1w.nii.gz", _random_pose(5), seed=4,
                                   broken=True),
    }
    (raw / "participants.tsv").write_text("participant_id\tage\tsex\tsite\nsub-good\t42.5\tF\tA\nsub-rot90\t61\tM\tB\n"
                                          "sub-cropped\t70\tF\tB\n")
    out = root / "prepared"
    code = main(["--input", str(raw), "--out", str(out), "--spacing", str(SPACING), "--skull-strip", "template",
                 "--workers", "2"])
    return {"root": root, "raw": raw, "out": out, "truth": truth, "code": code}


def test_manifest_flags_the_broken_head_and_is_read_by_read_inputs(prepared):
    assert prepared["code"] == 0
    out = prepared["out"]
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False).set_index("subject_id")
    assert manifest.loc["sub-good", "qc_status"] == "ok", manifest.loc["sub-good", "qc_reason"]
    assert float(manifest.loc["sub-good", "qc_ncc"]) > 0.9
    assert manifest.loc["sub-rot90", "qc_status"] == "fail"
    assert "template correlation" in manifest.loc["sub-rot90", "qc_reason"]
    assert manifest.loc["sub-cropped", "qc_status"] == "fail"
    assert "covers" in manifest.loc["sub-cropped", "qc_reason"]
    assert manifest.loc["sub-good", "age"] == "42.5" and manifest.loc["sub-good", "sex"] == "F"
    assert manifest.loc["sub-good", "site"] == "A"
    # every command reads it through read_inputs: paths resolve next to the manifest, on the model's MNI grid.
    table = read_inputs(str(out / "manifest.csv"), include_failed=True)
    assert list(table["subject_id"]) == ["sub-cropped", "sub-good", "sub-rot90"]
    img = nib.load(table.loc[1, "path"])
    shape, affine = mni_grid(SPACING)
    assert img.shape == shape and np.allclose(img.affine, affine)
    data = np.asarray(img.dataobj)
    assert data.dtype == np.float32 and data.min() == 0.0 and (data > 0).mean() > 0.1  # skull-stripped brain
    # by default the flagged scans are skipped, with the reason.
    kept = read_inputs([str(out / "manifest.csv")])
    assert list(kept["subject_id"]) == ["sub-good"]
    assert sorted(d["subject_id"] for d in kept.attrs["dropped"]) == ["sub-cropped", "sub-rot90"]
    assert all("QC fail" in d["reason"] for d in kept.attrs["dropped"])
    assert len(read_inputs([str(out / "manifest.csv")], include_failed=True)) == 3


def test_registration_recovers_the_known_pose_within_2mm_rms(prepared):
    record = json.loads((prepared["out"] / "qc" / "sub-good.json").read_text())
    recovered = np.asarray(record["mni_to_world"])
    rms = rms_displacement(recovered, prepared["truth"]["sub-good"], _brain_points())
    assert rms < 2.0, f"RMS displacement over the brain {rms:.2f} mm"
    wrong = rms_displacement(np.asarray(json.loads((prepared["out"] / "qc" / "sub-rot90.json").read_text())
                                        ["mni_to_world"]), prepared["truth"]["sub-rot90"], _brain_points())
    assert wrong > 10.0  # the 90 degree head was not recovered, which is why QC must flag it


def test_qc_outputs_png_per_scan_and_self_contained_html(prepared):
    out = prepared["out"]
    for key in ("sub-good", "sub-rot90", "sub-cropped"):
        assert (out / "qc" / f"{key}_qc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "qc.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "src=\"http" not in page
    assert page.index("sub-rot90") < page.index("sub-good")  # failures first
    assert not list(out.rglob(".*.tmp*"))  # nothing half-written


def test_rerun_resumes_and_output_is_bit_identical(prepared, tmp_path):
    out = prepared["out"]
    image, record = out / "sub-good_T1w.nii.gz", out / "qc" / "sub-good.json"
    stamps = (image.stat().st_mtime_ns, record.stat().st_mtime_ns)
    assert main(["--input", str(prepared["raw"]), "--out", str(out), "--spacing", str(SPACING),
                 "--skull-strip", "template"]) == 0
    assert (image.stat().st_mtime_ns, record.stat().st_mtime_ns) == stamps  # finished scans are skipped
    # Same input, run again in this process (the first run used a worker process): the same bits.
    table = read_inputs(str(prepared["raw"]))
    row = table[table["subject_id"] == "sub-good"].iloc[0].to_dict()
    again = prepare_subject(row, tmp_path, PrepareSettings(spacing=SPACING, skull_strip="template"))
    first, second = np.asarray(nib.load(image).dataobj), np.asarray(nib.load(tmp_path / image.name).dataobj)
    assert first.tobytes() == second.tobytes()
    assert image.read_bytes() == (tmp_path / image.name).read_bytes()
    assert again["qc_ncc"] == json.loads(record.read_text())["qc_ncc"]


@pytest.mark.skipif(not deepbet_available(), reason="deepbet (the 'prepare' extra) is not installed")
def test_deepbet_skull_strip_and_registration(tmp_path):
    truth = _write_head(tmp_path / "raw" / "head.nii.gz", _random_pose(11), seed=3)
    row = read_inputs(str(tmp_path / "raw")).iloc[0].to_dict()
    record = prepare_subject(row, tmp_path / "out", PrepareSettings(spacing=SPACING, skull_strip="deepbet"))
    assert record["qc_status"] == "ok", record["qc_reason"]
    assert rms_displacement(np.asarray(record["mni_to_world"]), truth, _brain_points()) < 2.0
    data = np.asarray(nib.load(tmp_path / "out" / "head_T1w.nii.gz").dataobj)
    template, _ = icbm152_on_grid(SPACING)
    distance = ndi.distance_transform_edt(template <= 0.05, sampling=SPACING)  # mm outside the template brain
    assert (data[distance > 6.0] > 0).mean() < 0.01  # no bone or scalp (the phantom's shell starts 3 mm out)
    assert (data[distance == 0] > 0).mean() > 0.98  # and the brain is kept

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainage.data.inputs import detect_layout, read_inputs, read_ixi, read_openbhb
from brainage.data.preprocessing import Preprocessing
from brainage.data.transforms import MNI_1MM_AFFINE, ImageError, LoadVolumed

IXI_SHEET = (
    "IXI_ID,\"SEX_ID (1=m, 2=f)\",HEIGHT,WEIGHT,DOB,AGE\n"  # Excel quotes the comma; unquoted also works
    "2,2,164,58,1966-08-20,35.8\n"
    "12,1,175,70,1966-08-20,38.78\n"
    "12,1,175,70,1966-08-20,38.78\n"  # agreeing duplicate -> keep first, drop this one
    "13,1,170,66,1970-01-01,\n"  # missing age, kept with NaN
    "14,2,160,50,1950-01-01,40.2\n"
    "14,2,160,50,1950-01-01,63.1\n"  # conflicting duplicate -> both dropped
    "15,1,180,80,1960-01-01,50\n"  # no image
    "abc,1,180,80,1960-01-01,50\n"  # bad id
)


def _ixi(tmp_path, write_nifti, sheet=IXI_SHEET):
    for name in ("IXI002-Guys-0828-T1.nii.gz", "IXI012-HH-1211-T1.nii.gz", "IXI013-HH-1212-T1.nii.gz",
                 "IXI014-IOP-0889-T1.nii.gz", "IXI016-Guys-0697-T1.nii.gz"):
        write_nifti(f"ixi/{name}")
    write_nifti("ixi/IXI002-Guys-0828-PD.nii.gz")  # other modality: ignored
    (tmp_path / "ixi" / "IXI.csv").write_text(sheet)
    return tmp_path / "ixi"


def test_read_ixi_sites_duplicates_missing_and_orphans(tmp_path, write_nifti):
    table = read_ixi(_ixi(tmp_path, write_nifti))
    assert list(table["subject_id"]) == ["IXI002", "IXI012", "IXI013", "IXI014", "IXI016"]
    assert list(table["site"]) == ["Guys", "HH", "HH", "IOP", "Guys"]
    assert table["age"].iloc[0] == pytest.approx(35.8) and table["age"].iloc[1] == pytest.approx(38.78)
    assert math.isnan(table["age"].iloc[2])  # missing AGE in the sheet
    assert math.isnan(table["age"].iloc[3])  # conflicting duplicate: demographics dropped, image kept unknown
    assert math.isnan(table["age"].iloc[4])  # image without a sheet row
    assert list(table["sex"][:3]) == ["F", "M", "M"]
    reasons = [(d["subject_id"], d["reason"]) for d in table.attrs["dropped"]]
    assert ("IXI012", "duplicate IXI_ID (kept line 3)") in reasons
    assert any(s == "IXI014" and "conflicting" in r and "40.2" in r and "63.1" in r for s, r in reasons)
    assert ("IXI015", "in the sheet but no IXI*-T1.nii.gz image") in reasons
    assert any(s == "abc" and "not an integer" in r for s, r in reasons)
    assert len(reasons) == 4


def test_ixi_duplicate_without_age_keeps_the_row_with_an_age(tmp_path, write_nifti):
    root = _ixi(tmp_path, write_nifti, "IXI_ID,SEX_ID (1=m, 2=f),AGE\n2,2,\n2,2,35.8\n")
    table = read_ixi(root)
    assert table.set_index("subject_id").loc["IXI002", "age"] == pytest.approx(35.8)
    assert [d["reason"] for d in table.attrs["dropped"] if d["subject_id"] == "IXI002"] == [
        "duplicate IXI_ID (kept line 3)"]


def test_ixi_dispatch_and_xls_needs_xlrd(tmp_path, write_nifti):
    root = _ixi(tmp_path, write_nifti)
    assert detect_layout(root) == "ixi"
    assert list(read_inputs([str(root)])["site"]) == ["Guys", "HH", "HH", "IOP", "Guys"]
    (root / "IXI.csv").unlink()
    assert detect_layout(root) == "folder"  # IXI names without a sheet are just a folder of NIfTI files
    (root / "IXI.xls").write_bytes(b"\xd0\xcf\x11\xe0 not really a workbook")
    try:
        import xlrd  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="IXI.xls.*xlrd.*CSV"):
            read_ixi(root)
    (root / "IXI.xls").unlink()
    with pytest.raises(FileNotFoundError, match="no IXI demographic sheet"):
        read_ixi(root)


def test_ixi_sheet_without_age_column_names_columns(tmp_path, write_nifti):
    root = _ixi(tmp_path, write_nifti, "IXI_ID,SEX_ID (1=m, 2=f),HEIGHT\n2,2,160\n")
    with pytest.raises(ValueError, match="AGE.*found"):
        read_ixi(root)


def _npy(path, value=1.0, shape=(1, 182, 218, 182)):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros(shape, np.uint8)
    if len(shape) == 4:
        data[0, 60:120, 70:150, 50:130] = 100
        data[0, 88:92, 120:124, 100:104] = 250 * value  # bright block around MNI (0, -4, 30) mm
    np.save(path, data)
    return path


def _openbhb(tmp_path):
    root = tmp_path / "openbhb"
    (root).mkdir()
    (root / "participants.tsv").write_text(
        "participant_id\tage\tsex\tsite\tstudy\tsplit\n1001\t23.5\tmale\t7\tabide\ttrain\n"
        "1002\t61\tfemale\t12\tixi\ttrain\n1003\tn/a\tfemale\t7\tabide\tinternal_test\n1004\t30\tm\t7\tx\ttrain\n")
    for sid in (1001, 1002, 1003):
        folder = "train" if sid != 1003 else "val"
        _npy(root / folder / "derivatives" / f"sub-{sid}" / "ses-1" / f"sub-{sid}_preproc-quasiraw_T1w.npy")
    return root


def test_read_openbhb_table_and_dispatch(tmp_path):
    root = _openbhb(tmp_path)
    assert detect_layout(root) == "openbhb"  # despite participants.tsv (which alone would mean BIDS)
    table = read_inputs([str(root)])
    assert list(table["subject_id"]) == ["sub-1001", "sub-1002", "sub-1003"]
    assert list(table["session"]) == ["ses-1"] * 3 and list(table["site"]) == ["7", "12", "7"]
    assert table["age"].iloc[1] == 61.0 and math.isnan(table["age"].iloc[2])
    assert list(table["sex"]) == ["M", "F", "F"]
    assert [d["subject_id"] for d in table.attrs["dropped"]] == ["sub-1004"]
    assert read_openbhb(root).equals(table)


def test_openbhb_npy_goes_through_shared_preprocessing_with_mni_affine(tmp_path):
    path = _npy(tmp_path / "sub-1/ses-1/sub-1_preproc-quasiraw_T1w.npy")
    loaded = LoadVolumed()({"image": str(path)})["image"]
    assert tuple(loaded.shape) == (182, 218, 182)
    np.testing.assert_allclose(np.asarray(loaded.affine), MNI_1MM_AFFINE)
    out = Preprocessing(spacing=4.0, shape=(48, 56, 48), augment=False).deterministic()({"image": str(path)})["image"]
    assert tuple(out.shape) == (1, 48, 56, 48) and out.dtype == torch.float32
    peak = np.unravel_index(int(torch.argmax(out[0])), out.shape[1:])
    world = np.asarray(out.affine) @ np.array([*peak, 1.0])
    planted = MNI_1MM_AFFINE @ np.array([89.5, 121.5, 101.5, 1.0])  # centre of the bright block: (-0.5, -4.5, 29.5)
    np.testing.assert_allclose(world[:3], planted[:3], atol=4.01)


def test_npy_of_unknown_grid_is_rejected_naming_shape(tmp_path):
    path = _npy(tmp_path / "x_preproc-quasiraw_T1w.npy", shape=(1, 121, 145, 121))
    with pytest.raises(ImageError, match=r"\(1, 121, 145, 121\).*\(1, 182, 218, 182\)"):
        LoadVolumed()({"image": str(path)})

"""Preprocessing declared as YAML lists of MONAI dictionary transforms: grid, required steps, allow-list, cache key."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from brainage.data.cache import VolumeCache
from brainage.data.preprocessing import Preprocessing, PreprocessingError, default_deterministic

ROOT = Path(__file__).resolve().parents[2]


def data_section(config: str) -> dict:
    """The data section a shipped config declares: a configs/data/*.yaml file, or the one a config points to."""
    raw = yaml.safe_load((ROOT / config).read_text())
    if Path(config).parts[1] == "data":
        return raw
    return yaml.safe_load(((ROOT / config).parent / raw["data"]).read_text())


def shipped_chain(config: str = "configs/data/synthetic.yaml") -> list[dict]:
    return data_section(config)["preprocessing"]


def without(chain: list[dict], name: str) -> list[dict]:
    return [e for e in chain if not e["class_path"].endswith(f".{name}")]


def replaced(chain: list[dict], name: str, **init_args) -> list[dict]:
    return [{"class_path": e["class_path"], "init_args": {**e.get("init_args", {}), **init_args}}
            if e["class_path"].endswith(f".{name}") else e for e in chain]


@pytest.mark.parametrize("spacing, shape", [(1.5, (64, 80, 64)), (2.0, (48, 56, 48))])
def test_yaml_chain_at_another_spacing_gives_that_grid(write_nifti, spacing, shape):
    """A chain edited in YAML text (not through the shorthands) resamples to its own spacing and crop."""
    text = (ROOT / "configs/data/synthetic.yaml").read_text()
    text = text.replace("pixdim: [3.0, 3.0, 3.0]", f"pixdim: [{spacing}, {spacing}, {spacing}]")
    text = text.replace("spatial_size: [56, 64, 56]", f"spatial_size: {list(shape)}")
    pre = Preprocessing(yaml.safe_load(text)["preprocessing"], augment=False)
    assert (pre.spacing, pre.shape) == (spacing, shape)
    assert pre.contract()["spacing_mm"] == spacing and pre.contract()["shape"] == list(shape)
    path = write_nifti("a.nii.gz")  # 40 x 48 x 40 at 4 mm: 160 x 192 x 160 mm
    out = pre.deterministic()({"image": str(path)})["image"]
    assert tuple(out.shape) == (1, *shape) and out.dtype == torch.float32
    np.testing.assert_allclose(np.sqrt((np.asarray(out.affine)[:3, :3] ** 2).sum(0)), spacing, atol=1e-4)
    # the centre crop keeps the scan's centre in world coordinates (within a voxel of the new grid)
    source = nib.load(path).affine @ np.array([19.5, 23.5, 19.5, 1.0])
    centre = np.asarray(out.affine) @ np.array([*((s - 1) / 2 for s in shape), 1.0])
    np.testing.assert_allclose(centre[:3], source[:3], atol=spacing)


def test_shipped_chains_are_the_default_chain_on_their_grid():
    """configs/**/*.yaml and `default_deterministic` (old checkpoints, `Preprocessing()`) describe one chain."""
    for config in ("configs/data/synthetic.yaml", "configs/data/ixi_1mm.yaml", "configs/data/ixi_1p5mm.yaml",
                   "configs/demo.yaml", "configs/experiment/compare.yaml"):
        pre = Preprocessing(shipped_chain(config))
        assert pre == Preprocessing(default_deterministic(pre.spacing, pre.shape)), config
    assert Preprocessing(shipped_chain()) == Preprocessing()


@pytest.mark.parametrize("step, message", [
    ("Spacingd", "no resampling in the chain"),
    ("NormalizeIntensityd", "no intensity normalisation"),
    ("ResizeWithPadOrCropd", "no crop or pad to a fixed shape"),
    ("Orientationd", "no reorientation"),
    ("ValidateT1d", "no image validation"),
    ("LoadVolumed", "no loader"),
])
def test_a_chain_missing_a_required_step_is_refused(step, message):
    with pytest.raises(PreprocessingError, match=message) as err:
        Preprocessing(without(shipped_chain(), step))
    assert "configs/data/synthetic.yaml" in str(err.value)  # the message points at a working example


@pytest.mark.parametrize("chain, message", [
    (replaced(shipped_chain(), "Orientationd", axcodes="LPS"), "axcodes='LPS'; expected 'RAS'"),
    (replaced(shipped_chain(), "Spacingd", pixdim=[1.0, 1.0, 2.0]), "not isotropic"),
    (replaced(shipped_chain(), "Spacingd", pixdim=[50, 50, 50]), "spacing=\\[50, 50, 50\\]"),
    (replaced(shipped_chain(), "ResizeWithPadOrCropd", spatial_size=[4, 4, 4]), "three sizes >= 8"),
    (replaced(shipped_chain(), "Spacingd", no_such_argument=1), "Spacingd argument .no_such_argument. is not allowed"),
    (shipped_chain()[:5] + [{"class_path": "monai.transforms.RandFlipd", "init_args": {"prob": 0.5}}]
     + shipped_chain()[5:], "random transforms \\['RandFlipd'\\] cannot be cached"),
    ([*shipped_chain()[:4], *shipped_chain()[6:7], *shipped_chain()[4:6], *shipped_chain()[7:]], "order"),
])
def test_malformed_chains_are_refused(chain, message):
    with pytest.raises(PreprocessingError, match=message):
        Preprocessing(chain)


def test_grid_shorthands_rewrite_the_declared_chain():
    pre = Preprocessing(shipped_chain(), spacing=2.0, shape=(80, 96, 80))
    assert pre == Preprocessing(replaced(replaced(shipped_chain(), "Spacingd", pixdim=[2.0, 2.0, 2.0]),
                                         "ResizeWithPadOrCropd", spatial_size=[80, 96, 80]))


@pytest.mark.parametrize("class_path", ["os.system", "builtins.eval", "subprocess.Popen",
                                        "monai.transforms.Lambdad", "monai.transforms.SaveImaged",
                                        "monai.transforms.utils.os", "brainage.data.transforms.np",
                                        "monai.transforms.Compose", "monai.transforms.__builtins__"])
def test_disallowed_class_paths_are_refused_and_nothing_runs(tmp_path, class_path):
    marker = tmp_path / "pwned"
    evil = {"class_path": class_path, "init_args": {"command": f"touch {marker}", "func": f"touch {marker}"}}
    for chain in ([evil, *shipped_chain()], [*shipped_chain()[:-1], evil]):
        with pytest.raises(PreprocessingError, match="not allowed|refused|not a dictionary transform"):
            Preprocessing(chain)
    with pytest.raises(PreprocessingError, match="augmentation\\[0\\]"):
        Preprocessing(augmentation=[evil])
    assert not marker.exists()


def test_init_args_must_be_plain_values():
    with pytest.raises(PreprocessingError, match="plain JSON values"):
        Preprocessing(replaced(shipped_chain(), "NormalizeIntensityd", subtrahend=np.zeros(3)))
    with pytest.raises(PreprocessingError, match="expected a list"):
        Preprocessing({"class_path": "monai.transforms.Spacingd"})


def test_changing_any_transform_argument_changes_the_cache_key(tmp_path):
    base = Preprocessing(shipped_chain())
    for chain in (replaced(shipped_chain(), "Spacingd", mode="nearest"),
                  replaced(shipped_chain(), "NormalizeIntensityd", nonzero=False),
                  replaced(shipped_chain(), "EnsureChannelFirstd", channel_dim="no_channel", strict_check=False),
                  replaced(shipped_chain(), "ValidateT1d", max_voxel_mm=5.0)):
        other = Preprocessing(chain)
        assert other.cache_config() != base.cache_config()
        assert VolumeCache(tmp_path, other.cache_config()).folder != VolumeCache(tmp_path, base.cache_config()).folder
    # the canonical form: aliases, tuples and explicit default keys give the same key; augmentation never counts
    spelled = [{"class_path": e["class_path"].replace("Spacingd", "SpacingD"),
                "init_args": {"keys": "image", **e.get("init_args", {})}} for e in shipped_chain()]
    same = Preprocessing(spelled, augmentation=[{"class_path": "monai.transforms.RandFlipd", "init_args": {}}])
    assert same.cache_config() == base.cache_config()


def test_old_checkpoint_format_gets_the_default_chain():
    old = Preprocessing.from_dict({"spacing": 4.0, "shape": [16, 16, 16], "augment": True, "affine_prob": 0.0})
    assert old == Preprocessing(spacing=4.0, shape=(16, 16, 16), augment=False)
    stored = Preprocessing(spacing=4.0, shape=(16, 16, 16)).to_dict()
    assert Preprocessing.from_dict(stored).spec == stored["deterministic"]
    assert Preprocessing.from_dict(stored).augmentation_spec == []  # predict never augments
    with pytest.raises(PreprocessingError, match="expected 'deterministic'"):
        Preprocessing.from_dict({"grid": 3})


def test_declared_augmentation_with_affine_and_bias_field():
    """The warps commented out in configs/data/ixi_*.yaml are valid entries once uncommented."""
    from monai.transforms import RandAffined, RandBiasFieldd

    assert not any(isinstance(t, (RandAffined, RandBiasFieldd)) for t in Preprocessing().augmentation().transforms)
    text = (ROOT / "configs/data/ixi_1p5mm.yaml").read_text().replace("# - {class_path", "- {class_path")
    declared = yaml.safe_load(text)["augmentation"]
    warps = [e for e in declared if e["class_path"].endswith(("RandAffined", "RandBiasFieldd"))]
    assert len(warps) == 2
    augmentation = Preprocessing(augmentation=[{**e, "init_args": {**e["init_args"], "prob": 1.0}} for e in warps])
    assert [type(t) for t in augmentation.augmentation().transforms] == [RandAffined, RandBiasFieldd]
    assert Preprocessing(augmentation=declared, augment=False).augmentation().transforms == ()
    image = torch.zeros(1, 24, 24, 24)
    image[:, 6:18, 8:16, 6:18] = 1.0
    transform = augmentation.augmentation()
    transform.set_random_state(seed=0)
    out = transform({"image": image})["image"]
    assert tuple(out.shape) == (1, 24, 24, 24) and not torch.allclose(torch.as_tensor(out), image, atol=1e-2)

"""Preprocessing declared as data: lists of MONAI dictionary transforms (`class_path` / `init_args`, the
LightningCLI style), one definition shared by fit, validate, test and predict (cf. the MONAI bundle's
`inference.json`, whose `preprocessing` is a declared list of transforms).

Two chains, both declared in the data YAML (`data.preprocessing`, `data.augmentation`):

- deterministic (cached, stored in every checkpoint, rebuilt by predict): a loader (LoadVolumed or LoadImaged)
  -> ValidateT1d -> ... -> Orientationd(RAS) -> Spacingd (isotropic) -> an intensity normalisation ->
  ResizeWithPadOrCropd. The spacing and shape of the input contract, the model card and the net's img_size check
  are read from the Spacingd and ResizeWithPadOrCropd entries; the cache key is a hash of the canonical chain.
- augmentation (training only, after the cache): random transforms on the cached (1, X, Y, Z) tensors.

A chain read from a checkpoint is untrusted input, so it is only ever built through `build_transform`: classes
from `monai.transforms` and `brainage.data.transforms` on the allow-list of `brainage.data.transform_args`, each
with its own allowed arguments and values (MONAI resolves some string arguments by name, so a transform name alone
is not enough), as plain JSON values. Nothing is imported or called before a spec has passed these checks.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping

import monai.transforms as monai_transforms
from monai.transforms import Compose, MapTransform, Randomizable

from brainage.data import transforms as brainage_transforms
from brainage.data.transform_args import ALLOWED_ARGUMENTS, ArgumentError, check_arguments

__all__ = [
    "ALLOWED_MODULES",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "Preprocessing",
    "PreprocessingError",
    "build_transform",
    "canonical_spec",
    "default_augmentation",
    "default_deterministic",
]

ALLOWED_MODULES = {"monai.transforms": monai_transforms, "brainage.data.transforms": brainage_transforms}
_LOADERS = ("LoadVolumed", "LoadImaged")
_NORMALISERS = ("NormalizeIntensityd", "ScaleIntensityd", "ScaleIntensityRanged", "ScaleIntensityRangePercentilesd")
_Z_SCORE_BRAIN = "z-score over non-zero (brain) voxels"  # the contract text of NormalizeIntensityd(nonzero=True)
DEFAULT_SPACING = 3.0
DEFAULT_SHAPE = (56, 64, 56)


class PreprocessingError(ValueError):
    """A preprocessing spec that is malformed, unsafe or misses a required step; the message names the entry."""


def _entry(class_path: str, **init_args) -> dict:
    return {"class_path": class_path, "init_args": init_args}


def default_deterministic(spacing: float = DEFAULT_SPACING, shape: tuple[int, int, int] = DEFAULT_SHAPE) -> list:
    """The shipped deterministic chain (as in configs/data/*.yaml); also the chain of checkpoints written before
    chains were stored, which recorded only {spacing, shape}."""
    return [
        _entry("brainage.data.transforms.LoadVolumed"),
        _entry("brainage.data.transforms.ValidateT1d"),
        _entry("monai.transforms.EnsureChannelFirstd", channel_dim="no_channel"),
        _entry("monai.transforms.Orientationd", axcodes="RAS", labels=[["L", "R"], ["P", "A"], ["I", "S"]]),
        _entry("monai.transforms.Spacingd", pixdim=[float(spacing)] * 3, mode="bilinear"),
        _entry("monai.transforms.NormalizeIntensityd", nonzero=True),
        _entry("monai.transforms.ResizeWithPadOrCropd", spatial_size=[int(s) for s in shape]),
        _entry("monai.transforms.EnsureTyped", dtype="float32"),
    ]


def default_augmentation() -> list:
    """Cheap random augmentation on cached tensors (no resampling: a RandAffined warp costs ~1 vol/s per CPU core
    at 160 x 192 x 160, so it is declared in YAML only where wanted)."""
    return [
        _entry("monai.transforms.RandFlipd", prob=0.5, spatial_axis=0),
        _entry("monai.transforms.RandScaleIntensityd", factors=0.1, prob=0.5),
        _entry("monai.transforms.RandShiftIntensityd", offsets=0.1, prob=0.5),
        _entry("monai.transforms.RandGaussianNoised", prob=0.3, std=0.05),
    ]


def _plain(value, where: str):
    """A deep copy of a JSON-like value (tuples become lists); anything else is refused."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PreprocessingError(f"{where}: found {value}; expected a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise PreprocessingError(f"{where}: found a {type(value).__name__}; expected plain JSON values (numbers, "
                             f"strings, booleans, null, lists, string-keyed mappings)")


def _resolve(class_path: object, where: str) -> type:
    """The transform class named by `class_path`, looked up in the allow-list only (never imported by name)."""
    module_name, _, name = class_path.rpartition(".") if isinstance(class_path, str) else ("", "", "")
    module = ALLOWED_MODULES.get(module_name)
    if module is None or name.startswith("_"):
        raise PreprocessingError(f"{where}: class_path {class_path!r} is not allowed; expected "
                                 f"monai.transforms.<Name>d or brainage.data.transforms.<Name>d")
    cls = getattr(module, name, None)
    public = module is monai_transforms or name in brainage_transforms.__all__
    if not (public and isinstance(cls, type) and issubclass(cls, MapTransform)):
        raise PreprocessingError(f"{where}: class_path {class_path!r} is not a dictionary transform of "
                                 f"{module_name}; expected a MapTransform such as {module_name}.Spacingd")
    if cls.__name__ not in ALLOWED_ARGUMENTS:
        raise PreprocessingError(f"{where}: {class_path} is refused: not on brainage's allow-list of data-to-data "
                                 f"transforms (brainage.data.transform_args)")
    return cls


def canonical_spec(spec: object, name: str = "preprocessing") -> list[dict]:
    """A checked, plain copy of a chain: [{"class_path": str, "init_args": {...}}], `keys` defaulting to "image",
    init_args sorted. Raises PreprocessingError for anything malformed or not allowed."""
    if not isinstance(spec, (list, tuple)):
        raise PreprocessingError(f"{name}: found a {type(spec).__name__}; expected a list of "
                                 "{class_path, init_args} entries")
    out = []
    for i, entry in enumerate(spec):
        where = f"{name}[{i}]"
        if not isinstance(entry, Mapping) or set(entry) - {"class_path", "init_args"} or "class_path" not in entry:
            raise PreprocessingError(f"{where}: found {entry!r}; expected a mapping with class_path and optional "
                                     "init_args")
        cls = _resolve(entry["class_path"], where)
        init_args = _plain(entry.get("init_args") or {}, f"{where}.init_args")
        if not isinstance(init_args, dict):
            raise PreprocessingError(f"{where}.init_args: found {init_args!r}; expected a mapping")
        init_args.setdefault("keys", "image")
        try:
            check_arguments(cls.__name__, init_args, where)
        except ArgumentError as err:
            raise PreprocessingError(str(err)) from None
        module_name = entry["class_path"].rpartition(".")[0]  # aliases (SpacingD, SpacingDict) -> Spacingd
        out.append({"class_path": f"{module_name}.{cls.__name__}", "init_args": dict(sorted(init_args.items()))})
    return out


def build_transform(entry: dict, where: str = "transform") -> MapTransform:
    """Instantiate one canonical entry (see `canonical_spec`); argument errors name the entry."""
    cls = _resolve(entry["class_path"], where)
    try:
        check_arguments(cls.__name__, entry["init_args"], where)
    except ArgumentError as err:
        raise PreprocessingError(str(err)) from None
    try:
        return cls(**copy.deepcopy(entry["init_args"]))
    except (TypeError, ValueError, KeyError) as err:
        raise PreprocessingError(f"{where}: {entry['class_path']}({entry['init_args']}) failed: {err}") from err


def _find(spec: list[dict], names: tuple[str, ...], missing: str) -> int:
    found = [i for i, e in enumerate(spec) if e["class_path"].rsplit(".", 1)[1] in names]
    if not found:
        raise PreprocessingError(f"preprocessing: no {missing} in the chain "
                                 f"[{', '.join(e['class_path'].rsplit('.', 1)[1] for e in spec)}]; expected "
                                 f"{' or '.join(names)} (see configs/data/synthetic.yaml)")
    return found[0]


def _with_grid(spec: list[dict], spacing: float | None, shape: tuple[int, int, int] | None) -> list[dict]:
    """The chain with Spacingd's pixdim and ResizeWithPadOrCropd's spatial_size replaced (None keeps them)."""
    spec = copy.deepcopy(spec)
    for value, name, arg in ((spacing, "Spacingd", "pixdim"), (shape, "ResizeWithPadOrCropd", "spatial_size")):
        if value is not None:
            index = _find(spec, (name,), name)
            spec[index]["init_args"][arg] = [float(value)] * 3 if arg == "pixdim" else [int(s) for s in value]
    return spec


class Preprocessing:
    """The model's input contract and the transforms that enforce it, built from declared chains.

    Args:
        deterministic: the cached chain as [{class_path, init_args}] (None = `default_deterministic()`); checked
            for a loader, ValidateT1d, Orientationd(RAS), an isotropic Spacingd, an intensity normalisation and
            a final ResizeWithPadOrCropd, and for the absence of random transforms.
        augmentation: the random training chain run on cached tensors (None = `default_augmentation()`).
        spacing: shorthand that sets Spacingd's pixdim to (spacing,) * 3 mm (None = as declared).
        shape: shorthand that sets ResizeWithPadOrCropd's spatial_size (None = as declared).
        augment: False drops the augmentation chain.

    Examples::

        pre = Preprocessing(spacing=2.0, shape=(80, 96, 80))   # default chain on a 2 mm grid
        image = pre.deterministic()({"image": "sub-01_T1w.nii.gz"})["image"]  # (1, 80, 96, 80) float32
    """

    def __init__(self, deterministic: list | None = None, augmentation: list | None = None, *,
                 spacing: float | None = None, shape: tuple[int, int, int] | None = None,
                 augment: bool = True) -> None:
        spec = canonical_spec(default_deterministic() if deterministic is None else deterministic)
        self.spec = canonical_spec(_with_grid(spec, spacing, shape))
        self.augmentation_spec = canonical_spec(
            (default_augmentation() if augmentation is None else augmentation) if augment else [], "augmentation")
        self.spacing, self.shape, self.normalisation = self._check()
        for i, entry in enumerate(self.augmentation_spec):
            if entry["class_path"].rsplit(".", 1)[1] in _LOADERS:
                raise PreprocessingError(f"augmentation[{i}]: {entry['class_path']} loads files; the augmentation "
                                         "chain runs on cached tensors")
        self.deterministic(), self.augmentation()  # every argument is checked now, not at the first scan

    def _check(self) -> tuple[float, tuple[int, int, int], str]:
        """(spacing mm, shape, normalisation text) of a chain holding every required step, in order."""
        spec, names = self.spec, [e["class_path"].rsplit(".", 1)[1] for e in self.spec]
        if _find(spec, _LOADERS, "loader") != 0:
            raise PreprocessingError(f"preprocessing: the chain must start with a loader ({' or '.join(_LOADERS)}); "
                                     f"found {names[0]} first")
        validate = _find(spec, ("ValidateT1d",), "image validation")
        orientation = _find(spec, ("Orientationd",), "reorientation")
        spacing_at = _find(spec, ("Spacingd",), "resampling")
        normalise = _find(spec, _NORMALISERS, "intensity normalisation")
        crop = _find(spec, ("ResizeWithPadOrCropd",), "crop or pad to a fixed shape")
        random = [n for e, n in zip(spec, names) if issubclass(_resolve(e["class_path"], n), Randomizable)]
        if random:
            raise PreprocessingError(f"preprocessing: random transforms {random} cannot be cached; declare them "
                                     "under data.augmentation")
        if not validate < orientation < spacing_at < crop:
            raise PreprocessingError(f"preprocessing: found the order {names}; expected ValidateT1d before "
                                     "Orientationd before Spacingd before ResizeWithPadOrCropd")
        if "RegisterToTemplated" in names and not orientation < names.index("RegisterToTemplated") < spacing_at:
            raise PreprocessingError(f"preprocessing: found the order {names}; expected RegisterToTemplated after "
                                     "Orientationd and before Spacingd")
        if spec[orientation]["init_args"].get("axcodes") != "RAS":
            raise PreprocessingError(f"preprocessing: Orientationd has axcodes="
                                     f"{spec[orientation]['init_args'].get('axcodes')!r}; expected 'RAS'")
        if any(n in ("Spacingd", "ResizeWithPadOrCropd") for n in names[crop + 1:]):
            raise PreprocessingError(f"preprocessing: {names[crop + 1:]} after ResizeWithPadOrCropd; the crop/pad "
                                     "must set the final grid")
        pixdim = spec[spacing_at]["init_args"].get("pixdim")
        pixdim = [pixdim] * 3 if isinstance(pixdim, (int, float)) else pixdim
        if not (isinstance(pixdim, list) and len(pixdim) == 3 and len(set(pixdim)) == 1
                and isinstance(pixdim[0], (int, float)) and 0.25 <= pixdim[0] <= 8.0):
            raise PreprocessingError(f"spacing={pixdim} mm (Spacingd pixdim) is not isotropic 0.25-8 mm; expected "
                                     "e.g. [1.5, 1.5, 1.5] (published recipes use 1, 1.5 or 2)")
        size = spec[crop]["init_args"].get("spatial_size")
        if not (isinstance(size, list) and len(size) == 3
                and all(isinstance(s, int) and not isinstance(s, bool) and s >= 8 for s in size)):
            raise PreprocessingError(f"shape={size} (ResizeWithPadOrCropd spatial_size) must be three sizes >= 8 "
                                     "voxels, e.g. [56, 64, 56]")
        norm = spec[normalise]
        args = {k: v for k, v in norm["init_args"].items() if k != "keys"}
        text = _Z_SCORE_BRAIN if names[normalise] == "NormalizeIntensityd" and args == {"nonzero": True} else \
            f"{names[normalise]} {json.dumps(args, sort_keys=True)}"
        return float(pixdim[0]), tuple(size), text

    @classmethod
    def from_dict(cls, stored: dict) -> Preprocessing:
        """The deterministic preprocessing recorded in a checkpoint (`to_dict`); checkpoints from before chains
        were stored hold only {spacing, shape} and get the default chain on that grid. No augmentation."""
        if not isinstance(stored, Mapping):
            raise PreprocessingError(f"checkpoint preprocessing: found a {type(stored).__name__}; expected a mapping")
        if "deterministic" in stored:
            return cls(stored["deterministic"], augment=False)
        if {"spacing", "shape"} <= set(stored):
            try:
                spacing, shape = float(stored["spacing"]), tuple(int(s) for s in stored["shape"])
            except (TypeError, ValueError) as err:
                raise PreprocessingError(f"checkpoint preprocessing: found spacing={stored['spacing']!r}, "
                                         f"shape={stored['shape']!r}; expected a number and three sizes") from err
            return cls(spacing=spacing, shape=shape, augment=False)
        raise PreprocessingError(f"checkpoint preprocessing: found keys {sorted(stored)}; expected 'deterministic'")

    @property
    def registered(self) -> bool:
        """Whether the chain normalises nonlinearly to the template (RegisterToTemplated)."""
        return any(e["class_path"].endswith(".RegisterToTemplated") for e in self.spec)

    def with_registration(self) -> Preprocessing:
        """This chain with RegisterToTemplated (its defaults, output at this chain's spacing) right after
        Orientationd; itself if it already registers. No augmentation."""
        if self.registered:
            return self
        spec = copy.deepcopy(self.spec)
        at = _find(spec, ("Orientationd",), "reorientation") + 1
        spec.insert(at, _entry("brainage.data.transforms.RegisterToTemplated", spacing=self.spacing))
        return Preprocessing(spec, augment=False)

    def _compose(self, spec: list[dict], name: str) -> Compose:
        return Compose([build_transform(e, f"{name}[{i}]") for i, e in enumerate(spec)])

    def loader(self) -> Compose:
        """File path -> validated 3D MetaTensor (no resampling): the chain up to and including ValidateT1d."""
        return self._compose(self.spec[:_find(self.spec, ("ValidateT1d",), "image validation") + 1], "preprocessing")

    def deterministic(self) -> Compose:
        """File path -> model-ready (1, X, Y, Z) float32 MetaTensor whose `.affine` maps voxels to MNI mm."""
        return self._compose(self.spec, "preprocessing")

    def augmentation(self) -> Compose:
        """The random training chain, on cached tensors."""
        return self._compose(self.augmentation_spec, "augmentation")

    def cache_config(self) -> dict:
        """Everything that changes the output of `deterministic` (the persistent cache key): the canonical chain."""
        return {"deterministic": self.spec}

    def contract(self) -> dict:
        """The input contract recorded in the model card (with the chain's own nonlinear normalisation, if any)."""
        return {
            "modality": "T1w",
            "skull_stripped": True,
            "space": "MNI152 (affine alignment)",
            "orientation": "RAS",
            "spacing_mm": self.spacing,
            "shape": list(self.shape),
            "normalisation": self.normalisation,
            **({"registration": "nonlinear to the ICBM152 2009a T1 in the chain (affine + free-form deformation, "
                                "RegisterToTemplated)"} if self.registered else {}),
        }

    def to_dict(self) -> dict:
        """Stored in checkpoints: the deterministic chain (rebuilt by predict), the augmentation chain (a record
        only) and the grid it implies."""
        return {"deterministic": copy.deepcopy(self.spec), "augmentation": copy.deepcopy(self.augmentation_spec),
                "spacing": self.spacing, "shape": list(self.shape)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Preprocessing) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        steps = ", ".join(e["class_path"].rsplit(".", 1)[1] for e in self.spec)
        return f"Preprocessing(spacing={self.spacing}, shape={self.shape}, [{steps}])"

"""The allow-list of preprocessing transforms and, per transform, of its arguments and their values.

A preprocessing chain read from a checkpoint is untrusted input. MONAI resolves some string arguments by name and
calls what it finds: `LoadImaged(reader="os.system", command=...)` locates `os.system` and calls it with the extra
keyword arguments; writers, `select_fn`, `func` and similar arguments do the same. Checking the transform's name is
therefore not enough: every argument a spec may set is listed here with the values it may take, and string values
come from closed sets (dtype names, interpolation modes, axis codes) or are plain key names. Anything else is refused
before a transform is built, so no argument value ever reaches a name lookup.

Adding a transform or an argument means adding a line here; `tests/data/test_transform_args.py` builds every entry
and fuzzes every argument with dotted names of callables.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ALLOWED_ARGUMENTS", "ArgumentError", "Value", "check_arguments"]


class ArgumentError(ValueError):
    """An argument that a transform may not take, or a value it may not have."""


@dataclass(frozen=True)
class Value:
    """A predicate on a plain JSON value and the text that says what it accepts."""

    accepts: Callable[[object], bool]
    expected: str

    def __or__(self, other: Value) -> Value:
        return Value(lambda v: self.accepts(v) or other.accepts(v), f"{self.expected} or {other.expected}")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _list_of(item: Callable[[object], bool], lengths: range = range(1, 9)) -> Callable[[object], bool]:
    return lambda v: isinstance(v, list) and len(v) in lengths and all(item(x) for x in v)


def choice(*options: object) -> Value:
    return Value(lambda v: any(v == o and type(v) is type(o) for o in options), f"one of {list(options)}")


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
NONE = Value(lambda v: v is None, "null")
BOOL = Value(lambda v: isinstance(v, bool), "true or false")
NUMBER = Value(_is_number, "a number")
INT = Value(_is_int, "an integer")
NUMBERS = NUMBER | Value(_list_of(lambda x: _is_number(x) or _list_of(_is_number, range(1, 3))(x)),
                         "a list of numbers (or of [low, high] pairs)")
INTS = Value(_list_of(_is_int), "a list of integers")
KEYS = Value(lambda v: (isinstance(v, str) and _KEY.fullmatch(v) is not None)
             or _list_of(lambda x: isinstance(x, str) and _KEY.fullmatch(x) is not None)(v),
             "a key name or a list of key names (letters, digits, _)")
DTYPE = choice("float16", "float32", "float64", "bfloat16", "uint8", "int8", "int16", "int32", "int64", "bool")
AXCODES = Value(lambda v: isinstance(v, str) and re.fullmatch(r"[LRAPSI]{3}", v) is not None,
                "three axis codes such as 'RAS'")
AXIS_LABELS = Value(_list_of(_list_of(lambda x: isinstance(x, str) and re.fullmatch(r"[LRAPSI]", x) is not None,
                                      range(2, 3)), range(3, 4)),
                    "three pairs of axis letters such as [[L, R], [P, A], [I, S]]")
INTERPOLATION = choice("nearest", "bilinear", "trilinear", "bicubic", "area", "nearest-exact") | Value(
    lambda v: _is_int(v) and 0 <= v <= 5, "a spline order 0-5")
GRID_PADDING = choice("zeros", "border", "reflection")
ARRAY_PADDING = choice("constant", "edge", "reflect", "symmetric", "minimum", "maximum", "mean", "median", "wrap",
                       "empty", "linear_ramp", "replicate", "circular")
METHOD = choice("symmetric", "end")
PROB = Value(lambda v: _is_number(v) and 0.0 <= v <= 1.0, "a probability in [0, 1]")
SPATIAL_AXIS = NONE | INT | INTS

_COMMON = {"keys": KEYS, "allow_missing_keys": BOOL}
_LAZY = {"lazy": BOOL}

# transform class name -> its allowed arguments (beyond `keys` and `allow_missing_keys`) and their values
ALLOWED_ARGUMENTS: dict[str, dict[str, Value]] = {
    # brainage.data.transforms
    "LoadVolumed": {"max_voxels": INT},
    "ValidateT1d": {"min_voxel_mm": NUMBER, "max_voxel_mm": NUMBER},
    "RegisterToTemplated": {"control_points": Value(_list_of(_is_int, range(3, 4)), "three integers"),
                            "smoothness": NUMBER, "iterations": INT, "fit_spacing": NUMBER, "spacing": NUMBER,
                            "min_correlation": NUMBER},
    # loaders and layout (deterministic chain)
    "LoadImaged": {"reader": NONE | choice("NibabelReader", "NumpyReader"), "dtype": NONE | DTYPE,
                   "image_only": BOOL, "ensure_channel_first": BOOL, "simple_keys": BOOL, "expanduser": BOOL},
    "EnsureChannelFirstd": {"channel_dim": NONE | INT | choice("no_channel"), "strict_check": BOOL},
    "Orientationd": {"axcodes": AXCODES, "as_closest_canonical": BOOL, "labels": NONE | AXIS_LABELS, **_LAZY},
    "Spacingd": {"pixdim": NUMBERS, "diagonal": BOOL, "mode": INTERPOLATION, "padding_mode": GRID_PADDING,
                 "align_corners": BOOL, "dtype": NONE | DTYPE, "scale_extent": BOOL, "recompute_affine": BOOL,
                 "min_pixdim": NONE | NUMBERS, "max_pixdim": NONE | NUMBERS, "ensure_same_shape": BOOL, **_LAZY},
    "ResizeWithPadOrCropd": {"spatial_size": INTS, "mode": ARRAY_PADDING, "method": METHOD, **_LAZY},
    "SpatialPadd": {"spatial_size": INTS, "method": METHOD, "mode": ARRAY_PADDING, **_LAZY},
    "CenterSpatialCropd": {"roi_size": INTS, **_LAZY},
    "Resized": {"spatial_size": INTS, "size_mode": choice("all", "longest"), "mode": INTERPOLATION,
                "align_corners": NONE | BOOL, "anti_aliasing": BOOL, "dtype": NONE | DTYPE, **_LAZY},
    "EnsureTyped": {"data_type": choice("tensor", "numpy"), "dtype": NONE | DTYPE, "wrap_sequence": BOOL,
                    "track_meta": NONE | BOOL},
    "CastToTyped": {"dtype": DTYPE},
    # intensity (deterministic chain)
    "NormalizeIntensityd": {"subtrahend": NONE | NUMBERS, "divisor": NONE | NUMBERS, "nonzero": BOOL,
                            "channel_wise": BOOL, "dtype": DTYPE},
    "ScaleIntensityd": {"minv": NONE | NUMBER, "maxv": NONE | NUMBER, "factor": NONE | NUMBER, "channel_wise": BOOL,
                        "dtype": DTYPE},
    "ScaleIntensityRanged": {"a_min": NUMBER, "a_max": NUMBER, "b_min": NONE | NUMBER, "b_max": NONE | NUMBER,
                             "clip": BOOL, "dtype": DTYPE},
    "ScaleIntensityRangePercentilesd": {"lower": NUMBER, "upper": NUMBER, "b_min": NONE | NUMBER,
                                        "b_max": NONE | NUMBER, "clip": BOOL, "relative": BOOL, "channel_wise": BOOL,
                                        "dtype": DTYPE},
    "GaussianSmoothd": {"sigma": NUMBERS, "approx": choice("erf", "sampled", "scalespace")},
    "ThresholdIntensityd": {"threshold": NUMBER, "above": BOOL, "cval": NUMBER},
    # augmentation (random chain)
    "RandFlipd": {"prob": PROB, "spatial_axis": SPATIAL_AXIS, **_LAZY},
    "RandRotate90d": {"prob": PROB, "max_k": INT, "spatial_axes": INTS, **_LAZY},
    "RandScaleIntensityd": {"factors": NUMBERS, "prob": PROB, "channel_wise": BOOL, "dtype": DTYPE},
    "RandShiftIntensityd": {"offsets": NUMBERS, "safe": BOOL, "prob": PROB, "channel_wise": BOOL},
    "RandGaussianNoised": {"prob": PROB, "mean": NUMBER, "std": NUMBER, "dtype": DTYPE, "sample_std": BOOL},
    "RandAdjustContrastd": {"prob": PROB, "gamma": NUMBERS, "invert_image": BOOL, "retain_stats": BOOL},
    "RandGaussianSmoothd": {"sigma_x": NUMBERS, "sigma_y": NUMBERS, "sigma_z": NUMBERS,
                            "approx": choice("erf", "sampled", "scalespace"), "prob": PROB},
    "RandBiasFieldd": {"degree": INT, "coeff_range": NUMBERS, "dtype": DTYPE, "prob": PROB},
    "RandAffined": {"spatial_size": NONE | INTS, "prob": PROB, "rotate_range": NONE | NUMBERS,
                    "shear_range": NONE | NUMBERS, "translate_range": NONE | NUMBERS, "scale_range": NONE | NUMBERS,
                    "mode": INTERPOLATION, "padding_mode": GRID_PADDING, "cache_grid": BOOL, **_LAZY},
    "RandZoomd": {"prob": PROB, "min_zoom": NUMBERS, "max_zoom": NUMBERS, "mode": INTERPOLATION,
                  "padding_mode": ARRAY_PADDING | GRID_PADDING, "align_corners": NONE | BOOL, "dtype": DTYPE,
                  "keep_size": BOOL, **_LAZY},
    # cutout (DeVries & Taylor 2017), zero-filled boxes; measured for attribution in docs/report.md, not shipped on
    "RandCoarseDropoutd": {"holes": INT, "spatial_size": INT | INTS, "dropout_holes": BOOL, "fill_value": NONE | NUMBER,
                           "max_holes": NONE | INT, "max_spatial_size": NONE | INT | INTS, "prob": PROB},
    "RandRotated": {"range_x": NUMBERS, "range_y": NUMBERS, "range_z": NUMBERS, "prob": PROB, "keep_size": BOOL,
                    "mode": INTERPOLATION, "padding_mode": GRID_PADDING, "align_corners": BOOL, "dtype": DTYPE,
                    **_LAZY},
}


def check_arguments(name: str, init_args: dict, where: str) -> None:
    """Raise ArgumentError unless transform `name` is allowed and every entry of `init_args` is an allowed argument
    with an allowed value."""
    allowed = ALLOWED_ARGUMENTS.get(name)
    if allowed is None:
        raise ArgumentError(f"{where}: {name} is not on brainage's transform allow-list; allowed: "
                            f"{sorted(ALLOWED_ARGUMENTS)}")
    allowed = {**_COMMON, **allowed}
    for key, value in init_args.items():
        if key not in allowed:
            raise ArgumentError(f"{where}: {name} argument {key!r} is not allowed; {name} takes "
                                f"{sorted(allowed)}")
        if not allowed[key].accepts(value):
            raise ArgumentError(f"{where}: {name}({key}={value!r}) is refused; expected {allowed[key].expected}")

"""The per-transform argument allow-list: every allowed transform builds, and no argument value ever reaches a name
lookup (MONAI resolves string readers, writers and callables by their dotted name)."""

from __future__ import annotations

import importlib
import itertools
import os
import pydoc
import sys

import monai.transforms as monai_transforms
import monai.transforms.io.array as monai_io
import pytest

from brainage.data import transforms as brainage_transforms
from brainage.data.preprocessing import PreprocessingError, build_transform, canonical_spec
from brainage.data.transform_args import ALLOWED_ARGUMENTS

# arguments without a default: the least each transform needs to be built
REQUIRED = {
    "Spacingd": {"pixdim": [2.0, 2.0, 2.0]}, "ResizeWithPadOrCropd": {"spatial_size": [8, 8, 8]},
    "SpatialPadd": {"spatial_size": [8, 8, 8]}, "CenterSpatialCropd": {"roi_size": [8, 8, 8]},
    "Resized": {"spatial_size": [8, 8, 8]}, "CastToTyped": {"dtype": "float32"},
    "ScaleIntensityRanged": {"a_min": 0.0, "a_max": 1.0}, "GaussianSmoothd": {"sigma": 1.0},
    "ThresholdIntensityd": {"threshold": 0.5}, "ScaleIntensityRangePercentilesd": {"lower": 1.0, "upper": 99.0, "b_min": 0.0, "b_max": 1.0},
    "RandScaleIntensityd": {"factors": 0.1}, "RandShiftIntensityd": {"offsets": 0.1},
    "RandCoarseDropoutd": {"holes": 1, "spatial_size": 4},
    "Orientationd": {"axcodes": "RAS"},
}
# names MONAI or Python resolve to code; the canary module is written by the fixture below
DOTTED = ["os.system", "subprocess.Popen", "builtins.eval", "builtins.exec", "pydoc.locate", "shutil.rmtree",
          "monai.transforms.Lambda", "brainage.cli.main", "canary_payload.run", "canary_payload"]
# argument names that MONAI transforms use for callables, readers and writers, plus catch-alls
DANGEROUS_NAMES = ["reader", "writer", "func", "select_fn", "lambda_func", "inv_func", "command", "transform",
                   "name", "output_dir", "args", "kwargs", "pad_kwargs", "device", "meta_keys"]


def _class_path(name: str) -> str:
    module = "brainage.data.transforms" if name in brainage_transforms.__all__ else "monai.transforms"
    return f"{module}.{name}"


@pytest.fixture
def canary(tmp_path, monkeypatch):
    """A module that leaves a marker when imported or called, and watchers on os.system and name lookups."""
    marker = tmp_path / "resolved"
    (tmp_path / "canary_payload.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n"
        f"def run(*a, **k):\n    open({str(marker)!r}, 'a').write('called\\n')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    looked_up: list[str] = []

    def watch(original):
        def wrapper(name, *args, **kwargs):
            if any(str(name).startswith(d) for d in DOTTED):
                looked_up.append(str(name))
            return original(name, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(os, "system", lambda command: looked_up.append(f"os.system({command})") or 0)
    monkeypatch.setattr(pydoc, "locate", watch(pydoc.locate))
    monkeypatch.setattr(monai_io, "locate", watch(monai_io.locate))
    monkeypatch.setattr(importlib, "import_module", watch(importlib.import_module))
    yield marker, looked_up
    sys.modules.pop("canary_payload", None)


@pytest.mark.parametrize("name", sorted(ALLOWED_ARGUMENTS))
def test_every_allowed_transform_builds(name):
    cls = getattr(brainage_transforms if name in brainage_transforms.__all__ else monai_transforms, name)
    entry = canonical_spec([{"class_path": _class_path(name), "init_args": REQUIRED.get(name, {})}])[0]
    assert isinstance(build_transform(entry), cls)


@pytest.mark.parametrize("name", sorted(ALLOWED_ARGUMENTS))
def test_dotted_names_in_any_argument_are_refused_and_never_resolved(name, canary):
    """Fuzz: every allowed and every dangerous argument name, set to dotted names of callables (bare, in a list, in
    a mapping), is refused before anything is built; nothing is imported, located or called."""
    marker, looked_up = canary
    arguments = sorted(set(ALLOWED_ARGUMENTS[name]) | {"keys"} | set(DANGEROUS_NAMES))
    tried = 0
    for argument, dotted in itertools.product(arguments, DOTTED):
        if argument == "keys" and "." not in dotted:
            continue  # a bare word is a valid dictionary key, which is never looked up (built below)
        for value in (dotted, [dotted], {"name": dotted}, [dotted, dotted]):
            init_args = {**REQUIRED.get(name, {}), argument: value}
            entry = {"class_path": _class_path(name), "init_args": init_args}
            with pytest.raises(PreprocessingError, match="refused|not allowed"):
                canonical_spec([entry])
            with pytest.raises(PreprocessingError, match="refused|not allowed"):
                build_transform(entry)  # the builder checks again, whoever calls it
            tried += 1
    assert tried == (len(arguments) * len(DOTTED) - 1) * 4
    as_key = canonical_spec([{"class_path": _class_path(name),
                              "init_args": {**REQUIRED.get(name, {}), "keys": "canary_payload"}}])[0]
    build_transform(as_key)
    assert looked_up == [] and not marker.exists()


def test_the_reported_loadimaged_payload_is_refused(canary):
    marker, looked_up = canary
    payload = {"class_path": "monai.transforms.LoadImaged",
               "init_args": {"keys": "unused", "allow_missing_keys": True, "reader": "os.system",
                             "command": f"touch {marker}"}}
    with pytest.raises(PreprocessingError, match="LoadImaged argument 'command' is not allowed|reader='os.system'"):
        canonical_spec([payload])
    safe = {**payload, "init_args": {"keys": "image", "reader": "NibabelReader", "image_only": True}}
    assert canonical_spec([safe])[0]["init_args"]["reader"] == "NibabelReader"
    assert looked_up == [] and not marker.exists()


@pytest.mark.parametrize("init_args, message", [
    ({"dtype": "numpy.load"}, "dtype='numpy.load'"),
    ({"mode": "os.system"}, "mode='os.system'"),
    ({"pixdim": "2.0"}, "pixdim='2.0'"),
    ({"keys": "image; rm -rf /"}, "key name"),
    ({"padding_mode": ["zeros"]}, "padding_mode=\\['zeros'\\]"),
])
def test_values_outside_their_closed_set_are_refused(init_args, message):
    entry = {"class_path": "monai.transforms.Spacingd", "init_args": {"pixdim": [2.0, 2.0, 2.0], **init_args}}
    with pytest.raises(PreprocessingError, match=message):
        canonical_spec([entry])

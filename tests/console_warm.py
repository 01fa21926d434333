"""Preloaded by the fork server of tests/test_help_examples.py only: brainage's command modules and the cached
reference data its commands load (ICBM152 maps, the default atlas and its ventricles, the demo's synth warps), so
that each example's process starts warm. Each is held in a `functools.lru_cache`, as a cold process holds it after
its first call, and computed identically; every forked process gets its own copy.
"""

from __future__ import annotations

import importlib

from brainage.cli import COMMANDS
from brainage.data.synth import _structure_warps
from brainage.reference.atlas import lateral_ventricle_masks, load_default_atlas
from brainage.reference.templates import load_icbm152

for _module, _ in COMMANDS.values():
    importlib.import_module(_module)
for _kind in ("t1", "gm", "wm"):
    load_icbm152(_kind)
load_default_atlas()
lateral_ventricle_masks()
_structure_warps()

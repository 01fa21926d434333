"""``brainage prepare``: raw T1 -> N4 -> skull strip -> affine to ICBM152 2009a -> MNI grid, with QC (issue 8).

Submodules: :mod:`~brainage.prepare.command` (CLI, dataset runner), :mod:`~brainage.prepare.steps`,
:mod:`~brainage.prepare.register` and :mod:`~brainage.prepare.qc` (need the ``prepare`` extra: SimpleITK, deepbet),
:mod:`~brainage.prepare.phantom` (synthetic raw heads with a known pose, for tests). The manifest it writes is
the contract of :mod:`brainage.data.manifest`, which every command reads. Nothing is imported eagerly, so ``import brainage.prepare`` works without the
extra.
"""

from __future__ import annotations

__all__: list[str] = []

"""A small BIDS cohort of real NIfTI files (participants.tsv + sub-*/anat/*_T1w.nii.gz) for datamodule tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def bids_cohort(write_nifti, brain_like, n: int, age: Callable[[int], float] = lambda i: 20 + i,
                sites: int = 0) -> str:
    """Write `n` subjects under `ds/` with the given ages, alternating sex (and `sites` sites when > 0); return the
    dataset root."""
    header = "participant_id\tage\tsex" + ("\tsite" if sites else "")
    rows = [header]
    for i in range(n):
        path = write_nifti(f"ds/sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz", brain_like(seed=i))
        rows.append(f"sub-{i:02d}\t{age(i)}\t{'MF'[i % 2]}" + (f"\tS{i % sites}" if sites else ""))
    root: Path = path.parents[2]
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return str(root)

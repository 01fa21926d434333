"""Benchmark the persistent preprocessed-volume cache against decoding + preprocessing the .nii.gz every time.

Volumes: brain-like float32 182 x 218 x 182 images on the 1 mm MNI grid saved as .nii.gz (the shape and dtype of
the performance anchors, team notes performance.md section 3), preprocessed to `--spacing` / `--shape` (default
1 mm, 160 x 192 x 160, as in SFCN, Peng et al. 2021). Single thread (`torch.set_num_threads(1)`): numbers are per
core. Paths timed, interleaved round by round, medians over rounds:

- nifti: `Preprocessing.deterministic()` on the file (LoadVolumed -> ... -> ResizeWithPadOrCropd);
- cache: `VolumeCache.read(entry)`, what a training epoch does per item with `cache_dir` set;
- cache+hash: `VolumeCache.load(path)`, the first access in a run (SHA-1 of the file, then the read).

The last printed line is JSON: {"cache_vs_nifti": nifti time / cache time (higher is better), "cache_vol_per_s",
"cache_hash_vol_per_s", "nifti_vol_per_s"}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from brainage.data.cache import VolumeCache  # noqa: E402
from brainage.data.transforms import MNI_1MM_AFFINE, Preprocessing  # noqa: E402


def _brain(shape: tuple[int, int, int] = (182, 218, 182), seed: int = 0) -> np.ndarray:
    """Smooth-textured ellipsoid with zero background (compresses about like a skull-stripped T1)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.7  # (X, Y, Z)
    texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5)
    return (inside * (500 + 2000 * texture)).astype(np.float32)


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/cache.py --volumes 4 --rounds 3")
    parser.add_argument("--volumes", type=int, default=4, help="distinct .nii.gz files (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds over all volumes (default 3)")
    parser.add_argument("--spacing", type=float, default=1.0, help="preprocessing spacing in mm (default 1)")
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 192, 160], help="model grid (default 160 192 160)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pre = Preprocessing(spacing=args.spacing, shape=tuple(args.shape), augment=False)
    transform = pre.deterministic()
    with tempfile.TemporaryDirectory() as tmp:
        base = _brain()
        paths = []
        for i in range(args.volumes):
            paths.append(Path(tmp) / f"sub-{i:02d}_T1w.nii.gz")
            nib.save(nib.Nifti1Image(base * (1 + 0.01 * i), MNI_1MM_AFFINE), paths[-1])
        cache = VolumeCache(Path(tmp) / "cache", pre.cache_config())
        entries = [cache.ensure(p, transform) for p in paths]  # warm-up + fill
        size_gz = np.mean([p.stat().st_size for p in paths]) / 2**20
        size_entry = np.mean([e.stat().st_size for e in entries]) / 2**20
        timings: dict[str, list[float]] = {"nifti": [], "cache": [], "cache+hash": []}
        for _ in range(args.rounds):
            timings["nifti"].append(_time(lambda: [transform({"image": str(p)}) for p in paths]) / len(paths))
            timings["cache"].append(_time(lambda: [VolumeCache.read(e) for e in entries]) / len(paths))
            timings["cache+hash"].append(_time(lambda: [cache.load(p, transform) for p in paths]) / len(paths))
    median = {name: statistics.median(values) for name, values in timings.items()}
    print(f"{args.volumes} volumes 182x218x182 f32 .nii.gz ({size_gz:.1f} MiB) -> {tuple(args.shape)} at "
          f"{args.spacing} mm; cache entry {size_entry:.1f} MiB (float16); 1 thread; median of {args.rounds} rounds")
    print("| path | ms / volume | volumes / s |")
    print("|---|---|---|")
    for name, seconds in median.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {1 / seconds:.1f} |")
    result = {"cache_vs_nifti": round(median["nifti"] / median["cache"], 2),
              "cache_vol_per_s": round(1 / median["cache"], 1),
              "cache_hash_vol_per_s": round(1 / median["cache+hash"], 1),
              "nifti_vol_per_s": round(1 / median["nifti"], 2)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

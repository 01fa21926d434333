"""Benchmark the data pipeline per CPU core: the persistent cache against the full `.nii.gz` + MONAI path.

Volumes: brain-like float32 182 x 218 x 182 images on the 1 mm MNI grid saved as .nii.gz (the shape and dtype of
the performance anchors, team notes performance.md section 3), preprocessed by the deterministic chain declared in
`--config` (default configs/data/synthetic.yaml: the default chain, 3 mm, 56 x 64 x 56; configs/data/ixi_1mm.yaml
gives the 1 mm 160 x 192 x 160 grid of SFCN, Peng et al. 2021). One thread (`torch.set_num_threads(1)`, no
workers), so every rate is per core. Paths timed, interleaved round by round, medians over rounds:

- nifti: the declared chain on the file (LoadVolumed -> ValidateT1d -> ... -> ResizeWithPadOrCropd), what every
  item costs without a cache;
- cache: `VolumeCache.read(entry)`, what a training item costs with `data.cache_dir` set (load, key and CRC-32
  checked, float32);
- cache unchecked: the same `torch.load(mmap=True)` + float32 conversion without the integrity check, to price it;
- cache+augment: the read plus the declared augmentation chain (what a training item really costs);
- cache+hash: `VolumeCache.load(path)`, the first access in a run (SHA-1 of the source, then the read).

Targets (the issue): cache >= 5x the nifti path and >= 40 volumes/s per core. The last printed line is one JSON
object: {"cache_speedup": nifti time / cache time, "cache_volumes_per_s_per_core", "nifti_volumes_per_s_per_core",
"cache_augment_volumes_per_s_per_core", "cache_hash_volumes_per_s_per_core", "check_cost": cache time / unchecked
time - 1, "targets_met", "config", "shape", "spacing_mm"}.
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
import yaml
from monai.data import MetaTensor
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from brainage.data.cache import VolumeCache  # noqa: E402
from brainage.data.preprocessing import Preprocessing  # noqa: E402
from brainage.data.transforms import MNI_1MM_AFFINE  # noqa: E402

TARGET_SPEEDUP, TARGET_PER_CORE = 5.0, 40.0


def _brain(shape: tuple[int, int, int] = (182, 218, 182), seed: int = 0) -> np.ndarray:
    """Smooth-textured ellipsoid with zero background (compresses about like a skull-stripped T1)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.7  # (X, Y, Z)
    texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5)
    return (inside * (500 + 2000 * texture)).astype(np.float32)


def _read_unchecked(entry: Path) -> MetaTensor:
    """What `VolumeCache.read` did before entries carried a checksum (CACHE_VERSION 1): load, convert to float32,
    wrap with the affine; nothing verified."""
    stored = torch.load(entry, map_location="cpu", weights_only=True, mmap=True)
    return MetaTensor(stored["image"].float(), affine=stored["affine"].clone())


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/data_pipeline.py --volumes 4 --rounds 3")
    parser.add_argument("--config", default="configs/data/synthetic.yaml",
                        help="YAML whose data.preprocessing / data.augmentation chains are timed "
                             "(default configs/data/synthetic.yaml, the default chain)")
    parser.add_argument("--volumes", type=int, default=4, help="distinct .nii.gz files (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds over all volumes (default 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = Path(args.config) if Path(args.config).is_file() else ROOT / args.config
    data = yaml.safe_load(config.read_text())  # a data section (configs/data/*.yaml)
    pre = Preprocessing(data.get("preprocessing"), data.get("augmentation"))
    transform, augmentation = pre.deterministic(), pre.augmentation()
    augmentation.set_random_state(seed=0)
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
        timings: dict[str, list[float]] = {"nifti": [], "cache": [], "cache unchecked": [], "cache+augment": [],
                                           "cache+hash": []}
        reads = {"cache": VolumeCache.read, "cache unchecked": _read_unchecked}
        for round_ in range(args.rounds):
            timings["nifti"].append(_time(lambda: [transform({"image": str(p)}) for p in paths]) / len(paths))
            for name in sorted(reads, reverse=round_ % 2 == 1):  # the checked and unchecked reads take turns first
                timings[name].append(_time(lambda read=reads[name]: [read(e) for e in entries]) / len(paths))
            timings["cache+augment"].append(_time(
                lambda: [augmentation({"image": VolumeCache.read(e).as_tensor()}) for e in entries]) / len(paths))
            timings["cache+hash"].append(_time(lambda: [cache.load(p, transform) for p in paths]) / len(paths))
    median = {name: statistics.median(values) for name, values in timings.items()}
    print(f"{args.volumes} volumes 182x218x182 f32 .nii.gz ({size_gz:.1f} MiB) -> {pre.shape} at {pre.spacing} mm "
          f"({config.name}); cache entry {size_entry:.2f} MiB (float16); 1 thread; median of {args.rounds} rounds")
    print("| path | ms / volume | volumes / s per core |")
    print("|---|---|---|")
    for name, seconds in median.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {1 / seconds:.1f} |")
    speedup, per_core = median["nifti"] / median["cache"], 1 / median["cache"]
    result = {"cache_speedup": round(speedup, 2), "cache_volumes_per_s_per_core": round(per_core, 1),
              "nifti_volumes_per_s_per_core": round(1 / median["nifti"], 2),
              "cache_augment_volumes_per_s_per_core": round(1 / median["cache+augment"], 1),
              "cache_hash_volumes_per_s_per_core": round(1 / median["cache+hash"], 1),
              "check_cost": round(median["cache"] / median["cache unchecked"] - 1, 3),
              "targets_met": bool(speedup >= TARGET_SPEEDUP and per_core >= TARGET_PER_CORE),
              "config": str(args.config), "shape": list(pre.shape), "spacing_mm": pre.spacing}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

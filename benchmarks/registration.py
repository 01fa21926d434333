"""Benchmark the nonlinear normalisation (`RegisterToTemplated`) per CPU core, side by side with the plain chain.

Scans: a synthetic cohort written by `brainage synth` (2 mm, with its nuisance: a smooth random deformation of a
few mm, rigid jitter, head size, bias, noise), the same files for both chains. One thread, no workers, so every
rate is per core. Chains timed interleaved scan by scan (medians):

- plain: configs/data/synthetic.yaml's deterministic chain on the .nii.gz (decode, validate, resample, z-score, crop);
- registered: configs/data/synthetic_registered.yaml's (the same plus RegisterToTemplated before resampling).

Quality, on the same scans: the correlation of each output with the MNI152 template on its grid, inside the
template's brain mask, for both chains. The last printed line is one JSON object: {"plain_s_per_scan",
"registered_s_per_scan", "cost_ratio": registered / plain, "correlation_plain", "correlation_registered" (medians),
"scans", "threads"}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _chain(config: str):
    from brainage.data.preprocessing import Preprocessing

    return Preprocessing(yaml.safe_load((ROOT / config).read_text())["preprocessing"]).deterministic()


def _template_correlation(image) -> float:
    """Correlation of a (1, X, Y, Z) output with the MNI152 template on its grid, inside the template's brain mask
    (the report's figure helpers: `brainage.report.figures`)."""
    from brainage.report.figures import brain_mask, template_on_grid

    shape, affine = tuple(image.shape[1:]), np.asarray(image.affine, dtype=np.float64)
    brain = brain_mask(shape, affine)
    return float(np.corrcoef(image[0].numpy()[brain], template_on_grid(shape, affine)[brain])[0, 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python benchmarks/registration.py --scans 8")
    parser.add_argument("--scans", type=int, default=8, help="synthetic scans (default 8)")
    parser.add_argument("--seed", type=int, default=7, help="cohort seed (default 7)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from brainage.data.synth import synthesize_cohort

    plain, registered = _chain("configs/data/synthetic.yaml"), _chain("configs/data/synthetic_registered.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        root = synthesize_cohort(Path(tmp) / "cohort", n=args.scans, seed=args.seed, spacing=2.0, workers=1)
        paths = sorted(str(p) for p in root.glob("sub-*/anat/*_T1w.nii.gz"))
        registered({"image": paths[0]})  # template grids and caches loaded once, outside the timing
        times: dict[str, list[float]] = {"plain": [], "registered": []}
        corr: dict[str, list[float]] = {"plain": [], "registered": []}
        for path in paths:
            for name, chain in (("plain", plain), ("registered", registered)):
                start = time.perf_counter()
                image = chain({"image": path})["image"]
                times[name].append(time.perf_counter() - start)
                corr[name].append(_template_correlation(image))
    result = {
        "plain_s_per_scan": statistics.median(times["plain"]),
        "registered_s_per_scan": statistics.median(times["registered"]),
        "cost_ratio": statistics.median(times["registered"]) / statistics.median(times["plain"]),
        "correlation_plain": statistics.median(corr["plain"]),
        "correlation_registered": statistics.median(corr["registered"]),
        "scans": len(paths),
        "threads": torch.get_num_threads(),
    }
    print(f"plain chain       {result['plain_s_per_scan']:.3f} s/scan, template correlation "
          f"{result['correlation_plain']:.3f}")
    print(f"registered chain  {result['registered_s_per_scan']:.3f} s/scan, template correlation "
          f"{result['correlation_registered']:.3f}  ({result['cost_ratio']:.1f}x the plain chain's time)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark batch prediction: end-to-end throughput over a folder of .nii.gz files vs model-only throughput.

Writes N brain-like T1 volumes at 2 mm on the MNI grid (91 x 109 x 91, float32, skull-stripped: zero background)
and a random-init model of the demo's size (configs/demo.yaml's net: ViT with ERMoE slots, arXiv 2511.10971, at
56 x 64 x 56 voxels of 3 mm), then measures
- model only: forward passes over the preprocessed tensors already in memory (best of 1 and all torch threads), and
- end to end: `brainage.predict.predict_iter` over the files, decoding + preprocessing in DataLoader workers
  (one torch thread each) while the main process runs the model, for a few worker/thread settings.
Each figure is the median of `--repeats` timed passes after one warm-up pass (page cache warm). The last printed line
is one JSON object with `end_to_end_vs_model_only` (best end-to-end / model-only scans/s; target >= 0.7) and
`scans_per_s` (best end-to-end scans/s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from brainage.data.preprocessing import Preprocessing
from brainage.model import build_net
from brainage.predict import load_model, predict_iter
from brainage.predict.stream import available_cpus
from brainage.training.card import checkpoint_metadata

ROOT = Path(__file__).resolve().parents[1]
MNI_2MM = (91, 109, 91)


def write_volumes(folder: Path, n: int) -> list[Path]:
    """N brain-like volumes at 2 mm: a noisy ellipsoid with a darker core (ventricles), zero outside."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]  # MNI152 2 mm origin
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in MNI_2MM], indexing="ij"))  # (3, X, Y, Z)
    radius = (grid**2).sum(0)  # (X, Y, Z)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        data = (radius < 0.75) * (100 + 10 * rng.standard_normal(MNI_2MM)) - (radius < 0.05 + 0.002 * i) * 40
        path = folder / f"sub-{i:03d}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
        paths.append(path)
    return paths


def demo_checkpoint(path: Path) -> Path:
    """A random-init checkpoint with configs/demo.yaml's net and preprocessing."""
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    net_cfg, data_cfg = config["model"]["net"], config["data"]
    net = build_net(net_cfg["class_path"].rsplit(".", 1)[1], net_cfg["init_args"])
    pre = Preprocessing(data_cfg["preprocessing"], augment=False)
    meta = checkpoint_metadata(net, pre.to_dict(), pre.contract(), 50.0, 15.0, {"age_mean": 50.0}, {}, None)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "brainage": meta}, path)
    return path


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python benchmarks/predict.py --n 48 --repeats 3")
    parser.add_argument("--n", type=int, default=48, help="number of .nii.gz files")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", default=None,
                        help="end-to-end settings to try as workers:threads,... (default: a few for this machine)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # MONAI deprecation notices (inherited by workers)
    cpus = available_cpus()
    settings = args.settings or ",".join(dict.fromkeys([f"1:{max(1, cpus - 1)}", f"{max(1, cpus - 1)}:1", f"{cpus}:1",
                                                        f"1:{cpus}"]))
    with tempfile.TemporaryDirectory(prefix="brainage-bench-") as tmp:
        tmp = Path(tmp)
        paths = write_volumes(tmp / "scans", args.n)
        model = load_model(demo_checkpoint(tmp / "demo.ckpt"))
        table = pd.DataFrame({"subject_id": [p.stem for p in paths], "session": "", "path": list(map(str, paths)),
                              "age": np.nan, "sex": None, "site": None})
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        model.transform({"image": str(paths[0])})  # warm-up
        start = time.perf_counter()
        images = [model.transform({"image": str(p)})["image"].as_tensor() for p in paths]  # (1, X, Y, Z) each
        decode_rate = args.n / (time.perf_counter() - start)
        sex = torch.full((args.batch_size,), float("nan"))

        def model_only(images: list[torch.Tensor] = images) -> None:
            with torch.inference_mode():
                for i in range(0, args.n, args.batch_size):
                    batch = torch.stack(images[i:i + args.batch_size])  # (b, 1, X, Y, Z)
                    model.net(batch, sex=sex[: len(batch)])

        rows = [("decode + preprocess only (1 process)", 0, 1, decode_rate)]
        for count in dict.fromkeys([1, cpus]):
            torch.set_num_threads(count)
            rows.append(("model only (preloaded tensors)", "-", count, args.n / median_time(model_only, args.repeats)))
        torch.set_num_threads(threads)
        model_rate = max(r[3] for r in rows[1:])
        images.clear()  # end to end starts from the files
        for setting in settings.split(","):
            workers, main_threads = (int(v) for v in setting.split(":"))
            torch.set_num_threads(main_threads)

            def end_to_end(workers: int = workers) -> None:
                results = list(predict_iter(model, table, batch_size=args.batch_size, num_workers=workers))
                if any(r.error for r in results):
                    raise RuntimeError(next(r.error for r in results if r.error))

            rows.append(("end to end (.nii.gz, predict_iter)", workers, main_threads,
                         args.n / median_time(end_to_end, args.repeats)))
            torch.set_num_threads(threads)
    best = max(rows[-len(settings.split(",")):], key=lambda r: r[3])
    print(f"{args.n} files of {MNI_2MM} float32 at 2 mm -> {model.preprocessing.shape} at "
          f"{model.preprocessing.spacing} mm; demo net; batch {args.batch_size}; {cpus} CPUs")
    print(f"| {'path':<36} | workers | threads | scans/s | vs model only |")
    print(f"|{'-' * 38}|---------|---------|---------|---------------|")
    for name, workers, main_threads, rate in rows:
        print(f"| {name:<36} | {workers!s:>7} | {main_threads:>7} | {rate:7.2f} | {rate / model_rate:13.2f} |")
    print(json.dumps({"end_to_end_vs_model_only": round(best[3] / model_rate, 3), "scans_per_s": round(best[3], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

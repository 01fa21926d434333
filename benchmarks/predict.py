"""Benchmark batch prediction: end-to-end throughput over a folder of .nii.gz files vs model-only throughput.

Two configurations (`--config production|demo|all`, default production):
- production: the shipped real-data model, configs/model/vit_ermoe_ixi_1p5mm.yaml with configs/data/ixi_1p5mm.yaml
  (ViT with ERMoE slots, arXiv 2511.10971: 112 x 136 x 112 voxels of 1.5 mm, 3332 tokens, d=384, depth 8, 8
  experts top-2; 34.6 M parameters), over 1 mm MNI inputs (182 x 218 x 182 float32, what `brainage prepare` writes);
- demo: configs/demo.yaml's tiny net (56 x 64 x 56 at 3 mm, 392 tokens, d=96, depth 4) over 2 mm MNI inputs
  (91 x 109 x 91 float32).
Inputs are brain-like (noisy ellipsoid with a darker core, zero background); the net is random-init (throughput
does not depend on the weights). For each configuration it measures
- decode + preprocess in one process with one thread, for the reference MONAI chain
  (`Preprocessing.deterministic()`) and for the chain prediction runs (`LoadedModel.transform`: the same with
  brainage.data.fastpath's faster inflate and resampling);
- model only: forward passes over the preprocessed tensors already in memory (1 and all torch threads);
- end to end: `brainage.predict.predict_iter` over the files, decoding in DataLoader workers (one torch thread
  each) while the main process runs the model, for a few workers:threads settings.
Each model-only and end-to-end figure is the median of `--repeats` passes timed in interleaved rounds (every case
once per round, after one warm-up each; page cache warm), so load changes on a shared machine hit all cases alike.
Ratios divide by the best model-only figure. The last printed line is one JSON object for the production configuration (or the only one run):
`end_to_end_vs_model_only` (best end-to-end / best model-only scans/s; target >= 0.7), `scans_per_s` (best end to
end) and `config`; with `--config all` the demo figures are added under `demo`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
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
from brainage.contracts.checkpoint import checkpoint_metadata, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchConfig:
    """One benchmarked model: where its net and preprocessing come from, and the inputs it is fed."""

    name: str
    net_yaml: str  # YAML holding model.net (class_path, init_args)
    data_yaml: str  # YAML holding data.spacing and data.shape
    in_shape: tuple[int, int, int]  # input grid on MNI152, RAS
    in_spacing: float  # mm
    n: int  # default number of files
    settings: Callable[[int], list[str]]  # CPUs -> default end-to-end workers:threads settings


CONFIGS = {
    "production": BenchConfig("production", "configs/model/vit_ermoe_ixi_1p5mm.yaml", "configs/data/ixi_1p5mm.yaml",
                              (182, 218, 182), 1.0, 12,
                              lambda cpus: [f"1:{cpus}", f"1:{max(1, cpus - 1)}", f"{cpus}:{cpus}"]),
    "demo": BenchConfig("demo", "configs/demo.yaml", "configs/demo.yaml", (91, 109, 91), 2.0, 48,
                        lambda cpus: [f"1:{max(1, cpus - 1)}", f"{max(1, cpus - 1)}:1", f"{cpus}:1", f"1:{cpus}"]),
}


def write_volumes(folder: Path, n: int, shape: tuple[int, int, int], spacing: float) -> list[Path]:
    """N brain-like float32 volumes on the MNI grid: a noisy ellipsoid with a darker core (ventricles), zero outside."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]  # MNI152 origin (FSL grids at 1 and 2 mm)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))
    radius = (grid**2).sum(0)  # (X, Y, Z)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        noise = rng.standard_normal(shape, dtype=np.float32)
        data = (radius < 0.75) * (100 + 10 * noise) - (radius < 0.05 + 0.002 * i) * 40
        path = folder / f"sub-{i:03d}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
        paths.append(path)
    return paths


def random_checkpoint(cfg: BenchConfig, path: Path) -> Path:
    """A random-init checkpoint with the configuration's net and preprocessing."""
    net_cfg = yaml.safe_load((ROOT / cfg.net_yaml).read_text())["model"]["net"]
    data_cfg = yaml.safe_load((ROOT / cfg.data_yaml).read_text())  # a data section
    net = build_net(net_cfg["class_path"].rsplit(".", 1)[1], net_cfg["init_args"])
    pre = Preprocessing(data_cfg["preprocessing"], augment=False)
    meta = checkpoint_metadata(net, pre.to_dict(), pre.contract(), 50.0, 15.0, {"age_mean": 50.0}, {}, None)
    return save_checkpoint(path, net.state_dict(), meta)


def interleaved_medians(cases: list[tuple[int, Callable[[], None], Callable[[], None]]], repeats: int) -> list[float]:
    """Median seconds of each (torch threads, fn, warm-up) case, timed in interleaved rounds.

    One warm-up each, then `repeats` rounds that time every case once, so a change in the machine's load (it is
    shared) hits all cases alike instead of whichever happened to run then.
    """
    for threads, _, warmup in cases:
        torch.set_num_threads(threads)
        warmup()
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for i, (threads, fn, _) in enumerate(cases):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def run_config(cfg: BenchConfig, n: int, batch_size: int, repeats: int, settings: list[str], cpus: int) -> dict:
    """Measure one configuration; returns its rows and headline figures."""
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="brainage-bench-") as tmp:
        tmp = Path(tmp)
        paths = write_volumes(tmp / "scans", n, cfg.in_shape, cfg.in_spacing)
        model = load_model(random_checkpoint(cfg, tmp / f"{cfg.name}.ckpt"))
        table = pd.DataFrame({"subject_id": [p.stem for p in paths], "session": "", "path": list(map(str, paths)),
                              "age": np.nan, "sex": None, "site": None})
        rows = []
        torch.set_num_threads(1)
        for label, chain in (("reference MONAI chain", model.preprocessing.deterministic()),
                             ("predict chain (fastpath)", model.transform)):
            chain({"image": str(paths[0])})  # warm-up
            start = time.perf_counter()
            images = [chain({"image": str(p)})["image"].as_tensor() for p in paths]  # (1, X, Y, Z) each
            rows.append((f"decode + preprocess only, {label}", 0, 1, n / (time.perf_counter() - start)))
        sex = torch.full((batch_size,), float("nan"))

        def model_only(stop: int = n) -> None:
            with torch.inference_mode():
                for i in range(0, stop, batch_size):
                    batch = torch.stack(images[i:i + batch_size])  # (b, 1, X, Y, Z)
                    model.net(batch, sex=sex[: len(batch)])

        def end_to_end(workers: int, part: pd.DataFrame = table) -> None:
            results = list(predict_iter(model, part, batch_size=batch_size, num_workers=workers))
            if any(r.error for r in results):
                raise RuntimeError(next(r.error for r in results if r.error))

        cases, labels = [], []
        for count in dict.fromkeys([1, cpus]):
            cases.append((count, model_only, lambda: model_only(batch_size)))
            labels.append(("model only (preloaded tensors)", "-", count))
        for setting in settings:
            workers, main_threads = (int(v) for v in setting.split(":"))
            warm = table.iloc[: batch_size * max(1, workers)]
            cases.append((main_threads, lambda w=workers: end_to_end(w), lambda w=workers, p=warm: end_to_end(w, p)))
            labels.append(("end to end (.nii.gz, predict_iter)", workers, main_threads))
        seconds = interleaved_medians(cases, repeats)
        torch.set_num_threads(threads)
        rows += [(*label, n / t) for label, t in zip(labels, seconds)]
        model_rate = max(r[3] for r in rows if r[0].startswith("model only"))
        best = max((r for r in rows if r[0].startswith("end to end")), key=lambda r: r[3])
        net = model.net.init_args
    return {"rows": rows, "model_rate": model_rate, "best": best, "n": n, "batch_size": batch_size,
            "out_shape": model.preprocessing.shape, "out_spacing": model.preprocessing.spacing,
            "net": f"{net.get('embed_dim')}-d x {net.get('depth')} blocks, img {list(net.get('img_size'))}"}


def print_table(cfg: BenchConfig, result: dict, cpus: int) -> None:
    print(f"\n[{cfg.name}] {result['n']} files of {cfg.in_shape} float32 at {cfg.in_spacing:g} mm -> "
          f"{result['out_shape']} at {result['out_spacing']:g} mm; net {result['net']}; batch {result['batch_size']}; "
          f"{cpus} CPUs")
    print(f"| {'path':<52} | workers | threads | scans/s | vs model only |")
    print(f"|{'-' * 54}|---------|---------|---------|---------------|")
    for name, workers, threads, rate in result["rows"]:
        print(f"| {name:<52} | {workers!s:>7} | {threads:>7} | {rate:7.2f} | {rate / result['model_rate']:13.2f} |")


def headline(result: dict) -> dict:
    return {"end_to_end_vs_model_only": round(result["best"][3] / result["model_rate"], 3),
            "scans_per_s": round(result["best"][3], 2), "model_only_scans_per_s": round(result["model_rate"], 2),
            "best_setting": f"{result['best'][1]}:{result['best'][2]}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python benchmarks/predict.py --config all")
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="production",
                        help="which model and inputs (default production; all = production and demo)")
    parser.add_argument("--n", type=int, default=None,
                        help="number of .nii.gz files (default: production 12, demo 48)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", default=None,
                        help="end-to-end settings to try as workers:threads,... (default: a few for this machine)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # MONAI deprecation notices (inherited by workers)
    cpus = available_cpus()
    names = list(CONFIGS) if args.config == "all" else [args.config]
    results = {}
    for name in names:
        cfg = CONFIGS[name]
        settings = args.settings.split(",") if args.settings else list(dict.fromkeys(cfg.settings(cpus)))
        results[name] = run_config(cfg, args.n or cfg.n, args.batch_size, args.repeats, settings, cpus)
        print_table(cfg, results[name], cpus)
    main_name = names[0]
    summary = {**headline(results[main_name]), "config": main_name}
    for name in names[1:]:
        summary[name] = headline(results[name])
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

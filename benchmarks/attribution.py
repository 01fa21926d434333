"""Attribution benchmark: do the region attribution methods find planted effects, atrophy included, on cohorts whose
planted regions differ?

For each cohort (``COHORTS``: atrophy only, intensity only, a mix, regions drawn at random; plus a separate tuning
cohort whose results are never reported as validation) the script
1. writes the cohort with ``brainage synth --effects ...`` (2 mm, ground_truth.json names the planted regions);
2. trains the demo model on it (``brainage fit --config configs/demo.yaml``, CPU) and keeps ``best.ckpt``;
3. attributes the held-out subjects (``test.csv``) with every method of ``brainage.attribution.methods``, saving the
   per-subject region contributions (``attribution/<method>.npz``);
4. ranks the regions (null-corrected statistic, bootstrap intervals; ``brainage.attribution.ranking``) and scores the
   ranking against the ground truth: precision@k with k = the number of planted regions, chance = k / regions.

Every stage writes its output atomically under ``--out/<cohort>/`` and is skipped when present, so the script resumes
after an interruption. Printed: one table of precision@k per cohort x method with chance, the effect-level check
(each planted effect occluded at once: does the model use it at all?), seconds per subject per method, and, as the
last line, one JSON object with the same numbers. Research use only.

Run (about 20-30 min per cohort on 2 CPU cores): ``python benchmarks/attribution.py --out /work/runs/attribution``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Cohort:
    """One benchmark cohort: planted effects (``brainage synth --effects`` or ``--random-effects``) and seeds."""

    name: str
    seed: int
    effects: str = ""
    random_effects: str = ""
    role: str = "validation"  # validation | tuning (tuning cohorts choose settings, they are not reported)


COHORTS = (
    Cohort("tune", 100, effects="atrophy:grow:lateral-ventricle,atrophy:putamen,intensity:precentral", role="tuning"),
    Cohort("atrophy", 11, effects="atrophy:hippocampus,atrophy:thalamusproper,atrophy:grow:lateral-ventricle"),
    Cohort("intensity", 12, effects="intensity:precuneus,intensity:superiortemporal,intensity:brighten:caudate"),
    Cohort("mix", 13, effects="atrophy:caudate,atrophy:amygdala,intensity:lateraloccipital*1.5,"
                              "intensity:rostralmiddlefrontal"),
    Cohort("random", 14, random_effects="atrophy=2,intensity=2"),
)


def _run(command: list[str], log: Path) -> None:
    """Run a subprocess with its output in ``log``; raise with the log's tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    if code != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(command[:4])} ... failed with exit code {code}; log {log}:\n{tail}")


def build_cohort(cohort: Cohort, folder: Path, subjects: int, workers: int) -> Path:
    """Write the cohort once (``folder/cohort``, marked complete by ``ground_truth.json``)."""
    out = folder / "cohort"
    if (out / "ground_truth.json").is_file():
        return out
    command = [sys.executable, "-m", "brainage.cli", "synth", "--n", str(subjects), "--out", str(out), "--seed",
               str(cohort.seed), "--spacing", "2", "--workers", str(workers), "--overwrite"]
    command += ["--effects", cohort.effects] if cohort.effects else ["--random-effects", cohort.random_effects,
                                                                     "--effect-seed", str(cohort.seed)]
    _run(command, folder / "logs" / "synth.log")
    return out


def train(folder: Path, cohort_root: Path, epochs: int) -> Path:
    """Train the demo model once; returns ``best.ckpt`` (``folder/train``)."""
    work = folder / "train"
    best = work / "checkpoints" / "best.ckpt"
    if best.is_file() and (work / "done.json").is_file():
        return best
    work.mkdir(parents=True, exist_ok=True)
    callbacks = work / "callbacks.yaml"
    callbacks.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(work / "checkpoints"), "filename": "best", "monitor": "val/mae", "mode": "min",
                       "enable_version_counter": False}}]}}))
    start = time.perf_counter()
    _run([sys.executable, "-m", "brainage.cli", "fit", "--config", str(ROOT / "configs" / "demo.yaml"),
          "--config", str(callbacks), "--data.root", str(cohort_root), "--trainer.max_epochs", str(epochs),
          "--trainer.default_root_dir", str(work), "--trainer.enable_progress_bar", "false",
          "--trainer.logger.init_args.tracking_uri", f"sqlite:///{work / 'mlflow.db'}"], folder / "logs" / "fit.log")
    (work / "done.json").write_text(json.dumps({"seconds": time.perf_counter() - start, "epochs": epochs}))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results folder (resumable)")
    parser.add_argument("--cohorts", nargs="+", default=[c.name for c in COHORTS if c.role == "validation"],
                        choices=[c.name for c in COHORTS], help="cohorts to run (default: the validation ones)")
    parser.add_argument("--subjects", type=int, default=400, help="subjects per cohort (default 400)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30, configs/demo.yaml)")
    parser.add_argument("--workers", type=int, default=2, help="synth processes (default 2)")
    parser.add_argument("--stage", choices=["train", "all"], default="all", help="stop after training, or run all")
    args = parser.parse_args(argv)
    for cohort in (c for c in COHORTS if c.name in args.cohorts):
        folder = args.out / cohort.name
        root = build_cohort(cohort, folder, args.subjects, args.workers)
        print(f"{cohort.name}: cohort {root}", flush=True)
        best = train(folder, root, args.epochs)
        print(f"{cohort.name}: model {best} ({json.loads((best.parents[1] / 'done.json').read_text())})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

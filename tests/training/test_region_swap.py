"""RegionSwap: whole atlas regions move between the scans of a batch at the configured rates; a real fit uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainage.attribution.mapping import RegionIndex
from brainage.contracts.checkpoint import read_checkpoint
from brainage.reference.atlas import load_default_atlas
from brainage.training.cli import BrainAgeCLI
from brainage.training.region_swap import RegionSwap
from tests.helpers.training import fit_args

# the registered chain's grid: MNI 3 mm, 56 x 64 x 56 (configs/data/synthetic_registered.yaml)
MNI_3MM = np.array([[3.0, 0, 0, -83], [0, 3.0, 0, -113], [0, 0, 3.0, -63], [0, 0, 0, 1]])


class _Labels:
    """An atlas stand-in whose resampling returns a fixed label volume."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def resample_to(self, shape, affine) -> np.ndarray:
        return self.labels


def _toy(prob: float, region_prob: float) -> tuple[RegionSwap, np.ndarray]:
    labels = np.zeros((6, 5, 4), dtype=np.int32)  # ids 3, 7, 9 (not contiguous), the rest background
    labels[:2], labels[2:4, :3], labels[4:, 2:] = 3, 7, 9
    swap = RegionSwap(prob, region_prob)
    swap.set_grid(labels.shape, np.eye(4), atlas=_Labels(labels))
    return swap, labels


def test_whole_regions_come_from_the_previous_scan_at_the_configured_rate():
    swap, labels = _toy(prob=0.5, region_prob=0.25)
    assert swap.num_regions == 3
    torch.manual_seed(0)
    b, draws, taken, scans_touched = 4, 1500, 0, 0
    for _ in range(draws):
        images = torch.randn(b, 1, *labels.shape)  # (b, 1, X, Y, Z) every voxel distinct
        out = swap(images)
        donor = images.roll(1, dims=0)
        assert torch.equal(out[:, 0][:, labels == 0], images[:, 0][:, labels == 0])  # background stays
        for i in range(b):
            touched = False
            for region in (3, 7, 9):
                mine = out[i, 0][labels == region]
                if torch.equal(mine, donor[i, 0][labels == region]):
                    taken += 1
                    touched = True
                else:  # never a partial region
                    assert torch.equal(mine, images[i, 0][labels == region])
            scans_touched += touched
    decisions = draws * b
    # each region of each scan is swapped with probability prob * region_prob = 0.125 (sd 0.003 over 18000)
    assert abs(taken / (3 * decisions) - 0.125) < 0.015
    # a scan is touched when picked and at least one of its 3 regions drawn: 0.5 * (1 - 0.75 ** 3) = 0.289
    assert abs(scans_touched / decisions - 0.5 * (1 - 0.75**3)) < 0.03


def test_edges_and_refusals():
    swap, labels = _toy(prob=1.0, region_prob=1.0)
    images = torch.randn(3, 1, *labels.shape)
    out = swap(images)
    assert torch.equal(out[:, 0][:, labels > 0], images.roll(1, dims=0)[:, 0][:, labels > 0])
    assert torch.equal(out[:, 0][:, labels == 0], images[:, 0][:, labels == 0])
    assert torch.equal(swap(images[:1]), images[:1])  # one scan: nothing to swap with
    off, _ = _toy(prob=0.0, region_prob=1.0)
    assert torch.equal(off(images), images)
    with pytest.raises(ValueError, match="grid"):
        swap(torch.randn(2, 1, 6, 5, 5))
    with pytest.raises(RuntimeError, match="set_grid"):
        RegionSwap()(images)
    for bad in ({"prob": 1.5}, {"region_prob": -0.1}):
        with pytest.raises(ValueError, match="must be in"):
            RegionSwap(**bad)
    with pytest.raises(ValueError, match="no atlas region"):
        RegionSwap().set_grid((4, 4, 4), np.eye(4), atlas=_Labels(np.zeros((4, 4, 4), dtype=np.int32)))


def test_default_atlas_regions_are_the_regions_the_report_ranks():
    """On the registered grid the swap's regions are exactly the report's region rows (one for one)."""
    swap = RegionSwap()
    swap.set_grid((56, 64, 56), MNI_3MM)
    atlas = load_default_atlas()
    rows = RegionIndex.from_names(atlas.names).columns(atlas.resample_to((56, 64, 56), MNI_3MM))  # -1 = none
    ours = swap.regions.numpy()
    assert swap.num_regions == len(np.unique(rows[rows >= 0])) >= 80
    assert np.array_equal(ours == 0, rows < 0)
    pairs = np.unique(np.stack([ours[ours > 0], rows[ours > 0]]), axis=1)  # (2, distinct pairs)
    assert pairs.shape[1] == swap.num_regions  # a bijection between our regions and the report's rows


@pytest.mark.slow
def test_fit_swaps_training_inputs_only_and_writes_a_safe_checkpoint(cohort12, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cli = BrainAgeCLI(args=[*fit_args(cohort12, tmp_path, uri, epochs=2),
                            "--model.region_swap", "brainage.training.region_swap.RegionSwap",
                            "--model.region_swap.init_args.prob", "1.0",
                            "--model.region_swap.init_args.region_prob", "0.5"], run=False)
    seen: list[tuple[bool, torch.Tensor]] = []  # (training mode, input batch (b, 1, X, Y, Z))
    cli.model.net.register_forward_pre_hook(lambda net, args: seen.append((net.training, args[0].detach().clone())))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    swap = cli.model.region_swap
    assert swap.regions is not None and swap.num_regions >= 40  # placed on the 6 mm grid by the datamodule's affine
    stored = [cli.datamodule.datasets[split][i]["image"] for split in ("train", "val")  # augmentation is off
              for i in range(len(cli.datamodule.datasets[split]))]

    def is_stored(scan: torch.Tensor) -> bool:
        return any(torch.equal(scan, image) for image in stored)

    trained = [scan for training, batch in seen if training for scan in batch]
    evaluated = [scan for training, batch in seen if not training for scan in batch]
    assert trained and evaluated and all(is_stored(scan) for scan in evaluated)  # validation sees the scans as stored
    assert sum(not is_stored(scan) for scan in trained) >= len(trained) // 2  # training sees swapped scans
    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "best.ckpt")  # weights_only: plain types only
    assert checkpoint.raw["hyper_parameters"]["region_swap"] == {"prob": 1.0, "region_prob": 0.5}

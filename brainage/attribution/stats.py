"""Statistics on region x expert routing tables: per-expert enrichment and expert-region mutual information.

- Enrichment: for each (region, expert) cell, the log odds ratio of "token routed to expert e" inside the region
  against outside it (Haldane-Anscombe +0.5 correction), with a Pearson chi-square test (1 dof) on the 2x2 table in
  token units and Benjamini-Hochberg FDR over all cells. Tokens of one scan are spatially correlated, so p-values are
  descriptive ranking aids, not confirmatory tests (our choice; documented in the report).
- Mutual information I(expert; region) in bits of the joint region x expert distribution, compared with a baseline
  that permutes the top-1 expert labels across tokens within each subject (keeps each subject's expert load and the
  atlas geometry; destroys only the expert-region coupling). Specialisation as in ERMoE (arXiv 2511.10971) and the
  MoE routing theory of Su & Liu shows as MI well above the baseline.

Letter legend: n tokens, e experts, r atlas regions, b shuffles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from brainage.attribution.mapping import RegionIndex, one_hot

__all__ = ["mutual_information", "MutualInformationTest", "shuffled_mutual_information", "enrichment", "top_regions"]


def mutual_information(counts: np.ndarray) -> float:
    """I(region; expert) in bits of the joint distribution proportional to ``counts`` (r, e)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("mutual information of an empty region x expert table")
    joint = counts / total  # (r, e)
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)  # (r, 1) * (1, e) -> (r, e)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log2(joint[nz] / outer[nz])))


@dataclass(frozen=True)
class MutualInformationTest:
    observed: float  # bits
    shuffled: np.ndarray  # (b,) bits under within-subject label shuffles
    p_value: float  # (1 + #{shuffled >= observed}) / (1 + b)

    @property
    def shuffled_mean(self) -> float:
        return float(self.shuffled.mean())

    @property
    def shuffled_std(self) -> float:
        return float(self.shuffled.std())

    @property
    def ratio(self) -> float:
        """Observed MI over the mean shuffled MI (inf when the baseline is 0)."""
        return float(self.observed / self.shuffled_mean) if self.shuffled_mean > 0 else float("inf")


def shuffled_mutual_information(
    token_regions: Sequence[np.ndarray],
    top1: Sequence[np.ndarray],
    num_experts: int,
    n_shuffles: int = 200,
    seed: int = 0,
) -> MutualInformationTest:
    """Observed top-1 expert-region MI against within-subject permutations of the expert labels.

    Args:
        token_regions: per subject, region voxel counts of its tokens (n, r).
        top1: per subject, the top-1 expert of each token (n,).
        num_experts: e.
        n_shuffles: b permutations (>= 1).
        seed: random seed of the permutations.
    """
    if len(token_regions) != len(top1) or not top1:
        raise ValueError(f"need one token-region matrix per top-1 vector, got {len(token_regions)} and {len(top1)}")
    if n_shuffles < 1:
        raise ValueError(f"n_shuffles must be >= 1, got {n_shuffles}")
    rng = np.random.default_rng(seed)

    def table(labels: Sequence[np.ndarray]) -> np.ndarray:
        return sum(tr.T @ one_hot(t, num_experts) for tr, t in zip(token_regions, labels))  # sum_s (r, n)@(n, e)

    observed = mutual_information(table(top1))
    shuffled = np.array([mutual_information(table([rng.permutation(t) for t in top1])) for _ in range(n_shuffles)])
    p_value = (1 + int(np.sum(shuffled >= observed))) / (1 + n_shuffles)
    return MutualInformationTest(observed, shuffled, p_value)


def enrichment(counts: np.ndarray, regions: RegionIndex, voxels_per_token: float) -> pd.DataFrame:
    """Per (region, expert) enrichment of a region x expert count table (r, e) in voxels.

    Returns one row per cell of every region with voxels: label, region, expert, count (voxels), share_in_region,
    share_overall, log_odds, chi2, p_value, q_value (BH FDR over all cells).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape[0] != len(regions):
        raise ValueError(f"table has {counts.shape[0]} rows, the region index {len(regions)}")
    if voxels_per_token <= 0:
        raise ValueError(f"voxels_per_token must be positive, got {voxels_per_token}")
    keep = counts.sum(axis=1) > 0
    a = counts[keep] / voxels_per_token  # (r', e) token units
    row = a.sum(axis=1, keepdims=True)  # (r', 1)
    col = a.sum(axis=0, keepdims=True)  # (1, e)
    total = a.sum()
    b, c = row - a, col - a
    d = total - a - b - c
    log_odds = np.log((a + 0.5) * (d + 0.5) / ((b + 0.5) * (c + 0.5)))
    denominator = row * (total - row) * col * (total - col)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(denominator > 0, total * (a * d - b * c) ** 2 / denominator, 0.0)
    p_value = sps.chi2.sf(chi2, df=1)
    q_value = sps.false_discovery_control(p_value.ravel(), method="bh").reshape(p_value.shape)
    r_idx, e_idx = np.nonzero(np.ones_like(a, dtype=bool))  # row-major (r', e) cell order
    return pd.DataFrame(
        {
            "label": np.asarray(regions.labels)[keep][r_idx],
            "region": np.asarray(regions.names)[keep][r_idx],
            "expert": e_idx,
            "count": counts[keep][r_idx, e_idx],
            "share_in_region": (a / row)[r_idx, e_idx],
            "share_overall": np.broadcast_to(col / total, a.shape)[r_idx, e_idx],
            "log_odds": log_odds[r_idx, e_idx],
            "chi2": chi2[r_idx, e_idx],
            "p_value": p_value[r_idx, e_idx],
            "q_value": q_value[r_idx, e_idx],
        }
    )


def top_regions(enriched: pd.DataFrame, expert: int, n: int = 5, q_max: float = 0.05) -> pd.DataFrame:
    """The ``n`` regions most enriched for ``expert``: positive log odds with q <= q_max, by decreasing log odds."""
    rows = enriched[(enriched["expert"] == expert) & (enriched["log_odds"] > 0) & (enriched["q_value"] <= q_max)]
    return rows.sort_values("log_odds", ascending=False).head(n)

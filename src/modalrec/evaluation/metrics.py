"""Ranking metrics from integer ranks, and ranks from scores with pessimistic ties.

Ranks are 1-based: rank 1 means the target scored above every other candidate. Evaluation is
single-target next-item prediction, so Recall@K equals HR@K (one relevant item per event); both
names are reported so numbers can be compared with papers that use either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

METRIC_DEFINITIONS: dict[str, str] = {
    "rank": "1 + number of candidate items other than the target whose score is >= the target's "
    "score (pessimistic ties: a constant-score model gets the worst rank)",
    "hr@k": "fraction of events with rank <= k",
    "recall@k": "equal to hr@k: single-target next-item evaluation has one relevant item per event",
    "ndcg@k": "mean of 1 / log2(rank + 1) if rank <= k else 0 (ideal DCG is 1 with one relevant item)",
    "mrr@k": "mean of 1 / rank if rank <= k else 0",
    "mrr": "mean of 1 / rank over all candidates (no cutoff)",
}


def _check_ranks(ranks: torch.Tensor) -> torch.Tensor:
    if ranks.dim() != 1:
        raise ValueError(f"ranks must be 1-D, got shape {tuple(ranks.shape)}")
    if ranks.numel() and int(ranks.min()) < 1:
        raise ValueError("ranks are 1-based; got a rank < 1")
    return ranks


def _mean(values: torch.Tensor) -> torch.Tensor:
    if values.numel() == 0:
        raise ValueError("cannot average a metric over zero events")
    return values.mean()


def hit_rate(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """0-dim float64: fraction of ranks <= k. ranks: [E] int64, 1-based."""
    ranks = _check_ranks(ranks)
    return _mean((ranks <= k).double())  # [E] -> []


recall = hit_rate  # single target per event: Recall@K == HR@K


def ndcg(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """0-dim float64: mean of 1/log2(rank+1) for rank <= k, else 0."""
    ranks = _check_ranks(ranks)
    gain = 1.0 / torch.log2(ranks.double() + 1.0)  # [E]
    return _mean(torch.where(ranks <= k, gain, torch.zeros_like(gain)))


def mrr(ranks: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """0-dim float64: mean reciprocal rank; with `k`, ranks beyond k count as 0 (MRR@K)."""
    ranks = _check_ranks(ranks)
    rr = 1.0 / ranks.double()  # [E]
    if k is not None:
        rr = torch.where(ranks <= k, rr, torch.zeros_like(rr))
    return _mean(rr)


def metric_names(ks: Sequence[int]) -> list[str]:
    """Keys produced by `compute_metrics`, in report order."""
    names: list[str] = []
    for k in ks:
        names += [f"hr@{k}", f"recall@{k}", f"ndcg@{k}", f"mrr@{k}"]
    return names + ["mrr"]


def compute_metrics(ranks: torch.Tensor, ks: Sequence[int]) -> dict[str, float | None]:
    """All metrics for `ranks` ([E] int64). With zero events every value is None (never NaN)."""
    ranks = _check_ranks(torch.as_tensor(ranks, dtype=torch.int64).reshape(-1))
    if ranks.numel() == 0:
        return {name: None for name in metric_names(ks)}
    out: dict[str, float | None] = {}
    for k in ks:
        hr = float(hit_rate(ranks, k))
        out[f"hr@{k}"] = hr
        out[f"recall@{k}"] = hr
        out[f"ndcg@{k}"] = float(ndcg(ranks, k))
        out[f"mrr@{k}"] = float(mrr(ranks, k))
    out["mrr"] = float(mrr(ranks))
    for name, value in out.items():  # guard: a metric is never NaN / inf
        if value is not None and not math.isfinite(value):
            raise AssertionError(f"metric {name} is not finite: {value}")
    return out


def ranks_from_scores(
    scores: torch.Tensor, targets: torch.Tensor, candidate_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """[B] int64 pessimistic ranks: 1 + #(candidate columns j != target with score_j >= score_target).

    scores: [B, N] float; targets: [B] int64 column indices; candidate_mask: [B, N] bool (True =
    candidate) or None (every column is a candidate). The target is ranked whether or not it is
    marked as a candidate. NaN anywhere in `scores` raises ValueError naming the offending rows.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, N], got shape {tuple(scores.shape)}")
    b, n = scores.shape
    targets = targets.to(scores.device, torch.int64).reshape(-1)
    if targets.numel() != b:
        raise ValueError(f"{targets.numel()} targets for {b} score rows")
    if b and (int(targets.min()) < 0 or int(targets.max()) >= n):
        raise ValueError(f"target index out of range [0, {n})")
    check_no_nan(scores)
    rows = torch.arange(b, device=scores.device)  # [B]
    target_score = scores[rows, targets].unsqueeze(1)  # [B, 1]
    ge = scores >= target_score  # [B, N] bool
    if candidate_mask is not None:
        if candidate_mask.shape != scores.shape:
            raise ValueError(f"candidate_mask shape {tuple(candidate_mask.shape)} != scores {(b, n)}")
        ge &= candidate_mask.to(scores.device, torch.bool)
    ge[rows, targets] = False  # the target never outranks itself
    return ge.sum(dim=1, dtype=torch.int64) + 1  # [B]


def check_no_nan(scores: torch.Tensor, where: str = "this batch") -> None:
    """Raise ValueError if `scores` ([B, N]) has a NaN, naming the rows of `where` that have one."""
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        bad = torch.isnan(scores).any(dim=1).nonzero().flatten().tolist()  # [R]
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(f"scores contain NaN in {len(bad)} row(s) of {where}: rows [{shown}]")

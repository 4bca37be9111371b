"""The metric table (name, definition, direction) and ranking metrics from integer ranks.

Ranks are 1-based: rank 1 means the target scored above every other candidate. Evaluation is
single-target next-item prediction, so Recall@K equals HR@K (one relevant item per event); both
names are reported so numbers can be compared with papers that use either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


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


@dataclass(frozen=True)
class Metric:
    """One row of the metric table: a name ("@k": one value per cut-off k), its definition, and whether
    a higher value is better (`direction` "max" / "min", what early stopping on it should use)."""

    name: str
    definition: str
    higher_is_better: bool = True
    compute: Callable[[torch.Tensor, int], torch.Tensor] | None = None  # (ranks [E], k) -> 0-dim; None: not from ranks

    @property
    def direction(self) -> str:
        return "max" if self.higher_is_better else "min"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("rank", "1 + number of candidate items other than the target whose score is >= the target's score "
           "(pessimistic ties: a constant-score model gets the worst rank); candidates are items 1..n_items "
           "(PAD never), less the excluded history", higher_is_better=False),
    Metric("hr@k", "fraction of events with rank <= k", compute=hit_rate),
    Metric("recall@k", "equal to hr@k: single-target next-item evaluation has one relevant item per event",
           compute=recall),
    Metric("ndcg@k", "mean of 1 / log2(rank + 1) if rank <= k else 0 (ideal DCG is 1 with one relevant item)",
           compute=ndcg),
    Metric("mrr@k", "mean of 1 / rank if rank <= k else 0", compute=mrr),
    Metric("mrr", "mean of 1 / rank over all candidates (no cutoff)", compute=lambda ranks, k: mrr(ranks)),
    Metric("sampled_<metric>", "the metric with the target ranked against sampled negatives only (never instead "
           "of full ranking)"),
    Metric("ap", "average precision of positives vs sampled negatives, pooled over the group (streaming "
           "evaluation; ap_<negative kind>)"),
    Metric("auc", "ROC AUC of positives vs sampled negatives (ties count 1/2), pooled over the group (streaming "
           "evaluation; auc_<negative kind>)"),
)}


def metric(name: str) -> Metric:
    """The table row of a reported name: "ndcg@10" -> ndcg@k, "sampled_hr@5" -> hr@k, "ap_random" -> ap."""
    base = name.removeprefix("sampled_")
    key = f"{base.split('@')[0]}@k" if "@" in base else base.split("_")[0]
    if key not in METRICS:
        raise KeyError(f"unknown metric {name!r}; the table has {sorted(METRICS)}")
    return METRICS[key]


def definitions() -> dict[str, str]:
    """{name: definition} of every metric (what reports and manifests record)."""
    return {m.name: m.definition for m in METRICS.values()}


def _from_ranks(ks: Sequence[int]) -> list[tuple[str, Metric, int]]:
    """(reported name, table row, k) of every metric computed from ranks, in report order."""
    at_k = [m for m in METRICS.values() if m.compute is not None and m.name.endswith("@k")]
    rest = [m for m in METRICS.values() if m.compute is not None and not m.name.endswith("@k")]
    return [(m.name[:-1] + str(k), m, k) for k in ks for m in at_k] + [(m.name, m, 0) for m in rest]


def metric_names(ks: Sequence[int]) -> list[str]:
    """Keys produced by `compute_metrics`, in report order."""
    return [name for name, _, _ in _from_ranks(ks)]


def compute_metrics(ranks: torch.Tensor, ks: Sequence[int]) -> dict[str, float | None]:
    """Every rank metric of the table for `ranks` ([E] int64). With zero events every value is None (never NaN)."""
    ranks = _check_ranks(torch.as_tensor(ranks, dtype=torch.int64).reshape(-1))
    if ranks.numel() == 0:
        return {name: None for name in metric_names(ks)}
    out: dict[str, float | None] = {name: float(m.compute(ranks, k)) for name, m, k in _from_ranks(ks)}
    for name, value in out.items():  # guard: a metric is never NaN / inf
        if value is not None and not math.isfinite(value):
            raise AssertionError(f"metric {name} is not finite: {value}")
    return out

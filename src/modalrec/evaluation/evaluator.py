"""Full-ranking evaluator: every item 1..n_items is a candidate, scored in bounded chunks on CPU or GPU.

Protocol (DESIGN.md, protocol rules):
- Candidates are all items 1..n_items; column 0 (PAD) never is.
- exclude_seen=True: history items other than the target are removed from candidates. The history is
  the event's FULL history in the EvalSet (not only the max_len window the model sees); the target is
  always a candidate, even when the user consumed it before (so repeat purchases are still ranked).
- Ties are pessimistic: rank = 1 + #(candidates other than the target with score >= target score), so
  a constant-score model gets the worst rank. NaN scores raise ValueError naming the batch.
- Metrics (HR/Recall@K, NDCG@K, MRR@K, MRR) overall and per group (warm / cold_item / cold_user).

Ranking is vectorised per chunk: count candidates scoring >= the target over the whole row, then
subtract the excluded history items that did (gathered from a de-duplicated, target-free
(event, item) list precomputed once). No per-user Python loop, and model scores are never modified.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from modalrec.data.sequences import eval_batch
from modalrec.data.splits import GROUP_DEFINITIONS, EvalSet
from modalrec.evaluation.metrics import METRIC_DEFINITIONS, check_no_nan, compute_metrics
from modalrec.evaluation.report import Report
from modalrec.evaluation.sampled import SampledConfig, draw_negatives, sampled_ranks
from modalrec.types import Scorer

log = logging.getLogger(__name__)

EXCLUDE_SEEN_RULE = ("exclude_seen: history items other than the target are removed from candidates; a repeat target "
                     "(already in the history) stays rankable and is reported in the repeat group")
NO_EXCLUDE_RULE = "exclude_seen=False: every item 1..n_items is a candidate, history included"


class Evaluator:
    """Rank each EvalSet event's target against the whole catalogue; `.run(model) -> Report`.

    A score block [B, n_items + 1] never exceeds `score_budget` floats: B = score_budget // (n_items + 1)
    (capped by `batch_size` when given; at least 1). `sampled` adds sampled-negative metrics
    (prefixed "sampled_") on top of, never instead of, the full-ranking ones.
    """

    def __init__(
        self,
        evalset: EvalSet,
        n_items: int,
        ks: Sequence[int] = (5, 10, 20),
        exclude_seen: bool = True,
        max_len: int = 50,
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
        score_budget: int = 2**24,
        sampled: SampledConfig | None = None,
    ) -> None:
        self.evalset = evalset
        self.n_items = int(n_items)
        self.ks = tuple(sorted({int(k) for k in ks}))
        if not self.ks or self.ks[0] < 1:
            raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
        self.exclude_seen = bool(exclude_seen)
        self.max_len = int(max_len)
        self.device = torch.device(device)
        self.score_budget = int(score_budget)
        self.sampled = sampled
        _validate(evalset, self.n_items)
        rows_in_budget = max(1, self.score_budget // (self.n_items + 1))
        if self.score_budget < self.n_items + 1:
            log.warning(
                "score_budget %d < one row (%d items); scoring one event at a time",
                self.score_budget,
                self.n_items + 1,
            )
        self.batch_size = min(rows_in_budget, batch_size) if batch_size else rows_in_budget
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._mask_offsets, self._mask_rows, self._mask_items = self._excluded_pairs()
        self._negatives: np.ndarray | None = None  # drawn lazily, then shared by every run

    def _excluded_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR of (event, item) pairs removed from candidates: unique history items minus the target."""
        es, n_events = self.evalset, len(self.evalset)
        if not self.exclude_seen or len(es.hist_items) == 0:
            return np.zeros(n_events + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        event = np.repeat(np.arange(n_events, dtype=np.int64), np.diff(es.hist_offsets))  # [H]
        items = es.hist_items.astype(np.int64)
        keep = (items != es.target[event]) & (items != 0)
        key = np.unique(event[keep] * (self.n_items + 1) + items[keep])  # sorted by (event, item), deduped
        rows, cols = key // (self.n_items + 1), key % (self.n_items + 1)
        offsets = np.zeros(n_events + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n_events), out=offsets[1:])
        return offsets, rows, cols

    def negatives(self) -> np.ndarray | None:
        """[E, n] sampled negatives (-1 = none) when `sampled` is set; drawn once and cached."""
        if self.sampled is not None and self._negatives is None:
            self._negatives = draw_negatives(
                len(self.evalset),
                self.n_items,
                self.evalset.target,
                self._mask_offsets,
                self._mask_items,
                self.sampled,
            )
        return self._negatives

    def run(self, model: Scorer, name: str = "test", keep_ranks: bool = True) -> Report:
        """Score every event with `model.score(batch)` ([B, n_items + 1]) and build the Report."""
        es, n_events, dev = self.evalset, len(self.evalset), self.device
        negatives = self.negatives()
        ranks = torch.empty(n_events, dtype=torch.int64)  # [E]
        s_ranks = torch.empty(n_events, dtype=torch.int64) if negatives is not None else None
        targets = torch.from_numpy(es.target.astype(np.int64)).to(dev)  # [E]
        mask_rows = torch.from_numpy(self._mask_rows).to(dev)  # [M] global event index
        mask_items = torch.from_numpy(self._mask_items).to(dev)  # [M]
        is_module = isinstance(model, nn.Module)
        was_training = bool(model.training) if is_module else False
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        start = time.perf_counter()
        n_batches = 0
        try:
            if is_module:
                model.eval()
            with torch.no_grad():
                for lo in range(0, n_events, self.batch_size):
                    hi = min(n_events, lo + self.batch_size)
                    batch = eval_batch(es, np.arange(lo, hi), self.max_len).to(dev)
                    scores = model.score(batch)  # [B, n_items + 1]
                    where = f"batch {n_batches} (events {lo}..{hi - 1}) of evaluation '{name}'"
                    self._check_scores(scores, hi - lo, where)
                    a, z = int(self._mask_offsets[lo]), int(self._mask_offsets[hi])
                    r, t_score = _rank_chunk(scores, targets[lo:hi], mask_rows[a:z] - lo, mask_items[a:z])
                    ranks[lo:hi] = r.cpu()
                    if s_ranks is not None and negatives is not None:
                        neg = torch.from_numpy(negatives[lo:hi]).to(dev)  # [B, n]
                        s_ranks[lo:hi] = sampled_ranks(scores, t_score, neg).cpu()
                    n_batches += 1
        finally:
            if is_module and was_training:
                model.train()
        wall = time.perf_counter() - start
        return self._report(model, name, ranks, s_ranks, wall, n_batches, keep_ranks)

    def _check_scores(self, scores: torch.Tensor, rows: int, where: str) -> None:
        if tuple(scores.shape) != (rows, self.n_items + 1):
            raise ValueError(
                f"model.score returned shape {tuple(scores.shape)} in {where}; expected "
                f"({rows}, {self.n_items + 1}) = (batch, n_items + 1 with column 0 = PAD)"
            )
        # Cheap pre-check: a sum is NaN whenever any entry is; only then pay for the exact per-row scan.
        if scores.is_floating_point() and bool(torch.isnan(scores.sum())):
            check_no_nan(scores, where)

    def _report(
        self,
        model: object,
        name: str,
        ranks: torch.Tensor,
        s_ranks: torch.Tensor | None,
        wall: float,
        n_batches: int,
        keep_ranks: bool,
    ) -> Report:
        masks = self.evalset.group_masks()
        overall = compute_metrics(ranks, self.ks)
        groups = {g: compute_metrics(ranks[torch.from_numpy(m)], self.ks) for g, m in masks.items()}
        if s_ranks is not None:
            overall.update(_prefixed(compute_metrics(s_ranks, self.ks)))
            for g, m in masks.items():
                groups[g].update(_prefixed(compute_metrics(s_ranks[torch.from_numpy(m)], self.ks)))
        counts = {"overall": len(self.evalset), **{g: int(m.sum()) for g, m in masks.items()}}
        meta: dict[str, object] = {
            "name": name,
            "model": type(model).__name__,
            "protocol": "full ranking over items 1..n_items (PAD excluded)",
            "n_items": self.n_items,
            "n_events": len(self.evalset),
            "ks": list(self.ks),
            "exclude_seen": self.exclude_seen,
            "candidates": EXCLUDE_SEEN_RULE if self.exclude_seen else NO_EXCLUDE_RULE,
            "ties": "pessimistic",
            "metric_definitions": METRIC_DEFINITIONS,
            "groups": GROUP_DEFINITIONS,
            "max_len": self.max_len,
            "device": str(self.device),
            "batch_size": self.batch_size,
            "score_budget": self.score_budget,
            "n_batches": n_batches,
            "wall_time_s": round(wall, 4),
            "events_per_s": round(len(self.evalset) / wall, 1) if wall > 0 else None,
        }
        if self.device.type == "cuda":
            meta["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
        if self.sampled is not None:
            meta["sampled"] = self.sampled.describe()
        return Report(
            overall=overall,
            groups=groups,
            counts=counts,
            meta=meta,
            ranks=ranks.numpy() if keep_ranks else None,
        )


def _rank_chunk(
    scores: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pessimistic ranks for one chunk. scores [B, N + 1]; targets [B]; (rows, items) [M]: excluded
    candidates (unique per row, never the target). Returns ([B] int64 ranks, [B, 1] target scores)."""
    t_score = scores.gather(1, targets.unsqueeze(1))  # [B, 1]
    # Candidates 1..N scoring >= the target; the target itself is counted once (s >= s for non-NaN).
    ge = (scores[:, 1:] >= t_score).sum(dim=1, dtype=torch.int32)  # [B]
    if rows.numel():
        hit = (scores[rows, items] >= t_score[rows, 0]).to(torch.int32)  # [M] excluded items that counted
        ge = ge - torch.zeros_like(ge).index_add_(0, rows, hit)  # [B]
    return ge.to(torch.int64), t_score


def _prefixed(metrics: dict[str, float | None]) -> dict[str, float | None]:
    return {f"sampled_{k}": v for k, v in metrics.items()}


def _validate(es: EvalSet, n_items: int) -> None:
    """Targets must be real items and histories valid item indices for this catalogue."""
    if len(es) and (int(es.target.min()) < 1 or int(es.target.max()) > n_items):
        raise ValueError(
            f"EvalSet targets must lie in 1..{n_items}; got {int(es.target.min())}.."
            f"{int(es.target.max())} (field 'target')"
        )
    if len(es.hist_items) and (int(es.hist_items.min()) < 0 or int(es.hist_items.max()) > n_items):
        raise ValueError(f"EvalSet history items must lie in 0..{n_items} (field 'hist_items')")
    if len(es.hist_offsets) != len(es) + 1:
        raise ValueError("EvalSet hist_offsets must have len(events) + 1 entries (field 'hist_offsets')")

"""Streaming evaluation of stateful models (`Recommender.stateful`, MM-TGN: `reset_state`, `observe`,
`state_dict_memory` / `load_memory`, `context`, `pair_scores`, `score`).

Why a streaming evaluator: the Evaluator ranks EvalSet events in user order with a stateless
`score(SeqBatch)`, but a temporal graph model must see the evaluation events in time order, be scored
on each batch *before* the batch updates its memory, and have its memory saved / restored around
validation. Ranks come from the shared ranking core (`ranking.rank_block`), metrics from the shared
`compute_metrics`, and the result is a `Report`, so numbers compare directly with the Evaluator's.

Per evaluation batch: (1) one node context (pending messages applied) from earlier batches only;
(2) link-prediction scores for the event's item vs random and historical negatives -> AP / AUC;
(3) full-ranking scores over all items with PAD and the user's earlier items masked -> ranks;
(4) `observe(batch)`. Report: overall, and groups transductive (user and item seen in training),
inductive (new user or new item), and the Evaluator's groups (`EventStream.group_masks`: warm,
cold_item, cold_user, repeat / novel, history buckets). AP / AUC are pooled over all (positive,
negative) pairs of a group (not averaged per batch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from modalrec.data.events import EventStream, random_negatives
from modalrec.evaluation.metrics import compute_metrics, definitions
from modalrec.evaluation.ranking import exclusion_pairs, rank_block
from modalrec.evaluation.report import Report
from modalrec.seeding import torch_generator

log = logging.getLogger(__name__)


def average_precision(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """AP of positives vs negatives: sum over distinct thresholds of (R_n - R_{n-1}) * P_n (as sklearn)."""
    scores = torch.cat([pos.reshape(-1), neg.reshape(-1)]).double()  # [P + N]
    labels = torch.cat([torch.ones(pos.numel()), torch.zeros(neg.numel())]).double()
    if pos.numel() == 0:
        return float("nan")
    order = torch.sort(scores, descending=True, stable=True).indices
    s, y = scores[order], labels[order]
    tp, fp = torch.cumsum(y, 0), torch.cumsum(1.0 - y, 0)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # end of each tie group = one threshold
    tp, fp = tp[last], fp[last]
    precision, recall = tp / (tp + fp), tp / pos.numel()
    prev = torch.cat([recall.new_zeros(1), recall[:-1]])
    return float(((recall - prev) * precision).sum())


def roc_auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie), via average ranks (Mann-Whitney U)."""
    p, n = pos.numel(), neg.numel()
    if p == 0 or n == 0:
        return float("nan")
    scores = torch.cat([pos.reshape(-1), neg.reshape(-1)]).double()
    _, inv, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    upper = torch.cumsum(counts, 0).double()  # 1-based rank of the last member of each tie group
    avg_rank = upper - (counts.double() - 1.0) / 2.0  # [V]
    rank_pos = avg_rank[inv[:p]].sum()
    return float((rank_pos - p * (p + 1) / 2.0) / (p * n))


@dataclass
class StreamEvalConfig:
    batch_size: int = 200
    ks: tuple[int, ...] = (5, 10, 20)
    n_negatives: int = 1  # per event, for AP / AUC
    negatives: tuple[str, ...] = ("random", "historical")
    full_ranking: bool = True
    exclude_seen: bool = True  # mask the user's earlier items in full ranking (ML-100K has no repeats)


@torch.no_grad()
def evaluate_stream(
    model: Any, stream: EventStream, cfg: StreamEvalConfig | None = None, *, observe: bool = True,
    restore: bool = False, name: str = "test", seed: int = 0,
) -> Report:
    """Score `stream` in time order (each batch before it is observed). With `restore`, the model's
    streaming state is put back exactly as it was afterwards. AP / AUC negatives are drawn from `seed`
    (the run's seed: `TrainConfig.seed`, in an experiment its one `seed`)."""
    cfg = cfg or StreamEvalConfig()
    was_training = model.training
    model.eval()
    snapshot = model.state_dict_memory() if restore else None
    gen = torch_generator(seed, f"tgn_eval/{name}")  # the stream name negatives were always drawn from
    n_e, n_neg = len(stream), cfg.n_negatives
    pos_s = {k: torch.zeros(n_e) for k in cfg.negatives}
    neg_s = {k: torch.zeros(n_e, n_neg) for k in cfg.negatives}
    fallback = torch.zeros(n_e, n_neg, dtype=torch.bool)
    ranks = torch.zeros(n_e, dtype=torch.int64)
    t0, rank_seconds = time.perf_counter(), 0.0
    for lo, hi in stream.spans(cfg.batch_size):
        batch = stream.batch(lo, hi)
        ctx = model.context()  # pending messages of earlier batches applied; nothing of this batch
        cands = [batch.items.unsqueeze(1)]
        for kind in cfg.negatives:
            if kind == "random":
                cands.append(random_negatives(batch.items, stream.n_items, n_neg, gen))
            elif kind == "historical":
                negs, fallback[lo:hi] = stream.historical_negatives(lo, hi, n_neg, gen)
                cands.append(negs)
            else:
                raise ValueError(f"unknown negative kind {kind!r}; use 'random' or 'historical'")
        if cfg.negatives:  # one call: the user side is embedded once for the positive and all negatives
            s = model.pair_scores(batch, torch.cat(cands, 1), ctx).float().cpu()  # [B, 1 + n * kinds]
            for j, kind in enumerate(cfg.negatives):
                pos_s[kind][lo:hi], neg_s[kind][lo:hi] = s[:, 0], s[:, 1 + j * n_neg : 1 + (j + 1) * n_neg]
        if cfg.full_ranking:
            tr = time.perf_counter()
            scores = model.score(batch, ctx=ctx)  # [B, n_items + 1]
            targets = batch.items.to(scores.device)
            excluded = exclusion_pairs(stream.history_mask(lo, hi).to(scores.device), targets) \
                if cfg.exclude_seen else (None, None)
            ranks[lo:hi] = rank_block(scores, targets, *excluded, where=f"events {lo}..{hi - 1} of '{name}'")[0].cpu()
            rank_seconds += time.perf_counter() - tr
        if observe:
            model.observe(batch)
    seconds = time.perf_counter() - t0
    if snapshot is not None:
        model.load_memory(snapshot)
    model.train(was_training)
    groups: dict[str, dict[str, float | None]] = {}
    counts: dict[str, int] = {}
    for g, mask_np in stream.group_masks().items():
        m = torch.from_numpy(mask_np)
        counts[g] = n_g = int(m.sum())
        out: dict[str, float | None] = {}
        for kind in cfg.negatives:
            out[f"ap_{kind}"] = average_precision(pos_s[kind][m], neg_s[kind][m]) if n_g else None
            out[f"auc_{kind}"] = roc_auc(pos_s[kind][m], neg_s[kind][m]) if n_g else None
        if "historical" in cfg.negatives and n_g:
            out["historical_fallback_frac"] = float(fallback[m].float().mean())
        if cfg.full_ranking:
            out.update(compute_metrics(ranks[m], cfg.ks))
        groups[g] = out
    return Report(overall=groups.pop("overall"), groups=groups, counts=counts, meta={
        "name": name,
        "model": type(model).__name__,
        "protocol": "streaming: events in time order, each batch scored before it is observed",
        "n_events": n_e,
        "seconds": seconds,
        "ranking_seconds": rank_seconds,
        "events_per_s": n_e / seconds if seconds > 0 else None,
        "batch_size": cfg.batch_size,
        "negatives_per_event": n_neg,
        "exclude_seen": cfg.exclude_seen,
        "ties": "pessimistic",
        "metric_definitions": definitions(),
        "negatives": {"random": "an item drawn uniformly from the catalogue",
                      "historical": "an item the same user interacted with earlier (random if none)"},
    }, ranks=ranks.numpy() if cfg.full_ranking else None)


def stream_validator(valid: EventStream, cfg: StreamEvalConfig | None = None, seed: int = 0) -> Callable[[Any], Report]:
    """`validate(model)` for training: streams VALID in time order from the end-of-epoch training memory
    (scored before observed), restores that memory exactly, and returns the Report."""

    def validate(model: Any) -> Report:
        return evaluate_stream(model, valid, cfg, observe=True, restore=True, name="valid", seed=seed)

    return validate


@torch.no_grad()
def stream_through(model: Any, stream: EventStream, batch_size: int) -> None:
    """Observe events without scoring them (rebuild memory with the final weights)."""
    model.eval()
    for lo, hi in stream.spans(batch_size):
        model.observe(stream.batch(lo, hi))


def run_protocol(
    model: Any, train: EventStream, valid: EventStream, test: EventStream, cfg: StreamEvalConfig | None = None,
    seed: int = 0,
) -> dict[str, Any]:  # {"valid": Report, "test": Report, "train_stream_seconds": float}
    """The chronological protocol: reset, observe train, evaluate valid (then observe it), evaluate test."""
    cfg = cfg or StreamEvalConfig()
    model.reset_state()
    t0 = time.perf_counter()
    stream_through(model, train, cfg.batch_size)
    warm_s = time.perf_counter() - t0
    rep_valid = evaluate_stream(model, valid, cfg, observe=True, name="valid", seed=seed)
    rep_test = evaluate_stream(model, test, cfg, observe=True, name="test", seed=seed)
    return {"valid": rep_valid, "test": rep_test, "train_stream_seconds": warm_s}


def summary(rep: Report, keys: tuple[str, ...] = ("ap_random", "auc_random", "ap_historical",
            "auc_historical", "ndcg@10", "recall@10", "mrr")) -> dict[str, dict[str, Any]]:
    """{group: {count, key: value}} for the headline metrics of a streaming Report (overall first)."""
    tables = {"overall": rep.overall, **rep.groups}
    return {g: {"count": rep.counts[g], **{k: t.get(k) for k in keys}} for g, t in tables.items()}

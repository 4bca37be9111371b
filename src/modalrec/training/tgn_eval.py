"""Streaming evaluation and the epoch driver for MM-TGN (and any model with the same stateful API:
`reset_state`, `observe`, `state_dict_memory` / `load_memory`, `context`, `pair_scores`, `score`).

Why a TGN-specific driver: the shared evaluator ranks EvalSet events in user order with a stateless
`score(SeqBatch)`, but a temporal graph model must see the evaluation events in time order, be scored
on each batch *before* the batch updates its memory, and have its memory saved / restored around
validation. Ranks still use the shared pessimistic-tie `ranks_from_scores` and metrics come from the
shared `compute_metrics`, so numbers are directly comparable with the shared evaluator's.

Per evaluation batch: (1) one node context (pending messages applied) from earlier batches only;
(2) link-prediction scores for the event's item vs random and historical negatives -> AP / AUC;
(3) full-ranking scores over all items with PAD and the user's earlier items masked -> ranks;
(4) `observe(batch)`. Groups: overall, transductive (user and item seen in training), inductive (new
user or new item), cold_item, cold_user. AP / AUC are pooled over all (positive, negative) pairs of a
group (not averaged per batch).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from modalrec.data.events import EventStream, random_negatives
from modalrec.evaluation.metrics import METRIC_DEFINITIONS, compute_metrics, ranks_from_scores
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
    seed: int = 0
    n_negatives: int = 1  # per event, for AP / AUC
    negatives: tuple[str, ...] = ("random", "historical")
    full_ranking: bool = True
    exclude_seen: bool = True  # mask the user's earlier items in full ranking (ML-100K has no repeats)


@torch.no_grad()
def evaluate_stream(
    model: Any, stream: EventStream, cfg: StreamEvalConfig | None = None, *, observe: bool = True,
    restore: bool = False, name: str = "test",
) -> dict[str, Any]:
    """Score `stream` in time order (each batch before it is observed). With `restore`, the model's
    streaming state is put back exactly as it was afterwards."""
    cfg = cfg or StreamEvalConfig()
    was_training = model.training
    model.eval()
    snapshot = model.state_dict_memory() if restore else None
    gen = torch_generator(cfg.seed, f"tgn_eval/{name}")
    n_e, n_neg = len(stream), cfg.n_negatives
    pos_s = {k: torch.zeros(n_e) for k in cfg.negatives}
    neg_s = {k: torch.zeros(n_e, n_neg) for k in cfg.negatives}
    fallback = torch.zeros(n_e, n_neg, dtype=torch.bool)
    ranks = torch.zeros(n_e, dtype=torch.int64)
    t0, rank_seconds = time.perf_counter(), 0.0
    for lo, hi in stream.spans(cfg.batch_size):
        batch = stream.batch(lo, hi)
        ctx = model.context()  # pending messages of earlier batches applied; nothing of this batch
        for kind in cfg.negatives:
            if kind == "random":
                negs = random_negatives(batch.items, stream.n_items, n_neg, gen)
            elif kind == "historical":
                negs, fb = stream.historical_negatives(lo, hi, n_neg, gen)
                fallback[lo:hi] = fb
            else:
                raise ValueError(f"unknown negative kind {kind!r}; use 'random' or 'historical'")
            s = model.pair_scores(batch, torch.cat([batch.items.unsqueeze(1), negs], 1), ctx).float().cpu()  # [B, 1 + n]
            pos_s[kind][lo:hi], neg_s[kind][lo:hi] = s[:, 0], s[:, 1:]
        if cfg.full_ranking:
            tr = time.perf_counter()
            scores = model.score(batch, ctx=ctx)  # [B, n_items + 1]
            cand = torch.ones_like(scores, dtype=torch.bool)
            cand[:, 0] = False
            if cfg.exclude_seen:
                cand &= ~stream.history_mask(lo, hi).to(scores.device)
            ranks[lo:hi] = ranks_from_scores(scores, batch.items.to(scores.device), cand).cpu()
            rank_seconds += time.perf_counter() - tr
        if observe:
            model.observe(batch)
    seconds = time.perf_counter() - t0
    if snapshot is not None:
        model.load_memory(snapshot)
    model.train(was_training)
    groups: dict[str, dict[str, Any]] = {}
    for g, mask_np in stream.group_masks().items():
        m = torch.from_numpy(mask_np)
        out: dict[str, Any] = {"count": int(m.sum())}
        for kind in cfg.negatives:
            ok = int(m.sum()) > 0
            out[f"ap_{kind}"] = average_precision(pos_s[kind][m], neg_s[kind][m]) if ok else None
            out[f"auc_{kind}"] = roc_auc(pos_s[kind][m], neg_s[kind][m]) if ok else None
        if "historical" in cfg.negatives and int(m.sum()):
            out["historical_fallback_frac"] = float(fallback[m].float().mean())
        if cfg.full_ranking:
            out.update(compute_metrics(ranks[m], cfg.ks))
        groups[g] = out
    return {
        "name": name,
        "events": n_e,
        "groups": groups,
        "meta": {
            "seconds": seconds,
            "ranking_seconds": rank_seconds,
            "events_per_s": n_e / seconds if seconds > 0 else None,
            "batch_size": cfg.batch_size,
            "negatives_per_event": n_neg,
            "exclude_seen": cfg.exclude_seen,
            "ties": "pessimistic",
            "metric_definitions": {
                **METRIC_DEFINITIONS,
                "ap": "average precision of positives vs sampled negatives, pooled over the group",
                "auc": "ROC AUC of positives vs sampled negatives (ties count 1/2), pooled over the group",
                "historical negative": "an item the same user interacted with earlier (random if none)",
            },
        },
    }


@dataclass
class TGNTrainConfig:
    epochs: int = 20
    batch_size: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 5.0
    patience: int = 3  # epochs without improvement on valid before stopping
    monitor: str = "mrr"  # a key of the overall group of evaluate_stream (higher is better)
    plateau_factor: float = 0.5
    plateau_patience: int = 1
    min_lr: float = 1e-5
    seed: int = 0
    device: str = "cpu"
    max_seconds: float | None = None  # stop after the epoch that crosses this budget
    eval: StreamEvalConfig = field(default_factory=StreamEvalConfig)


def train_epoch(model: Any, stream: EventStream, opt: torch.optim.Optimizer, cfg: TGNTrainConfig, epoch: int) -> float:
    """One chronological pass: reset state, then per batch loss -> step -> observe. Returns mean loss."""
    model.train()
    model.reset_state()
    total, n = 0.0, 0
    for batch in stream.batches(cfg.batch_size, cfg.seed, epoch):
        batch = batch.to(cfg.device)
        loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if not model.cfg.observe_in_loss:
            model.observe(batch)
        model.detach_state()
        total += float(loss.detach()) * len(batch)
        n += len(batch)
    return total / max(n, 1)


def fit_tgn(model: Any, train: EventStream, valid: EventStream, cfg: TGNTrainConfig) -> list[dict[str, Any]]:
    """Adam + ReduceLROnPlateau + early stopping on VALID `monitor`; best weights are restored.
    Validation continues from the end-of-epoch training memory and restores it afterwards."""
    model.to(cfg.device)
    train = train.with_negatives(model.cfg.n_negatives)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
    )
    best, best_state, bad, history = -math.inf, copy.deepcopy(model.state_dict()), 0, []
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        loss = train_epoch(model, train, opt, cfg, epoch)
        train_s = time.perf_counter() - t0
        rep = evaluate_stream(model, valid, cfg.eval, observe=True, restore=True, name="valid")
        value = rep["groups"]["overall"].get(cfg.monitor)
        if value is None or not math.isfinite(value):
            raise ValueError(f"monitor {cfg.monitor!r} is not available in the validation report")
        sched.step(value)
        improved = value > best
        if improved:
            best, best_state, bad = value, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
        row = {"epoch": epoch, "train_loss": loss, f"valid_{cfg.monitor}": value, "lr": opt.param_groups[0]["lr"],
               "train_seconds": train_s, "valid_seconds": rep["meta"]["seconds"], "improved": improved}
        history.append(row)
        log.info("tgn epoch %d: %s", epoch, row)
        if bad > cfg.patience or (cfg.max_seconds is not None and time.perf_counter() - start > cfg.max_seconds):
            break
    model.load_state_dict(best_state)
    return history


@torch.no_grad()
def stream_through(model: Any, stream: EventStream, batch_size: int) -> None:
    """Observe events without scoring them (rebuild memory with the final weights)."""
    model.eval()
    for lo, hi in stream.spans(batch_size):
        model.observe(stream.batch(lo, hi))


def run_protocol(
    model: Any, train: EventStream, valid: EventStream, test: EventStream, cfg: StreamEvalConfig | None = None
) -> dict[str, Any]:
    """The chronological protocol: reset, observe train, evaluate valid (then observe it), evaluate test."""
    cfg = cfg or StreamEvalConfig()
    model.reset_state()
    t0 = time.perf_counter()
    stream_through(model, train, cfg.batch_size)
    warm_s = time.perf_counter() - t0
    rep_valid = evaluate_stream(model, valid, cfg, observe=True, name="valid")
    rep_test = evaluate_stream(model, test, cfg, observe=True, name="test")
    return {"valid": rep_valid, "test": rep_test, "train_stream_seconds": warm_s}


def summary(rep: dict[str, Any], keys: tuple[str, ...] = ("ap_random", "auc_random", "ap_historical",
            "auc_historical", "ndcg@10", "recall@10", "mrr")) -> dict[str, dict[str, Any]]:
    """{group: {key: value}} for the headline metrics of an evaluate_stream report."""
    return {g: {"count": v["count"], **{k: v.get(k) for k in keys}} for g, v in rep["groups"].items()}

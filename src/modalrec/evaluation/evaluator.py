"""Full-ranking evaluator: every item 1..n_items is a candidate, scored in bounded chunks on CPU or GPU.

Protocol (DESIGN.md, protocol rules):
- Candidates are all items 1..n_items; column 0 (PAD) never is.
- exclude_seen=True: history items other than the target are removed from candidates. The history is
  the event's FULL history in the EvalSet (not only the max_len window the model sees); the target is
  always a candidate, even when the user consumed it before (so repeat purchases are still ranked).
- Ties are pessimistic: rank = 1 + #(candidates other than the target with score >= target score), so
  a constant-score model gets the worst rank. NaN scores raise ValueError naming the batch.
- Metrics (HR/Recall@K, NDCG@K, MRR@K, MRR) overall and per group (warm / cold_item / cold_user).

Events are scored in blocks of `batch_size` and each block is ranked by the shared ranking core
(evaluation/ranking.py `rank_block`) against a de-duplicated, target-free (event, item) exclusion list
precomputed once (on CPU a model known only by `score` is called on `score_rows` events of a block at a time,
a size the C allocator reuses). `rank_blocks` ranks any subset of the blocks and `report` builds the Report from
ranks, so sharded evaluation (evaluation/distributed.py) computes exactly what `run` computes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from modalrec.costs import peak_memory
from modalrec.data.sequences import eval_batch
from modalrec.data.splits import GROUP_DEFINITIONS, EvalSet
from modalrec.devices import resolve_device
from modalrec.evaluation.metrics import compute_metrics, definitions
from modalrec.evaluation.ranking import rank_block, rank_dot_block, sampled_ranks
from modalrec.evaluation.report import Report
from modalrec.evaluation.sampled import SampledConfig, draw_negatives
from modalrec.protocol import REPEAT_TARGETS
from modalrec.types import HistoryBonusScorer, ItemBiasScorer, Scorer

log = logging.getLogger(__name__)

# A model known only by `score` returns a new [B, n_items + 1] block per call. On CPU the evaluator calls it on
# at most CPU_SCORE_BLOCK_BYTES of scores: glibc's malloc hands a freed block of that size out again from its
# heap, while above its 32 MiB ceiling every block is a fresh mmap whose pages fault in as the model writes them
# (benchmarks/evaluator_speed.py, 1e5 items: the model's own scoring took 45 % more CPU in 64 MiB blocks than in
# 16 MiB ones). Never fewer than MIN_SCORE_ROWS events per call: a call has fixed costs, such as reading an item
# table (at 1e6 items the model alone took 10.8 s and 6.2 s in 4- and 8-event calls, 3.9-5.2 s in 16-event ones).
CPU_SCORE_BLOCK_BYTES = 2**24
MIN_SCORE_ROWS = 16

EXCLUDE_SEEN_RULE = ("exclude_seen: history items other than the target are removed from candidates; a repeat target "
                     "(already in the history) stays rankable and is reported in the repeat group")
# The rankable repeat target is the SASRec papers' convention, but it tells a model the answer: the target is the one
# history item left, so ranking every history item first scores a repeat target at rank 1 (the repeat-history rule
# scores NDCG@10 1.0 on the repeat group). Masking the target with the rest -- a repeat target always a miss, as
# the IISAN papers and RecBole do -- is the rule a system that filters seen items can actually reach.
MASK_REPEATS_RULE = ("exclude_seen, repeat_targets='miss': every history item is removed from candidates, a repeat "
                     "target too, so it counts as a miss (rank n_items); the repeat group scores 0 for every model")
NO_EXCLUDE_RULE = "exclude_seen=False: every item 1..n_items is a candidate, history included"


class Evaluator:
    """Rank each EvalSet event's target against the whole catalogue; `.run(model) -> Report`.

    A score block [B, n_items + 1] never exceeds `score_budget` floats: B = score_budget // (n_items + 1)
    (capped by `batch_size` when given; at least 1). On CPU a model known only by `score` is called on
    `score_rows` events at a time within each block (see CPU_SCORE_BLOCK_BYTES). `sampled` adds
    sampled-negative metrics (prefixed "sampled_") on top of, never instead of, the full-ranking ones.
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
        repeat_targets: str = "rankable",
    ) -> None:
        self.evalset = evalset
        self.n_items = int(n_items)
        self.ks = tuple(sorted({int(k) for k in ks}))
        if not self.ks or self.ks[0] < 1:
            raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
        self.exclude_seen = bool(exclude_seen)
        if repeat_targets not in REPEAT_TARGETS:
            raise ValueError(f"repeat_targets must be one of {REPEAT_TARGETS}, got {repeat_targets!r}")
        if repeat_targets == "miss" and not self.exclude_seen:
            raise ValueError("repeat_targets='miss' masks the target with the rest of the history; it needs "
                             "exclude_seen=True")
        self.repeat_targets = repeat_targets
        self.max_len = int(max_len)
        self.device = torch.device(resolve_device(device))
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
        self.score_rows = score_rows(self.n_items + 1, self.batch_size, self.device)
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

    def block_starts(self) -> list[int]:
        """First event of every score block ([0, b), [b, 2b), ...)."""
        return list(range(0, len(self.evalset), self.batch_size))

    def run(self, model: Scorer, name: str = "test", keep_ranks: bool = True) -> Report:
        """Score every event with `model.score(batch)` ([B, n_items + 1]; dot-product models: their state
        times the item table computed once) and build the Report."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        starts = self.block_starts()
        ranks, s_ranks = self.rank_blocks(model, starts, name)
        return self.report(model, name, torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.int64),
                           torch.cat(s_ranks) if s_ranks else None, time.perf_counter() - start, len(starts),
                           keep_ranks)

    def rank_blocks(self, model: Scorer, starts: Sequence[int], name: str = "test", where: str = "",
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Score and rank the blocks beginning at `starts`: ([n] int64 full-ranking ranks per model call,
        the same for sampled negatives -- empty without `sampled`), on the CPU, in the order given."""
        es, dev = self.evalset, self.device
        negatives = self.negatives()
        targets = torch.from_numpy(es.target.astype(np.int64)).to(dev)  # [E]
        mask_rows = torch.from_numpy(self._mask_rows).to(dev)  # [M] global event index
        mask_items = torch.from_numpy(self._mask_items).to(dev)  # [M]
        ranks, s_ranks = [], []
        is_module = isinstance(model, nn.Module)
        was_training = bool(model.training) if is_module else False
        # A model trained elsewhere (train.device=cuda, eval.device=cpu) is scored where the batches are,
        # then put back, so the trainer finds its weights where its optimizer state lives.
        home = _module_device(model) if is_module else None
        moved = home is not None and not _same_device(home, dev)
        try:
            if moved:
                model.to(dev)
            if is_module:
                model.eval()
            with torch.no_grad():
                # sampled metrics read scores at drawn negatives: they need the score block
                linear = _linear_parts(model, self.exclude_seen, self.n_items + 1) if starts and negatives is None \
                    and dev.type == "cpu" else None
                fused = linear is not None
                if fused:
                    state_model, table, bias, bonus = linear
                else:
                    table = _item_table(model) if starts else None  # [n_items + 1, d] or None
                if table is not None:
                    _check_shape(table, (self.n_items + 1, table.shape[1]), "item_embeddings()", f"evaluation '{name}'")
                if fused and bias is not None:
                    _check_shape(bias[None], (1, self.n_items + 1), "item_bias(n_items + 1)", f"evaluation '{name}'")
                table_absmax = float(table.abs().max()) if fused else None  # once per evaluation
                # a block the model (or the product below) returns is scored `score_rows` events at a time
                rows = self.batch_size if fused else self.score_rows
                spans = [(a, min(a + rows, lo + self.batch_size, len(es)), lo // self.batch_size)
                         for lo in starts for a in range(lo, min(len(es), lo + self.batch_size), rows)]
                for lo, hi, block in spans:
                    batch = eval_batch(es, np.arange(lo, hi), self.max_len).to(dev)
                    at = f"batch {block} (events {lo}..{hi - 1}) of evaluation '{name}'{where}"
                    a, z = int(self._mask_offsets[lo]), int(self._mask_offsets[hi])
                    excluded = (mask_rows[a:z] - lo, mask_items[a:z])
                    if fused:  # dot-product model on CPU: scores formed and ranked chunk by chunk, never stored
                        state = state_model(batch)  # [B, d]
                        _check_shape(state, (hi - lo, table.shape[1]), "forward (the state)", at)
                        # the history bonus reaches the target only: every other history item is excluded
                        lifted = bonus * (batch.items == targets[lo:hi, None]).any(1) if bonus else None
                        r, t_score = rank_dot_block(state, table, targets[lo:hi], *excluded, at, table_absmax,
                                                    bias, lifted)
                        ranks.append(r)
                        continue
                    # [B, n_items + 1]; a dot-product model's item table is computed once, not once per block
                    scores = model.score(batch) if table is None else model(batch) @ table.T
                    _check_shape(scores, (hi - lo, self.n_items + 1), "model.score", at)
                    r, t_score = rank_block(scores, targets[lo:hi], *excluded, at)
                    ranks.append(r.cpu())
                    if negatives is not None:
                        neg = torch.from_numpy(negatives[lo:hi]).to(dev)  # [B, n]
                        s_ranks.append(sampled_ranks(scores, t_score, neg).cpu())
                    del scores  # freed before the next block is scored: one block in memory, not two
        finally:
            if is_module and was_training:
                model.train()
            if moved:
                model.to(home)
        return ranks, s_ranks

    def report(
        self,
        model: object,
        name: str,
        ranks: torch.Tensor,
        s_ranks: torch.Tensor | None,
        wall: float,
        n_batches: int,
        keep_ranks: bool,
    ) -> Report:
        """The Report of per-event ranks ([E], event order) from `rank_blocks` over every block."""
        masks = self.evalset.group_masks()
        if self.repeat_targets == "miss":  # the target masked with the history: the worst rank, as -inf scores get
            repeat = torch.from_numpy(self.evalset.repeat_mask())
            ranks = torch.where(repeat, torch.full_like(ranks, self.n_items), ranks)
            negatives = self.negatives()
            if s_ranks is not None and negatives is not None:  # below every valid sampled negative
                s_ranks = torch.where(repeat, torch.from_numpy(1 + (negatives >= 0).sum(1)).to(s_ranks.dtype), s_ranks)
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
            "candidates": (NO_EXCLUDE_RULE if not self.exclude_seen else
                           MASK_REPEATS_RULE if self.repeat_targets == "miss" else EXCLUDE_SEEN_RULE),
            "ties": "pessimistic",
            "metric_definitions": definitions(),
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
            meta["peak_gpu_memory_bytes"] = peak_memory(self.device)[0]
        if self.sampled is not None:
            meta["sampled"] = self.sampled.describe()
        return Report(
            overall=overall,
            groups=groups,
            counts=counts,
            meta=meta,
            ranks=ranks.numpy() if keep_ranks else None,
        )


def score_rows(n_cols: int, batch_size: int, device: torch.device) -> int:
    """Events per `model.score` call within a block of `batch_size`: on CPU at most CPU_SCORE_BLOCK_BYTES of
    float32 scores ([rows, n_cols]), but not under MIN_SCORE_ROWS; elsewhere the whole block."""
    if device.type != "cpu":
        return batch_size
    return max(1, min(batch_size, max(MIN_SCORE_ROWS, CPU_SCORE_BLOCK_BYTES // (4 * n_cols))))


def _check_shape(t: torch.Tensor, want: tuple[int, int], what: str, at: str) -> None:
    if tuple(t.shape) != want:
        raise ValueError(f"{what} returned shape {tuple(t.shape)} in {at}; expected {want} (score columns: "
                         "n_items + 1 with column 0 = PAD)")


def _module_device(model: nn.Module) -> torch.device | None:
    """Where the module's first parameter (else buffer) lives; None for a module without tensors."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return None


def _same_device(a: torch.device, b: torch.device) -> bool:
    """"cuda" and "cuda:<current>" are the same GPU."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    return (a.index if a.index is not None else torch.cuda.current_device()) == (
        b.index if b.index is not None else torch.cuda.current_device())


def _item_table(model: Scorer) -> torch.Tensor | None:
    """The item table of a model whose scores are `forward(batch) @ item_embeddings().T` (the
    Recommender contract `dot_product_scores`), else None. Content towers compute every item's vector
    in each `score` call, which at 10^6 items would cost more than the scoring itself."""
    if isinstance(model, nn.Module) and getattr(model, "dot_product_scores", False):
        return model.item_embeddings()
    return None


def _linear_parts(model: Scorer, exclude_seen: bool, n_rows: int,
                  ) -> tuple[nn.Module, torch.Tensor, torch.Tensor | None, float] | None:
    """(the module whose forward is the state, its item table, a per-item score term or None, a bonus on history
    items) when scores are `state @ table.T + item_bias` plus that bonus, so the CPU path can rank them without a
    score block; None otherwise. A history bonus (models/repeat.py) is taken apart only when `exclude_seen`:
    then the target is the one history item left among the candidates, so the bonus moves its score alone."""
    bonus = 0.0
    if exclude_seen and isinstance(model, HistoryBonusScorer):
        model, bonus = model.history_bonus()
    if not isinstance(model, nn.Module):
        return None
    bias = model.item_bias(n_rows) if isinstance(model, ItemBiasScorer) else None
    if not (getattr(model, "dot_product_scores", False) or bias is not None):
        return None
    return model, model.item_embeddings(), bias, bonus


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

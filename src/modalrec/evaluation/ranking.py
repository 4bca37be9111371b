"""The ranking core: pessimistic ranks of a block of evaluation events from their full-catalogue scores.

Every evaluation -- single process (`Evaluator.run`), sharded over ranks (evaluation/distributed.py) and
streaming in time order (evaluation/streaming.py) -- ranks its score blocks here, so the candidate and tie
rules exist once:

- candidates are items 1..N (column 0, PAD, never is), less the block's excluded (event, item) pairs;
- rank = 1 + #(candidates other than the target whose score is >= the target's score), so ties count
  against the target and a constant-score model gets the worst rank; the target is always ranked, even
  when it is also an excluded (seen) item;
- NaN scores raise ValueError naming the rows; model scores are never modified.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def rank_block(scores: torch.Tensor, targets: torch.Tensor, excluded_rows: torch.Tensor | None = None,
               excluded_items: torch.Tensor | None = None, where: str = "this block",
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of one block. scores [B, N + 1]; targets [B]; (excluded_rows, excluded_items) [M]: candidates
    removed from their row (unique per row, never the row's target: see `exclusion_pairs`).
    Returns ([B] int64 ranks, [B, 1] target scores)."""
    targets = targets.to(scores.device, torch.int64)
    t_score = scores.gather(1, targets.unsqueeze(1))  # [B, 1]
    if excluded_rows is None or excluded_items is None or not excluded_rows.numel():
        excluded_rows = excluded_items = None
    # Candidates 1..N scoring >= the target, less the excluded ones; the target itself is counted once
    # (s >= s for non-NaN).
    ge, has_nan = count_ge(scores, t_score, excluded_rows, excluded_items)  # [B] int64
    if has_nan:
        check_no_nan(scores, where)
    return ge, t_score


# Elements per CPU chunk of `rank_dot_block`: the chunk and its [R, C] float buffer (2 MiB each) stay in cache
# between the passes (measured fastest among 2**17..2**20 at 1e5 and 1e6 items, one thread).
CPU_CHUNK = 2**19
# Columns per chunk of `count_ge` on CPU: a 512 KiB float32 slice of one row and its bool comparison stay in
# the core's cache between the count and the NaN test (measured fastest among 2**15..2**18 at 1e6 items).
COUNT_CHUNK = 2**17


def count_ge(scores: torch.Tensor, t_score: torch.Tensor, excluded_rows: torch.Tensor | None = None,
             excluded_items: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
    """([B] int64 #(columns 1..N with score >= t_score, less the excluded (row, item) pairs), whether any
    score is NaN) of scores [B, N + 1]; t_score [B, 1]; excluded pairs [M] or None.

    On CPU (float32 / float64) it runs through NumPy, one row slice of COUNT_CHUNK columns at a time, each
    read once from memory: the comparison into a reused bool buffer and its count while the slice comes into
    cache, then the slice's max (NaN if any score is NaN) from the cache. NumPy's SIMD comparison and
    `count_nonzero` are 2-4x faster than torch's comparison ops here (measured at 1e6 items, one thread: 5 ms
    against 13 ms for a 16-row block, whose scoring takes 75 ms), which is most of the evaluator's own cost.
    A row's excluded items are counted right after the row, while a 1e5-item row (400 KB) is still in cache,
    instead of a gather from the whole block in memory.
    """
    pairs = excluded_rows is not None and excluded_items is not None
    if scores.device.type != "cpu" or scores.dtype not in (torch.float32, torch.float64):
        has_nan = scores.is_floating_point() and bool(torch.isnan(scores.sum()))
        ge = (scores[:, 1:] >= t_score).sum(dim=1)  # [B]
        if pairs:
            hit = (scores[excluded_rows, excluded_items] >= t_score[excluded_rows, 0]).to(torch.int64)  # [M]
            ge = ge - torch.zeros_like(ge).index_add_(0, excluded_rows, hit)
        return ge, has_nan
    s = scores.detach().numpy()  # a view: no copy
    t = t_score.detach().to(scores.dtype).reshape(-1).numpy()  # [B]
    n_rows, n_cols = s.shape
    if pairs:  # the pairs of row r are items[offsets[r]:offsets[r + 1]]
        rows, items = excluded_rows.numpy(), excluded_items.numpy()
        if np.any(rows[1:] < rows[:-1]):
            order = np.argsort(rows, kind="stable")
            rows, items = rows[order], items[order]
        offsets = np.searchsorted(rows, np.arange(n_rows + 1))
    hit = np.empty(max(1, min(COUNT_CHUNK, n_cols - 1)), dtype=bool)
    counts = np.zeros(n_rows, dtype=np.int64)
    has_nan = bool(np.isnan(s[:, 0]).any())  # PAD's column is checked too
    for r in range(n_rows):
        row, tr, c = s[r], t[r], 0
        for c0 in range(1, n_cols, COUNT_CHUNK):
            part = row[c0 : c0 + COUNT_CHUNK]
            c += np.count_nonzero(np.greater_equal(part, tr, out=hit[: part.size]))
            if np.isnan(np.maximum.reduce(part)):  # max propagates NaN
                has_nan = True
        if pairs and offsets[r + 1] > offsets[r]:
            c -= np.count_nonzero(row[items[offsets[r] : offsets[r + 1]]] >= tr)
        counts[r] = c
    return torch.from_numpy(counts), has_nan


def rank_dot_block(state: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                   excluded_rows: torch.Tensor | None = None, excluded_items: torch.Tensor | None = None,
                   where: str = "this block", table_absmax: float | None = None,
                   item_bias: torch.Tensor | None = None, target_bonus: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`rank_block(state @ table.T + item_bias, ...)` on CPU without the [B, N + 1] score block. state [B, d],
    table [N + 1, d] (row 0 = PAD), item_bias [N + 1] or None. The scores are formed one cache-sized column chunk
    at a time and counted while in cache, so the block is never written to memory and read back (and memory is
    one chunk). `target_bonus` [B] is added to each row's target score only: a term on history items
    (models/repeat.py) once every other history item is excluded.

    The target's score comes from a product of the same kind as every other score; the target is counted
    once by rule (1 + other candidates scoring >= it), whatever the rounding of its own column.

    A score is a sum of d products, so while d * max|state| * max|table| stays well below the float range no
    sum can overflow, and a NaN score needs a NaN or infinite input: then checking the inputs (`table_absmax`,
    max|table|, computed once per evaluation by the caller) replaces a pass over every score chunk."""
    targets = targets.to(state.device, torch.int64)
    b, n_cols = state.shape[0], table.shape[0]
    t_score = torch.mm(state, table[targets].T).diagonal().unsqueeze(1)  # [B, 1]
    if item_bias is not None:
        t_score = t_score + item_bias[targets].unsqueeze(1)
    if target_bonus is not None:
        t_score = t_score + target_bonus.to(t_score.dtype).unsqueeze(1)
    cols = max(1, min(n_cols - 1, CPU_CHUNK // max(b, 1)))
    score_buf = torch.empty(b * cols, dtype=state.dtype)
    hit_buf = torch.empty(b * cols, dtype=torch.float32)
    counts = torch.ones(b, dtype=torch.int64)  # the target itself
    nan_sum = t_score.sum(dtype=torch.float64)
    if table_absmax is None:
        table_absmax = float(table.abs().max())
    bound = table.shape[1] * float(state.abs().max()) * table_absmax  # NaN if an input is NaN
    if item_bias is not None:
        bound += float(item_bias.abs().max())
    no_nan_possible = math.isfinite(bound) and bound < torch.finfo(state.dtype).max / 4
    rows = torch.arange(b)
    pairs = excluded_rows is not None and excluded_items is not None and excluded_rows.numel() > 0
    if pairs:  # pairs sorted by item: each chunk's pairs are one slice
        order = torch.argsort(excluded_items)
        ex_rows, ex_items = excluded_rows[order], excluded_items[order]
    for c0 in range(1, n_cols, cols):  # column 0 (PAD) is never a candidate
        c1 = min(n_cols, c0 + cols)
        part = torch.mm(state, table[c0:c1].T, out=score_buf[: b * (c1 - c0)].view(b, c1 - c0))  # [B, C]
        if item_bias is not None:
            part += item_bias[c0:c1]
        if not no_nan_possible:
            nan_sum += part.sum()
        hit = torch.ge(part, t_score, out=hit_buf[: part.numel()].view(part.shape))  # [B, C] 0/1
        counts += hit.sum(dim=1).to(torch.int64)
        own = (targets >= c0) & (targets < c1)  # [B] rows whose target column is in this chunk
        counts[own] -= hit[rows[own], targets[own] - c0].to(torch.int64)
        if pairs:
            lo, hi = torch.searchsorted(ex_items, torch.tensor([c0, c1])).tolist()
            if hi > lo:
                r, i = ex_rows[lo:hi], ex_items[lo:hi] - c0
                counts.index_add_(0, r, -hit[r, i].to(torch.int64))
    if bool(torch.isnan(nan_sum)):
        check_no_nan(state @ table.T + (0.0 if item_bias is None else item_bias), where)
        check_no_nan(t_score, where)
    return counts, t_score


def sampled_ranks(scores: torch.Tensor, target_score: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """[B] int64 ranks against sampled negatives only, same tie rule: 1 + #(valid negatives scoring >= the
    target). scores [B, N + 1], target_score [B, 1] (from `rank_block`), negatives [B, n] (-1 = none)."""
    valid = negatives >= 0  # [B, n]
    neg_scores = scores.gather(1, negatives.clamp(min=0))  # [B, n]
    return ((neg_scores >= target_score) & valid).sum(dim=1, dtype=torch.int64) + 1


def exclusion_pairs(mask: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [M], items [M]) of a dense [B, N + 1] bool exclusion mask, less each row's target and PAD."""
    mask = mask.clone()
    mask[:, 0] = False
    mask[torch.arange(len(targets), device=mask.device), targets.to(mask.device, torch.int64)] = False
    rows, items = torch.nonzero(mask, as_tuple=True)
    return rows, items


def check_no_nan(scores: torch.Tensor, where: str = "this block") -> None:
    """Raise ValueError if `scores` ([B, N]) has a NaN, naming the rows of `where` that have one."""
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        bad = torch.isnan(scores).any(dim=1).nonzero().flatten().tolist()  # [R]
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(f"scores contain NaN in {len(bad)} row(s) of {where}: rows [{shown}]")

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

import torch


def rank_block(scores: torch.Tensor, targets: torch.Tensor, excluded_rows: torch.Tensor | None = None,
               excluded_items: torch.Tensor | None = None, where: str = "this block",
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of one block. scores [B, N + 1]; targets [B]; (excluded_rows, excluded_items) [M]: candidates
    removed from their row (unique per row, never the row's target: see `exclusion_pairs`).
    Returns ([B] int64 ranks, [B, 1] target scores)."""
    if scores.is_floating_point() and bool(torch.isnan(scores.sum())):  # cheap: only then scan per row
        check_no_nan(scores, where)
    targets = targets.to(scores.device, torch.int64)
    t_score = scores.gather(1, targets.unsqueeze(1))  # [B, 1]
    # Candidates 1..N scoring >= the target; the target itself is counted once (s >= s for non-NaN).
    ge = (scores[:, 1:] >= t_score).sum(dim=1, dtype=torch.int32)  # [B]
    if excluded_rows is not None and excluded_items is not None and excluded_rows.numel():
        hit = (scores[excluded_rows, excluded_items] >= t_score[excluded_rows, 0]).to(torch.int32)  # [M]
        ge = ge - torch.zeros_like(ge).index_add_(0, excluded_rows, hit)  # [B]
    return ge.to(torch.int64), t_score


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

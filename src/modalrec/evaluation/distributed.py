"""Evaluation sharded over the ranks of a process group, giving the single-process Report.

The Evaluator already cuts the events into score blocks of `batch_size` events (blocks [0, b),
[b, 2b), ...). Rank r scores blocks r, r + W, r + 2W, ... -- exactly the blocks, with exactly the
same rows, that a single process would score -- so every score, and hence every pessimistic rank, is
the one single-process evaluation computes, whatever the world size. The per-event ranks are then
all-gathered and put back in original event order, and the Report is built from them by the
evaluator itself, so metrics, groups and counts are identical on every rank and to `Evaluator.run`.

Coupling: this module drives the evaluator's scoring internals (`_rank_chunk`, the precomputed
exclusion CSR, `_check_scores`, `_report`); tests/distributed checks it against `Evaluator.run`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from modalrec.data.sequences import eval_batch
from modalrec.evaluation.evaluator import Evaluator, _rank_chunk
from modalrec.evaluation.report import Report
from modalrec.evaluation.sampled import sampled_ranks
from modalrec.parallel import all_gather_rows, any_rank, rank_and_world
from modalrec.types import Scorer

log = logging.getLogger(__name__)


def block_starts(n_events: int, batch_size: int) -> list[int]:
    """First event of every score block (the single-process evaluator's batch boundaries)."""
    return list(range(0, n_events, batch_size))


def events_of_rank(n_events: int, batch_size: int, rank: int, world: int) -> np.ndarray:
    """[n_r] event indices rank `rank` scores: its blocks (round-robin), in order."""
    starts = block_starts(n_events, batch_size)[rank::world]
    parts = [np.arange(s, min(s + batch_size, n_events), dtype=np.int64) for s in starts]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def evaluate_sharded(evaluator: Evaluator, model: Scorer, name: str = "test", keep_ranks: bool = True,
                     rank: int | None = None, world: int | None = None) -> Report:
    """`evaluator.run(model, name)` with the events sharded over the process group; every rank gets
    the same Report (the model must be the same on every rank: DDP keeps it so).

    rank / world default to the initialised process group's; outside one this is `evaluator.run`.
    A failure on any rank (e.g. NaN scores) is raised on every rank, so none waits forever.
    """
    if rank is None or world is None:
        rank, world = rank_and_world()
    if world == 1:
        return evaluator.run(model, name=name, keep_ranks=keep_ranks)
    es, dev, bs = evaluator.evalset, evaluator.device, evaluator.batch_size
    n_events = len(es)
    negatives = evaluator.negatives()  # drawn from a fixed seed: the same array on every rank
    mine = block_starts(n_events, bs)[rank::world]
    targets = torch.from_numpy(es.target.astype(np.int64)).to(dev)  # [E]
    mask_rows = torch.from_numpy(evaluator._mask_rows).to(dev)  # [M] global event index
    mask_items = torch.from_numpy(evaluator._mask_items).to(dev)  # [M]
    local, s_local = [], []
    is_module = isinstance(model, nn.Module)
    was_training = bool(model.training) if is_module else False
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        if is_module:
            model.eval()
        with torch.no_grad():
            for lo in mine:
                hi = min(n_events, lo + bs)
                batch = eval_batch(es, np.arange(lo, hi), evaluator.max_len).to(dev)
                scores = model.score(batch)  # [B, n_items + 1]
                where = f"batch {lo // bs} (events {lo}..{hi - 1}) of evaluation '{name}' on rank {rank}"
                evaluator._check_scores(scores, hi - lo, where)
                a, z = int(evaluator._mask_offsets[lo]), int(evaluator._mask_offsets[hi])
                r, t_score = _rank_chunk(scores, targets[lo:hi], mask_rows[a:z] - lo, mask_items[a:z])  # [B]
                local.append(r.cpu())
                if negatives is not None:
                    neg = torch.from_numpy(negatives[lo:hi]).to(dev)  # [B, n]
                    s_local.append(sampled_ranks(scores, t_score, neg).cpu())
    except Exception as exc:  # noqa: BLE001 - re-raised below on every rank, once all know of it
        error = exc
    finally:
        if is_module and was_training:
            model.train()
    if any_rank(error is not None):
        if error is not None:
            raise error
        raise RuntimeError(f"evaluation '{name}' failed on another rank; see that rank's error")
    counts = [len(events_of_rank(n_events, bs, r, world)) for r in range(world)]
    ranks = _gather(local, counts, n_events, bs, world)
    s_ranks = _gather(s_local, counts, n_events, bs, world) if negatives is not None else None
    wall = time.perf_counter() - start
    report = evaluator._report(model, name, ranks, s_ranks, wall, len(block_starts(n_events, bs)), keep_ranks)
    report.meta["distributed"] = {"world_size": world,
                                  "sharding": "score blocks of batch_size events, round-robin over ranks"}
    return report


def _gather(local: list[torch.Tensor], counts: list[int], n_events: int, bs: int, world: int) -> torch.Tensor:
    """[E] int64 ranks in original event order from every rank's blocks."""
    mine = torch.cat(local) if local else torch.zeros(0, dtype=torch.int64)  # [n_r]
    parts = all_gather_rows(mine, counts)
    out = torch.empty(n_events, dtype=torch.int64)  # [E]
    for r, part in enumerate(parts):
        out[torch.from_numpy(events_of_rank(n_events, bs, r, world))] = part
    return out

"""Evaluation sharded over the ranks of a process group, giving the single-process Report.

The Evaluator already cuts the events into score blocks of `batch_size` events (blocks [0, b),
[b, 2b), ...). Rank r scores blocks r, r + W, r + 2W, ... -- exactly the blocks, with exactly the
same rows, that a single process would score -- so every score, and hence every pessimistic rank, is
the one single-process evaluation computes, whatever the world size. The per-event ranks are then
all-gathered and put back in original event order, and the Report is built from them by the
evaluator itself, so metrics, groups and counts are identical on every rank and to `Evaluator.run`.

Both paths rank through `Evaluator.rank_blocks` (the shared ranking core) and report through
`Evaluator.report`; tests/distributed checks the two against each other.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from modalrec.evaluation.evaluator import Evaluator
from modalrec.evaluation.report import Report
from modalrec.parallel import all_gather_rows, any_rank, rank_and_world
from modalrec.types import Scorer

log = logging.getLogger(__name__)


def events_of_rank(n_events: int, batch_size: int, rank: int, world: int) -> np.ndarray:
    """[n_r] event indices rank `rank` scores: its blocks (round-robin), in order."""
    starts = range(rank * batch_size, n_events, world * batch_size)
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
    n_events, bs = len(evaluator.evalset), evaluator.batch_size
    local: list[torch.Tensor] = []
    s_local: list[torch.Tensor] = []
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        local, s_local = evaluator.rank_blocks(model, evaluator.block_starts()[rank::world], name,
                                               where=f" on rank {rank}")
    except Exception as exc:  # noqa: BLE001 - re-raised below on every rank, once all know of it
        error = exc
    if any_rank(error is not None):
        if error is not None:
            raise error
        raise RuntimeError(f"evaluation '{name}' failed on another rank; see that rank's error")
    counts = [len(events_of_rank(n_events, bs, r, world)) for r in range(world)]
    ranks = _gather(local, counts, n_events, bs, world)
    s_ranks = _gather(s_local, counts, n_events, bs, world) if evaluator.sampled is not None else None
    wall = time.perf_counter() - start
    report = evaluator.report(model, name, ranks, s_ranks, wall, len(evaluator.block_starts()), keep_ranks)
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

"""Tiny synthetic data for the sequence-model tests (plain module, importable from tests/models)."""

from __future__ import annotations

import numpy as np
import torch

from modalrec.data.interactions import Interactions
from modalrec.data.splits import Split, leave_one_out
from modalrec.models.base import ModelContext
from modalrec.types import SeqBatch


def cyclic_interactions(
    n_items: int = 30, n_users: int = 60, min_len: int = 8, max_len: int = 16, seed: int = 0
) -> Interactions:
    """Planted pattern: every user walks the catalogue in order, item i is followed by item i % n + 1."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(1, n_users + 1):
        start, length = int(rng.integers(1, n_items + 1)), int(rng.integers(min_len, max_len + 1))
        users += [u] * length
        items += [(start - 1 + t) % n_items + 1 for t in range(length)]
    ts = np.arange(len(users))
    return Interactions.from_arrays(np.array(users), np.array(items), ts, n_users=n_users, n_items=n_items)


def cyclic_split(**kw: int) -> Split:
    return leave_one_out(cyclic_interactions(**kw))


def context(split: Split, seed: int = 0) -> ModelContext:
    return ModelContext.for_split(split, seed=seed)


def random_batch(n_items: int, batch: int = 5, length: int = 8, seed: int = 0) -> SeqBatch:
    """Left-padded random histories of varied length (row 0 empty, last row full) with [B, L] targets."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (batch, length), generator=g)  # [B, L]
    lengths = torch.linspace(0, length, batch).round().long()  # [B] 0 .. L
    pad = torch.arange(length)[None, :] < (length - lengths)[:, None]  # [B, L] leading PADs
    items = items.masked_fill(pad, 0)
    targets = torch.randint(1, n_items + 1, (batch, length), generator=g).masked_fill(pad, 0)  # [B, L]
    return SeqBatch(items=items, targets=targets, users=torch.arange(batch))


def evaluate(model: object, split: Split, max_len: int = 10, part: str = "valid") -> object:
    from modalrec.evaluation.evaluator import Evaluator

    evalset = split.valid if part == "valid" else split.test
    return Evaluator(evalset, split.n_items, ks=(1, 10), max_len=max_len).run(model, name=part)


def train_adam(model: torch.nn.Module, windows: object, epochs: int, lr: float, batch_size: int = 32) -> None:
    """A plain Adam loop over `windows.batches` (the same batches every run), then eval mode: for tests that
    check what a model learns, not how the trainer runs."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(epochs):
        for batch in windows.batches(batch_size, seed=0, epoch=epoch):
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
    model.eval()


class ScoreOnly:
    """`model` seen through `score` alone (no dot-product or item-bias contract): the evaluator ranks a
    materialised score block, the reference its fused table path must match."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.score(batch, items)

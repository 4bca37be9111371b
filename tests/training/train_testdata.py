"""Helpers for the training-loop tests (plain module, importable from tests/training)."""

from __future__ import annotations

import numpy as np

from modalrec.data.interactions import Interactions
from modalrec.data.splits import Split, leave_one_out
from modalrec.models.base import ModelContext


def cyclic_split(n_items: int = 30, n_users: int = 60, seed: int = 0) -> Split:
    """Planted pattern (item i is followed by i % n + 1), split leave-one-out."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(1, n_users + 1):
        start, length = int(rng.integers(1, n_items + 1)), int(rng.integers(8, 17))
        users += [u] * length
        items += [(start - 1 + t) % n_items + 1 for t in range(length)]
    inter = Interactions.from_arrays(
        np.array(users), np.array(items), np.arange(len(users)), n_users=n_users, n_items=n_items
    )
    return leave_one_out(inter)


def context(split: Split, seed: int = 0) -> ModelContext:
    return ModelContext.for_split(split, seed=seed)

"""Helpers for the training-loop tests (plain module, importable from tests/training)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from modalrec.data.interactions import Interactions
from modalrec.data.splits import Split, leave_one_out
from modalrec.models.base import ModelContext


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP stalls."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
    return ModelContext(
        n_items=split.n_items,
        n_users=split.n_users,
        train_item_counts=split.train.item_counts(),
        seed=seed,
    )

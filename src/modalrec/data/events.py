"""Chronological event streams for temporal graph models.

`EventStream` holds events in time order (ties: original row order for Interactions, EvalSet order —
i.e. user index — for evaluation sets) and yields `EventBatch`es. Training batches carry random
negatives drawn from a `torch.Generator` derived from (seed, epoch), so `EventStream` can be handed to
the shared training loop (`batches(batch_size, seed, epoch)` / `num_batches(batch_size)`); batches are
never shuffled, because a temporal model must see events in order.

Negatives:
- random: uniform over items 1..n_items other than the event's own item;
- historical: an item the same user interacted with *earlier* (an edge that existed in the past but is
  not the current one, after Poursafaei et al. 2022); events whose user has no such item fall back to a
  random negative and are counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from modalrec.data.interactions import Interactions, concat_ranges
from modalrec.data.splits import EvalSet, group_masks
from modalrec.seeding import torch_generator
from modalrec.types import EventBatch


def random_negatives(pos: torch.Tensor, n_items: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """[B] positives -> [B, n] items drawn uniformly from 1..n_items minus the positive."""
    if n_items < 2:
        raise ValueError("negative sampling needs at least 2 items")
    r = torch.randint(1, n_items, (pos.shape[0], n), generator=gen)  # [B, n] offsets 1..n_items-1
    return (pos.unsqueeze(1) - 1 + r) % n_items + 1  # never equals pos


@dataclass(frozen=True)
class EventStream:
    """Events sorted by time. `hist_*` (from an EvalSet) give each event's earlier items of its user."""

    users: np.ndarray  # [E] int64
    items: np.ndarray  # [E] int64
    ts: np.ndarray  # [E] int64
    n_items: int
    source_index: np.ndarray  # [E] position of the event in its source (Interactions arrays / EvalSet)
    hist_offsets: np.ndarray | None = None  # [E + 1]
    hist_items: np.ndarray | None = None  # [H]
    cold_item: np.ndarray | None = None  # [E] bool
    cold_user: np.ndarray | None = None  # [E] bool
    n_negatives: int = 1  # random negatives per event in `batches`

    @classmethod
    def from_interactions(cls, inter: Interactions, n_negatives: int = 1) -> EventStream:
        order = np.lexsort((inter.row, inter.ts))  # time, then original file order
        return cls(inter.user[order], inter.item[order], inter.ts[order], inter.n_items, order, n_negatives=n_negatives)

    @classmethod
    def from_evalset(cls, es: EvalSet, n_items: int) -> EventStream:
        order = np.argsort(es.ts, kind="stable")  # EvalSet is (user, ts, row)-sorted: ties keep user order
        starts = es.hist_offsets[order]
        lengths = es.hist_offsets[order + 1] - starts
        offsets = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(
            es.user[order], es.target[order], es.ts[order], int(n_items), order, offsets,
            es.hist_items[concat_ranges(starts, lengths)], es.cold_item[order], es.cold_user[order],
        )

    def __len__(self) -> int:
        return len(self.users)

    def with_negatives(self, n: int) -> EventStream:
        return replace(self, n_negatives=int(n))

    def spans(self, batch_size: int) -> Iterator[tuple[int, int]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for lo in range(0, len(self), batch_size):
            yield lo, min(lo + batch_size, len(self))

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size

    def batch(self, lo: int, hi: int, negatives: torch.Tensor | None = None) -> EventBatch:
        return EventBatch(
            users=torch.from_numpy(self.users[lo:hi].copy()),
            items=torch.from_numpy(self.items[lo:hi].copy()),
            ts=torch.from_numpy(self.ts[lo:hi].copy()),
            negatives=negatives,
        )

    def batches(self, batch_size: int, seed: int = 0, epoch: int = 0, shuffle: bool = False) -> Iterator[EventBatch]:
        """Chronological training batches with `n_negatives` random negatives each ([B, n]).
        `shuffle` is accepted for loop compatibility and must stay False (order is the signal)."""
        if shuffle:
            raise ValueError("EventStream batches are chronological; shuffling would leak the future")
        gen = torch_generator(seed, f"events/negatives/epoch{epoch}")
        for lo, hi in self.spans(batch_size):
            b = self.batch(lo, hi)
            b.negatives = random_negatives(b.items, self.n_items, self.n_negatives, gen)
            yield b

    def historical_negatives(
        self, lo: int, hi: int, n: int, gen: torch.Generator, tries: int = 4
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, n] negatives from each user's earlier items (never the positive) and a [B, n] bool mask of
        draws that fell back to random because no such item was found."""
        if self.hist_offsets is None or self.hist_items is None:
            raise ValueError("historical negatives need user histories (build the stream with from_evalset)")
        start = torch.from_numpy(self.hist_offsets[lo:hi]).unsqueeze(1)  # [B, 1]
        length = torch.from_numpy(self.hist_offsets[lo + 1 : hi + 1]).unsqueeze(1) - start  # [B, 1]
        pos = torch.from_numpy(self.items[lo:hi]).unsqueeze(1)  # [B, 1]
        hist = torch.from_numpy(self.hist_items)
        out = torch.zeros(hi - lo, n, dtype=torch.int64)
        found = torch.zeros(hi - lo, n, dtype=torch.bool)
        for _ in range(tries):  # rejection of draws equal to the positive (repeat consumption)
            r = torch.rand(hi - lo, n, generator=gen, dtype=torch.float64)
            idx = (start + (r * length).long()).clamp(max=max(len(hist) - 1, 0))  # [B, n]
            cand = hist[idx] if len(hist) else out
            ok = (length > 0) & (cand != pos) & ~found
            out = torch.where(ok, cand, out)
            found |= ok
        fallback = random_negatives(pos.squeeze(1), self.n_items, n, gen)
        return torch.where(found, out, fallback), ~found

    def history_mask(self, lo: int, hi: int) -> torch.Tensor:
        """[B, n_items + 1] bool: True where the item is in the user's earlier history (to exclude)."""
        if self.hist_offsets is None or self.hist_items is None:
            raise ValueError("exclude_seen needs user histories (build the stream with from_evalset)")
        starts = self.hist_offsets[lo:hi]
        lengths = self.hist_offsets[lo + 1 : hi + 1] - starts
        rows = np.repeat(np.arange(hi - lo), lengths)
        mask = torch.zeros(hi - lo, self.n_items + 1, dtype=torch.bool)
        mask[torch.from_numpy(rows), torch.from_numpy(self.hist_items[concat_ranges(starts, lengths)])] = True
        return mask

    def group_masks(self) -> dict[str, np.ndarray]:
        """overall; with cold tags also transductive (user and item seen in training) and inductive (new user
        or new item), the temporal-graph literature's names; with histories too, every group of the Evaluator
        (splits.GROUP_DEFINITIONS: warm = transductive, cold, repeat / novel, history buckets)."""
        out = {"overall": np.ones(len(self), dtype=bool)}
        if self.cold_item is not None and self.cold_user is not None:
            out["transductive"] = ~self.cold_item & ~self.cold_user
            out["inductive"] = self.cold_item | self.cold_user
            if self.hist_offsets is not None and self.hist_items is not None:
                out.update(group_masks(self.items, self.hist_offsets, self.hist_items, self.cold_item, self.cold_user))
            else:
                out["cold_item"] = self.cold_item.copy()
                out["cold_user"] = self.cold_user.copy()
        return out

"""Interactions: parallel int arrays (user, item, ts, row) stably sorted by (user, ts, row), plus CSR offsets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interactions:
    """User-item events. Indices come from vocabularies (0 = PAD is never a real user or item).

    Invariant: arrays are sorted by (user, ts, row) and `offsets[u]:offsets[u + 1]` is user u's
    chronological sequence. `row` is the event's position in the original file, so ties in time
    keep file order and any subset can be traced back to its source line.
    """

    user: np.ndarray  # [E] int64, 1..n_users
    item: np.ndarray  # [E] int64, 1..n_items
    ts: np.ndarray  # [E] int64 (unix seconds, or order when the source has no clock)
    row: np.ndarray  # [E] int64 original row order
    n_users: int  # number of real users (vocabulary size without PAD)
    n_items: int  # number of real items
    offsets: np.ndarray  # [n_users + 2] int64 CSR offsets indexed by user index

    @classmethod
    def from_arrays(
        cls,
        user: np.ndarray,
        item: np.ndarray,
        ts: np.ndarray | None = None,
        row: np.ndarray | None = None,
        *,
        n_users: int,
        n_items: int,
    ) -> Interactions:
        user = np.asarray(user, dtype=np.int64)
        item = np.asarray(item, dtype=np.int64)
        n = len(user)
        ts = np.arange(n, dtype=np.int64) if ts is None else np.asarray(ts, dtype=np.int64)
        row = np.arange(n, dtype=np.int64) if row is None else np.asarray(row, dtype=np.int64)
        if not (len(item) == len(ts) == len(row) == n):
            raise ValueError("user, item, ts and row must have the same length")
        if n and (user.min() < 1 or user.max() > n_users):
            raise ValueError(f"user indices must lie in 1..{n_users}")
        if n and (item.min() < 1 or item.max() > n_items):
            raise ValueError(f"item indices must lie in 1..{n_items}")
        order = np.lexsort((row, ts, user))  # last key is primary
        user, item, ts, row = user[order], item[order], ts[order], row[order]
        counts = np.bincount(user, minlength=n_users + 1)
        offsets = np.zeros(n_users + 2, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(user, item, ts, row, int(n_users), int(n_items), offsets)

    def __len__(self) -> int:
        return len(self.user)

    def sequence(self, u: int) -> np.ndarray:
        return self.item[self.offsets[u] : self.offsets[u + 1]]

    def seq_lengths(self) -> np.ndarray:
        """[n_users + 1] number of events per user index (0 for PAD)."""
        return np.diff(self.offsets)

    def subset(self, mask: np.ndarray) -> Interactions:
        """Events where `mask` is True; order and index spaces are preserved."""
        mask = np.asarray(mask, dtype=bool)
        return Interactions.from_arrays(
            self.user[mask], self.item[mask], self.ts[mask], self.row[mask], n_users=self.n_users, n_items=self.n_items
        )

    def item_counts(self) -> np.ndarray:
        """[n_items + 1] number of events per item index (0 for PAD)."""
        return np.bincount(self.item, minlength=self.n_items + 1).astype(np.int64)

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        """(item [T], ts [T]) of the events a next-item model is trained to predict: all but each user's first."""
        keep = self.position_in_user() > 0
        return self.item[keep], self.ts[keep]

    def position_in_user(self) -> np.ndarray:
        """[E] 0-based position of each event inside its user's sequence."""
        return np.arange(len(self.user), dtype=np.int64) - self.offsets[self.user]

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for arr in (self.user, self.item, self.ts):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l), vectorised: the rows of CSR slices."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total, dtype=np.int64) - offsets)

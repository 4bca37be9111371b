"""Train / valid / test splits with exact cold-start tags.

Every evaluation event is predicted from its user's *full* preceding history (all earlier events of
that user, whichever part of the split they belong to) — the model is never trained on them, but a
deployed recommender would have seen them as context. Training uses `Split.train` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modalrec.data.interactions import Interactions, concat_ranges
from modalrec.seeding import numpy_rng

COLD_GROUPS = ("warm", "cold_item", "cold_user")
REPEAT_GROUPS = ("repeat", "novel")
# (name, fewest, most) earlier events of the user before the evaluated event; most None = no bound.
HISTORY_BUCKETS = (("hist_0", 0, 0), ("hist_1", 1, 1), ("hist_2-4", 2, 4), ("hist_5-19", 5, 19), ("hist_20+", 20, None))
GROUPS = COLD_GROUPS + REPEAT_GROUPS + tuple(name for name, _, _ in HISTORY_BUCKETS)
GROUP_DEFINITIONS = (
    "warm = target seen in training and user has training events; cold_item = target unseen in training; "
    "cold_user = user without training events (cold groups may overlap); repeat = target already in the user's "
    "history (kept rankable even when history is masked), novel = not repeat; hist_A-B = the user has A..B "
    "earlier events before the evaluated one"
)


def repeat_mask(target: np.ndarray, hist_offsets: np.ndarray, hist_items: np.ndarray) -> np.ndarray:
    """[E] bool: event e's target occurs in its history hist_items[hist_offsets[e]:hist_offsets[e + 1]]."""
    lengths = np.diff(hist_offsets)
    owner = np.repeat(np.arange(len(target), dtype=np.int64), lengths)  # [H] event of each history entry
    repeat = np.zeros(len(target), dtype=bool)
    repeat[owner[hist_items == target[owner]]] = True
    return repeat


def group_masks(target: np.ndarray, hist_offsets: np.ndarray, hist_items: np.ndarray, cold_item: np.ndarray,
                cold_user: np.ndarray) -> dict[str, np.ndarray]:
    """Every group of GROUP_DEFINITIONS for events given as arrays (an EvalSet's, or the same events in time
    order for streaming evaluation). warm = neither cold; cold_item and cold_user may overlap; repeat / novel
    and the history buckets each partition the events."""
    repeat, lengths = repeat_mask(target, hist_offsets, hist_items), np.diff(hist_offsets)
    masks = {
        "warm": ~cold_item & ~cold_user,
        "cold_item": cold_item.copy(),
        "cold_user": cold_user.copy(),
        "repeat": repeat,
        "novel": ~repeat,
    }
    for name, lo, hi in HISTORY_BUCKETS:
        masks[name] = (lengths >= lo) & (lengths <= (hi if hi is not None else np.iinfo(np.int64).max))
    return masks


@dataclass(frozen=True)
class EvalSet:
    """Events to rank. Event e is (user[e], target[e] at ts[e]) with history
    hist_items[hist_offsets[e]:hist_offsets[e + 1]] (chronological, oldest first)."""

    user: np.ndarray  # [E] int64
    target: np.ndarray  # [E] int64
    ts: np.ndarray  # [E] int64
    hist_offsets: np.ndarray  # [E + 1] int64
    hist_items: np.ndarray  # [H] int64
    hist_ts: np.ndarray  # [H] int64
    cold_item: np.ndarray  # [E] bool: target never appears in training
    cold_user: np.ndarray  # [E] bool: user has no training event

    def __len__(self) -> int:
        return len(self.user)

    def history(self, e: int) -> np.ndarray:
        return self.hist_items[self.hist_offsets[e] : self.hist_offsets[e + 1]]

    def history_lengths(self) -> np.ndarray:  # [E] int64 earlier events per evaluated event
        return np.diff(self.hist_offsets)

    def repeat_mask(self) -> np.ndarray:
        """[E] bool: the target already occurs in the event's history (a repeat consumption)."""
        return repeat_mask(self.target, self.hist_offsets, self.hist_items)

    def group_masks(self) -> dict[str, np.ndarray]:
        """Every group of GROUP_DEFINITIONS (see `group_masks`)."""
        return group_masks(self.target, self.hist_offsets, self.hist_items, self.cold_item, self.cold_user)

    def subset(self, mask: np.ndarray) -> EvalSet:
        idx = np.flatnonzero(mask)
        starts, ends = self.hist_offsets[idx], self.hist_offsets[idx + 1]
        lengths = ends - starts
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = concat_ranges(starts, lengths)
        return EvalSet(
            self.user[idx], self.target[idx], self.ts[idx], offsets, self.hist_items[gather],
            self.hist_ts[gather], self.cold_item[idx], self.cold_user[idx],
        )


@dataclass(frozen=True)
class Split:
    name: str
    train: Interactions
    valid: EvalSet
    test: EvalSet
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return self.train.n_items

    @property
    def n_users(self) -> int:
        return self.train.n_users

    def train_item_mask(self) -> np.ndarray:
        """[n_items + 1] bool: items that occur in training."""
        return self.train.item_counts() > 0

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, **self.params, "train_events": len(self.train)}
        for part, es in (("valid", self.valid), ("test", self.test)):
            masks = es.group_masks()
            out[part] = {"events": len(es), **{g: int(m.sum()) for g, m in masks.items()}}
        return out


def make_evalset(inter: Interactions, event_mask: np.ndarray, train: Interactions) -> EvalSet:
    """Evaluation events = events of `inter` where `event_mask`; history = the user's earlier events in `inter`."""
    idx = np.flatnonzero(event_mask)
    pos = inter.position_in_user()[idx]  # number of earlier events of the same user
    starts = inter.offsets[inter.user[idx]]
    offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(pos, out=offsets[1:])
    gather = concat_ranges(starts, pos)
    seen_items = train.item_counts() > 0
    seen_users = train.seq_lengths() > 0
    return EvalSet(
        user=inter.user[idx].copy(),
        target=inter.item[idx].copy(),
        ts=inter.ts[idx].copy(),
        hist_offsets=offsets,
        hist_items=inter.item[gather],
        hist_ts=inter.ts[gather],
        cold_item=~seen_items[inter.item[idx]],
        cold_user=~seen_users[inter.user[idx]],
    )


def leave_one_out(inter: Interactions, min_len: int = 3) -> Split:
    """Last event of each user = test, second last = valid, the rest = train.

    Users with fewer than `min_len` events contribute only training events (they cannot be evaluated
    without an empty training prefix); the count is recorded in `params`.
    """
    lengths = inter.seq_lengths()[inter.user]
    pos = inter.position_in_user()
    evaluable = lengths >= min_len
    test_mask = evaluable & (pos == lengths - 1)
    valid_mask = evaluable & (pos == lengths - 2)
    train = inter.subset(~test_mask & ~valid_mask)
    short_users = int((inter.seq_lengths()[1:] < min_len).sum())
    return Split(
        "leave_one_out", train, make_evalset(inter, valid_mask, train), make_evalset(inter, test_mask, train),
        {"min_len": min_len, "users_too_short": short_users},
    )


def from_presplit(inter: Interactions, valid_rows: np.ndarray, test_rows: np.ndarray, name: str = "presplit") -> Split:
    """Use split assignments shipped with the data, given as original row numbers."""
    valid_mask = np.isin(inter.row, valid_rows)
    test_mask = np.isin(inter.row, test_rows)
    train = inter.subset(~valid_mask & ~test_mask)
    return Split(name, train, make_evalset(inter, valid_mask, train), make_evalset(inter, test_mask, train), {})


def global_temporal(inter: Interactions, ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> Split:
    """Chronological split of the whole log: the first 70% of events (by ts, then row) train, the next 15%
    validate, the last 15% test. Valid/test events are tagged cold-item / cold-user against training."""
    if abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
        raise ValueError(f"ratios must be non-negative and sum to 1, got {ratios}")
    order = np.lexsort((inter.row, inter.ts))
    n = len(order)
    n_train = round(ratios[0] * n)
    n_valid = round(ratios[1] * n)
    part = np.empty(n, dtype=np.int8)
    part[order[:n_train]] = 0
    part[order[n_train : n_train + n_valid]] = 1
    part[order[n_train + n_valid :]] = 2
    train = inter.subset(part == 0)
    cut_ts = (int(inter.ts[order[n_train]]) if n_train < n else None)
    return Split(
        "global_temporal", train, make_evalset(inter, part == 1, train), make_evalset(inter, part == 2, train),
        {"ratios": list(ratios), "train_end_ts": cut_ts},
    )


def cold_items(split: Split, fraction: float = 0.1, seed: int = 0) -> Split:
    """Remove a random `fraction` of items from training entirely (new items, as in the MMSR study).

    Their events vanish from `train`; valid/test events whose target is such an item are tagged
    cold_item. Histories are unchanged (a new item may appear as context once it exists).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    rng = numpy_rng(seed, "cold_items")
    present = np.flatnonzero(split.train.item_counts() > 0)
    n_cold = round(fraction * len(present))
    cold = np.zeros(split.n_items + 1, dtype=bool)
    cold[rng.choice(present, size=n_cold, replace=False)] = True
    train = split.train.subset(~cold[split.train.item])
    seen_users = train.seq_lengths() > 0

    def retag(es: EvalSet) -> EvalSet:
        return EvalSet(
            es.user, es.target, es.ts, es.hist_offsets, es.hist_items, es.hist_ts,
            es.cold_item | cold[es.target], ~seen_users[es.user],
        )

    return Split(
        f"{split.name}+cold_items", train, retag(split.valid), retag(split.test),
        {**split.params, "cold_item_fraction": fraction, "cold_item_seed": seed, "cold_items": int(n_cold)},
    )

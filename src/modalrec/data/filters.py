"""Dataset filters: exact-duplicate removal, k-core and maximum sequence length. Each returns a new Dataset whose user and item
vocabularies are compacted (ids that lost all their events are dropped, the others keep their relative
order and are re-indexed 1..n) and appends a record of what it did, with counts before and after, to
`summary["filters"]`. Catalogue items that had no events to begin with (kept by a loader's
`keep_unused_items`, or a generator's not-yet-seen items) stay, except under k-core with item_k > 0.
Anything indexed by the old item indices (feature stores, latent attributes) must be rebuilt or
re-indexed after filtering.

Rating thresholds are not here: a Dataset keeps no ratings, so every loader that reads ratings takes
`min_rating=` and applies it before building vocabularies, recording
`{"filter": "rating", "min_rating": ...}` as the first entry of `summary["filters"]`.

Filters keep original row numbers, so pre-split assignments (`Dataset.presplit`) stay valid for the
events that survive; events of the pre-split valid/test sets that a filter removes are counted in the
record ("presplit_rows_removed").
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.interactions import Interactions
from modalrec.data.items import ItemTable
from modalrec.data.sources.common import counts_of
from modalrec.data.vocab import Vocabulary
from modalrec.errors import DataError


def k_core(ds: Dataset, user_k: int = 5, item_k: int = 5, max_iter: int = 1000) -> Dataset:
    """Keep the largest sub-log where every user has >= user_k and every item >= item_k events.

    Removal is repeated until stable (dropping an item can push a user under user_k and vice versa).
    """
    if user_k < 0 or item_k < 0:
        raise ValueError(f"user_k and item_k must be >= 0, got {user_k}, {item_k}")
    inter = ds.interactions
    keep = np.ones(len(inter), dtype=bool)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        u_counts = np.bincount(inter.user[keep], minlength=inter.n_users + 1)  # [n_users + 1]
        i_counts = np.bincount(inter.item[keep], minlength=inter.n_items + 1)  # [n_items + 1]
        new = keep & (u_counts[inter.user] >= user_k) & (i_counts[inter.item] >= item_k)
        if new.sum() == keep.sum():
            break
        keep = new
    else:
        raise DataError(f"k-core did not converge in {max_iter} iterations")
    record = {"filter": "k_core", "user_k": int(user_k), "item_k": int(item_k), "iterations": iterations}
    return _compact(ds, keep, record, keep_idle_users=user_k == 0, keep_idle_items=item_k == 0)


def truncate_max_len(ds: Dataset, max_len: int) -> Dataset:
    """Keep the last `max_len` events of each user (by (ts, row) order)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    inter = ds.interactions
    from_end = inter.offsets[inter.user + 1] - 1 - np.arange(len(inter), dtype=np.int64)  # [E] 0 = last event
    return _compact(ds, from_end < max_len, {"filter": "max_len", "max_len": int(max_len)})


def dedupe(ds: Dataset) -> Dataset:
    """Collapse exact duplicate events (same user, item and timestamp) to their first row.

    Logs that write one row per unit bought repeat (user, item, time); left in, a model is scored on
    predicting the item it was just shown, and an untrained ID embedding "matches" itself. The record
    counts the removed rows (also in summary["duplicate_events_removed"]); no id loses all its events.
    """
    inter = ds.interactions  # sorted by (user, ts, row): duplicates are adjacent once sorted by item too
    order = np.lexsort((inter.row, inter.item, inter.ts, inter.user))
    u, i, t = inter.user[order], inter.item[order], inter.ts[order]
    dup_sorted = np.zeros(len(order), dtype=bool)
    dup_sorted[1:] = (u[1:] == u[:-1]) & (i[1:] == i[:-1]) & (t[1:] == t[:-1])
    n_dup = int(dup_sorted.sum())
    if n_dup == 0:
        summary = copy.deepcopy(ds.summary)
        summary.setdefault("filters", []).append({"filter": "dedupe", "key": ["user", "item", "time"], "removed": 0})
        summary["duplicate_events_removed"] = summary.get("duplicate_events_removed", 0)
        return Dataset(ds.name, inter, ds.items, ds.user_vocab, summary, ds.presplit)
    keep = np.ones(len(inter), dtype=bool)
    keep[order[dup_sorted]] = False
    out = _compact(ds, keep, {"filter": "dedupe", "key": ["user", "item", "time"], "removed": n_dup})
    out.summary["duplicate_events_removed"] = ds.summary.get("duplicate_events_removed", 0) + n_dup
    return out


def apply_filters(ds: Dataset, *, dedupe_events: bool = False, user_k: int = 0, item_k: int = 0,
                  max_len: int | None = None) -> Dataset:
    """Exact-duplicate removal (when `dedupe_events`), k-core (when either k > 0), then max-length
    truncation (when given): the order RecBole-style pipelines use, so the k-core counts refer to the full
    histories."""
    if dedupe_events:
        ds = dedupe(ds)
    if user_k > 0 or item_k > 0:
        ds = k_core(ds, user_k, item_k)
    if max_len is not None:
        ds = truncate_max_len(ds, max_len)
    return ds


def _compact(
    ds: Dataset, keep: np.ndarray, record: dict[str, Any], *, keep_idle_users: bool = True,
    keep_idle_items: bool = True,
) -> Dataset:
    """Events where `keep`; users / items that lose all their events are dropped, the rest re-indexed in
    order. "Idle" ids (no events even before the filter) are kept when `keep_idle_*`."""
    inter = ds.interactions
    if not keep.any():
        raise DataError(f"filter {record} removed every interaction")
    before = counts_of(inter)
    u_alive = np.bincount(inter.user[keep], minlength=inter.n_users + 1) > 0  # [n_users + 1]
    i_alive = np.bincount(inter.item[keep], minlength=inter.n_items + 1) > 0  # [n_items + 1]
    if keep_idle_users:
        u_alive |= inter.seq_lengths() == 0
    if keep_idle_items:
        i_alive |= inter.item_counts() == 0
    u_alive[0] = i_alive[0] = False
    u_map = np.zeros(inter.n_users + 1, dtype=np.int64)
    u_map[u_alive] = np.arange(1, int(u_alive.sum()) + 1)
    i_map = np.zeros(inter.n_items + 1, dtype=np.int64)
    i_map[i_alive] = np.arange(1, int(i_alive.sum()) + 1)
    new_inter = Interactions.from_arrays(
        u_map[inter.user[keep]], i_map[inter.item[keep]], inter.ts[keep], inter.row[keep],
        n_users=int(u_alive.sum()), n_items=int(i_alive.sum()),
    )
    user_ids, item_ids = np.flatnonzero(u_alive), np.flatnonzero(i_alive)
    user_vocab = Vocabulary([ds.user_vocab.raw(int(i)) for i in user_ids], name=ds.user_vocab.name)
    items = _take_items(ds.items, item_ids)
    presplit = None
    if ds.presplit is not None:
        presplit = dict(ds.presplit)
        removed = 0
        for key in ("valid_rows", "test_rows"):
            rows = np.asarray(ds.presplit[key], dtype=np.int64)
            kept = rows[np.isin(rows, new_inter.row)]
            removed += len(rows) - len(kept)
            presplit[key] = kept
        record["presplit_rows_removed"] = removed
    summary = copy.deepcopy(ds.summary)
    record["before"], record["after"] = before, counts_of(new_inter)
    summary.setdefault("filters", []).append(record)
    summary["counts"] = {**record["after"], "vocab_items": items.vocab.size}
    fields = summary.get("text_fields", list(items.fields))
    summary["items_with_text"] = sum(any(items.fields[f][i] for f in fields if f in items.fields)
                                     for i in range(1, len(items.vocab)))
    summary["items_with_image"] = sum(p is not None for p in items.image_paths)
    summary["items_with_launch_time"] = sum(t is not None for t in items.launch_ts)
    return Dataset(ds.name, new_inter, items, user_vocab, summary, presplit)


def _take_items(table: ItemTable, item_ids: np.ndarray) -> ItemTable:
    """The rows `item_ids` (old indices, ascending) of an item table, PAD row first."""
    idx = [0, *(int(i) for i in item_ids)]
    vocab = Vocabulary([table.vocab.raw(i) for i in idx[1:]], name=table.vocab.name)
    fields = {name: [values[i] for i in idx] for name, values in table.fields.items()}
    images = [table.image_paths[i] for i in idx]
    return ItemTable(vocab, fields, images, table.image_root, [table.launch_ts[i] for i in idx])

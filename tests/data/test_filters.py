"""Filters: k-core against a naive reference, max-length truncation, compaction, summary records."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.data.dataset import Dataset
from modalrec.data.filters import apply_filters, k_core, truncate_max_len
from modalrec.data.sources.common import RawEvents, build_dataset
from modalrec.data.splits import from_presplit
from modalrec.errors import DataError


def make(users: list[str], items: list[str], ts: list[int] | None = None, **kw: object) -> Dataset:
    records = {i: {"title": f"title {i}"} for i in sorted(set(items) | set(kw.pop("extra_items", [])))}  # type: ignore[arg-type]
    ev = RawEvents(np.asarray(users), np.asarray(items), ts=None if ts is None else np.asarray(ts, dtype=np.int64))
    return build_dataset("toy", "test", ev, files={}, records=records, text_fields=["title"],
                         catalogue=list(records), **kw)  # type: ignore[arg-type]


def events(ds: Dataset) -> list[tuple[str, str, int]]:
    """(raw user, raw item, ts) in stored order: invariant under re-indexing."""
    inter = ds.interactions
    return [(ds.user_vocab.raw(int(u)), ds.item_vocab.raw(int(i)), int(t))
            for u, i, t in zip(inter.user, inter.item, inter.ts)]


def naive_k_core(evs: list[tuple[str, str, int]], uk: int, ik: int) -> list[tuple[str, str, int]]:
    while True:
        uc: dict[str, int] = {}
        ic: dict[str, int] = {}
        for u, i, _ in evs:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        kept = [e for e in evs if uc[e[0]] >= uk and ic[e[1]] >= ik]
        if len(kept) == len(evs):
            return kept
        evs = kept


def test_k_core_cascade() -> None:
    # item z has 1 event -> removed -> user c drops to 1 event -> removed -> item y drops to 1 -> removed
    users = ["a", "a", "b", "b", "c", "c", "d", "d"]
    items = ["x", "w", "x", "w", "y", "z", "y", "x"]
    ds = make(users, items, list(range(8)))
    out = k_core(ds, user_k=2, item_k=2)
    assert events(out) == [("a", "x", 0), ("a", "w", 1), ("b", "x", 2), ("b", "w", 3)]
    assert out.user_vocab.raw_ids == ["a", "b"] and out.item_vocab.raw_ids == ["x", "w"]  # order preserved
    assert out.items.record(out.item_vocab.index("w")) == {"title": "title w"}
    rec = out.summary["filters"][-1]
    assert rec["filter"] == "k_core" and rec["iterations"] == 5  # 4 removal passes + 1 stable pass
    assert rec["before"] == {"users": 4, "items": 4, "interactions": 8}
    assert rec["after"] == {"users": 2, "items": 2, "interactions": 4} == {
        k: v for k, v in out.summary["counts"].items() if k != "vocab_items"}
    assert ds.summary["filters"] == []  # the input is not modified


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_core_matches_naive(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 600
    users = [f"u{int(v)}" for v in rng.zipf(1.6, n) % 80]
    items = [f"i{int(v)}" for v in rng.zipf(1.4, n) % 120]
    ts = rng.integers(0, 50, n).tolist()
    ds = make(users, items, ts)
    for uk, ik in ((3, 3), (5, 2), (1, 4)):
        out = k_core(ds, uk, ik)
        assert sorted(events(out)) == sorted(naive_k_core(events(ds), uk, ik))
        counts = np.bincount(out.interactions.user)[1:], np.bincount(out.interactions.item)[1:]
        assert counts[0].min() >= uk and counts[1].min() >= ik  # no idle ids left after compaction
        assert out.n_users == len(counts[0]) and out.n_items == len(counts[1])


def test_truncate_max_len_keeps_last_events() -> None:
    ds = make(["a"] * 5 + ["b"] * 2, ["p", "q", "r", "s", "t", "p", "q"], [1, 2, 3, 3, 4, 1, 1])
    out = truncate_max_len(ds, 3)
    assert events(out) == [("a", "r", 3), ("a", "s", 3), ("a", "t", 4), ("b", "p", 1), ("b", "q", 1)]
    assert out.item_vocab.raw_ids == ["p", "q", "r", "s", "t"]  # q survives through user b
    assert out.summary["filters"][-1]["after"]["interactions"] == 5
    out1 = truncate_max_len(ds, 1)
    assert events(out1) == [("a", "t", 4), ("b", "q", 1)] and out1.item_vocab.raw_ids == ["q", "t"]
    with pytest.raises(ValueError):
        truncate_max_len(ds, 0)


def test_idle_items_kept_unless_k_core_excludes_them() -> None:
    ds = make(["a", "a", "b", "b"], ["x", "y", "x", "y"], [1, 2, 1, 2], extra_items=["new"], keep_unused_items=True)
    assert ds.item_vocab.raw_ids == ["x", "y", "new"]
    assert truncate_max_len(ds, 1).item_vocab.raw_ids == ["y", "new"]  # x lost its events; new never had any
    assert k_core(ds, user_k=2, item_k=0).item_vocab.raw_ids == ["x", "y", "new"]
    assert k_core(ds, user_k=2, item_k=1).item_vocab.raw_ids == ["x", "y"]


def test_presplit_rows_survive_filters() -> None:
    ds = make(["a"] * 4 + ["b"] * 3, ["p", "q", "r", "s", "q", "r", "s"], [0, 1, 2, 3, 0, 1, 2])
    ds.presplit = {"valid_rows": np.array([2, 5]), "test_rows": np.array([3, 6])}
    out = apply_filters(ds, max_len=3)
    split = from_presplit(out.interactions, out.presplit["valid_rows"], out.presplit["test_rows"])
    raw = lambda idx: [out.item_vocab.raw(int(i)) for i in idx]
    assert raw(split.valid.target) == ["r", "r"] and raw(split.test.target) == ["s", "s"]
    assert raw(split.train.item) == ["q", "q"] and out.summary["filters"][-1]["presplit_rows_removed"] == 0
    assert [f["filter"] for f in apply_filters(ds, user_k=4, max_len=2).summary["filters"]] == ["k_core", "max_len"]


def test_rating_threshold_recorded_then_filters_append() -> None:
    ev = RawEvents(np.array(["a", "a", "b"]), np.array(["x", "y", "x"]), ts=np.array([1, 2, 3]),
                   ratings=np.array([5.0, 2.0, 4.0]))
    ds = build_dataset("toy", "test", ev, files={}, min_rating=3)
    assert events(ds) == [("a", "x", 1), ("b", "x", 3)]
    out = k_core(ds, 1, 2)
    assert [f["filter"] for f in out.summary["filters"]] == ["rating", "k_core"]
    with pytest.raises(DataError, match="needs ratings"):
        build_dataset("toy", "test", RawEvents(ev.users, ev.items), files={}, min_rating=3)


def test_filter_removing_everything_is_an_error() -> None:
    with pytest.raises(DataError, match="removed every interaction"):
        k_core(make(["a", "b"], ["x", "y"]), 2, 2)

"""Item launch times and ages: metadata where a source has it, else first appearance — never from the future."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modalrec.data.filters import dedupe
from modalrec.data.item_age import NEVER, ItemLaunch
from modalrec.data.sources import load_movielens, load_table
from modalrec.data.sources.common import RawEvents, build_dataset
from modalrec.data.splits import global_temporal
from modalrec.pipeline import item_launch


def toy(launch: dict[str, int] | None = None):
    """Users a, b, c; item "late" first appears at ts 90 (user c), after user a's TEST event at ts 60."""
    users = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "c"]
    items = ["x", "y", "z", "x", "y", "x", "y", "z", "late", "x"]
    ts = [10, 20, 60, 11, 21, 30, 12, 22, 90, 95]
    records = {i: {"title": i, "launch_ts": (launch or {}).get(i)} for i in set(items)}
    ev = RawEvents(np.asarray(users), np.asarray(items), ts=np.asarray(ts, dtype=np.int64))
    return build_dataset("toy", "test", ev, files={}, records=records, text_fields=["title"], launch_field="launch_ts")


def test_first_appearance_is_causal() -> None:
    ds = toy()
    split = global_temporal(ds.interactions, (0.5, 0.1, 0.4))  # TEST: ts 60, 90, 95
    launch = item_launch(ds, split)
    late, x = ds.item_vocab.index("late"), ds.item_vocab.index("x")
    test = split.test
    a_event = int(np.flatnonzero(test.ts == 60)[0])
    # at user a's TEST event (ts 60) "late" has not appeared yet: unknown age, whatever the later log says
    age, known = launch.age_at(torch.tensor([late, x]), int(test.ts[a_event]))
    assert known.tolist() == [False, True] and age.tolist() == [0, 60 - 10]
    # its own event (ts 90) is not evidence of itself; the next event (ts 95) sees it, aged 5 s
    _, known_at_own = launch.age_at(late, 90)
    age_after, known_after = launch.age_at(late, 95)
    assert not bool(known_at_own) and bool(known_after) and int(age_after) == 5
    # broadcasting: items [N + 1] x queries [B, 1] -> [B, N + 1]; PAD is never known
    ages, known = launch.age_at(torch.arange(ds.n_items + 1), torch.from_numpy(test.ts)[:, None])
    assert ages.shape == known.shape == (len(test), ds.n_items + 1) and not known[:, 0].any()
    assert known[:, late].tolist() == (test.ts > 90).tolist()


def test_metadata_launch_and_pre_release_events() -> None:
    ds = toy({"late": 50, "z": 40})  # z is consumed at ts 22, before its official launch at 40
    launch = ItemLaunch.for_split(global_temporal(ds.interactions, (0.5, 0.1, 0.4)), ds.items, "unix_seconds")
    late, z, y = (ds.item_vocab.index(i) for i in ("late", "z", "y"))
    assert launch.from_metadata[[late, z, y]].tolist() == [True, True, False]
    lt, known = launch.launch_at(torch.tensor([late, z, y]), 60)
    assert known.all() and lt.tolist() == [50, 22, 12]  # metadata; earlier event; first event
    lt, known = launch.launch_at(torch.tensor([late, z]), 30)
    assert known.tolist() == [False, True] and lt.tolist() == [NEVER, 22]  # "late" not launched at ts 30


def test_order_clock_uses_metadata_only() -> None:
    ds = toy({"late": 5})
    split = global_temporal(ds.interactions, (0.5, 0.1, 0.4))
    launch = ItemLaunch.for_split(split, ds.items, "order")
    _, known = launch.launch_at(torch.arange(1, ds.n_items + 1), 1000)
    assert known.tolist() == [ds.item_vocab.raw(i) == "late" for i in range(1, ds.n_items + 1)]


def test_extended_items_launch_when_added() -> None:
    ds = toy()
    launch = item_launch(ds, global_temporal(ds.interactions, (0.5, 0.1, 0.4))).extended([200])
    new = launch.n_items
    assert int(launch.age_at(new, 260)[0]) == 60 and not bool(launch.age_at(new, 100)[1])
    table = ds.items.extended({"n1": {"title": "new"}}, launch_ts=200)
    assert table.launch_ts[-1] == 200 and ItemLaunch.from_log(table, np.zeros(0), np.zeros(0)).from_metadata[-1]


def test_dedupe_collapses_exact_duplicates() -> None:
    users = ["a", "a", "a", "a", "b"]
    items = ["x", "x", "x", "y", "x"]
    ts = [5, 5, 6, 5, 5]  # (a, x, 5) twice; (a, x, 6) is a genuine repeat; b's event is another user's
    ev = RawEvents(np.asarray(users), np.asarray(items), ts=np.asarray(ts, dtype=np.int64))
    ds = build_dataset("dup", "test", ev, files={}, records={}, text_fields=[])
    out = dedupe(ds)
    assert len(out.interactions) == 4 and out.summary["duplicate_events_removed"] == 1
    assert out.summary["filters"][-1]["filter"] == "dedupe" and out.summary["filters"][-1]["removed"] == 1
    assert sorted(out.interactions.row.tolist()) == [0, 2, 3, 4]  # the first row of a duplicate is kept
    assert dedupe(out).summary["duplicate_events_removed"] == 1  # nothing more to remove


def test_table_launch_column(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("u,i,t\n1,A,2024-01-02\n1,B,2024-01-03\n")
    (tmp_path / "items.csv").write_text("i,name,launched\nA,Alpha,2024-01-01\nB,Beta,\n")
    ds = load_table(tmp_path / "log.csv", "u", "i", "t", items_path=tmp_path / "items.csv", text_cols=["name"],
                    launch_col="launched", parse_dates=True)
    assert ds.items.launch_ts[ds.item_vocab.index("A")] == 1704067200 and ds.items.launch_ts[ds.item_vocab.index("B")] is None
    assert ds.summary["items_with_launch_time"] == 1


@pytest.mark.realdata
def test_real_movielens_release_dates(shared_data: Path) -> None:
    ds = load_movielens(shared_data / "ml-100k", plots=False, posters=False)
    assert ds.items.launch_ts[ds.item_vocab.index("1")] == 788918400  # Toy Story: 01-Jan-1995 00:00 UTC
    assert ds.items.launch_ts[ds.item_vocab.index("267")] is None  # the one movie without a date
    assert ds.summary["items_with_launch_time"] == 1681


def test_synthetic_items_carry_their_launch_dates() -> None:
    from modalrec.data.sources.synthetic import generate, item_launch_ts

    ds = generate(n_users=20, n_items=40, avg_seq_len=5)
    assert ds.items.launch_ts[1:] == item_launch_ts(ds)[1:].tolist()

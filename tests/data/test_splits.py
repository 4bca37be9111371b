"""Splits against a naive per-event recomputation: no leakage, exact cold tags, exact histories."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.data.interactions import Interactions
from modalrec.data.splits import EvalSet, Split, cold_items, from_presplit, global_temporal, leave_one_out

N_USERS, N_ITEMS = 30, 40


def random_log(seed: int) -> tuple[Interactions, list[tuple[int, int, int, int]]]:
    """Events in random file order with many timestamp ties; returns (Interactions, [(user, item, ts, row)])."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 14, N_USERS)  # some users too short for leave-one-out
    user = rng.permutation(np.repeat(np.arange(1, N_USERS + 1), lengths))
    item = rng.integers(1, N_ITEMS + 1, len(user))
    ts = rng.integers(0, 12, len(user))
    events = [(int(u), int(i), int(t), r) for r, (u, i, t) in enumerate(zip(user, item, ts))]
    return Interactions.from_arrays(user, item, ts, n_users=N_USERS, n_items=N_ITEMS), events


def expected_evalset(
    events: list[tuple[int, int, int, int]], eval_rows: set[int], train_rows: set[int]
) -> dict:
    """Naive EvalSet: eval events in (user, ts, row) order, history = all earlier events of that user."""
    by_user: dict[int, list] = {}
    for ev in sorted(events, key=lambda e: (e[0], e[2], e[3])):
        by_user.setdefault(ev[0], []).append(ev)
    train_items = {e[1] for e in events if e[3] in train_rows}
    train_users = {e[0] for e in events if e[3] in train_rows}
    out: dict[str, list] = {
        k: [] for k in ("user", "target", "ts", "hist", "hist_ts", "cold_item", "cold_user")
    }
    for u in sorted(by_user):
        for pos, (uu, i, t, r) in enumerate(by_user[u]):
            if r in eval_rows:
                out["user"].append(u)
                out["target"].append(i)
                out["ts"].append(t)
                out["hist"].append([e[1] for e in by_user[u][:pos]])
                out["hist_ts"].append([e[2] for e in by_user[u][:pos]])
                out["cold_item"].append(i not in train_items)
                out["cold_user"].append(u not in train_users)
    return out


def assert_evalset_equals(es: EvalSet, exp: dict) -> None:
    np.testing.assert_array_equal(es.user, exp["user"])
    np.testing.assert_array_equal(es.target, exp["target"])
    np.testing.assert_array_equal(es.ts, exp["ts"])
    assert [es.history(e).tolist() for e in range(len(es))] == exp["hist"]
    assert [es.hist_ts[es.hist_offsets[e] : es.hist_offsets[e + 1]].tolist() for e in range(len(es))] == exp[
        "hist_ts"
    ]
    np.testing.assert_array_equal(es.cold_item, exp["cold_item"])
    np.testing.assert_array_equal(es.cold_user, exp["cold_user"])


def check_split(split: Split, events: list, valid_rows: set[int], test_rows: set[int]) -> None:
    train_rows = {e[3] for e in events} - valid_rows - test_rows
    assert sorted(split.train.row.tolist()) == sorted(train_rows)  # nothing from valid/test leaks in
    assert_evalset_equals(split.valid, expected_evalset(events, valid_rows, train_rows))
    assert_evalset_equals(split.test, expected_evalset(events, test_rows, train_rows))


@pytest.mark.parametrize("seed", [0, 1])
def test_leave_one_out_is_exact(seed: int) -> None:
    inter, events = random_log(seed)
    split = leave_one_out(inter)
    valid_rows, test_rows = set(), set()
    for u in range(1, N_USERS + 1):
        seq = sorted((e for e in events if e[0] == u), key=lambda e: (e[2], e[3]))
        if len(seq) >= 3:
            test_rows.add(seq[-1][3])
            valid_rows.add(seq[-2][3])
    check_split(split, events, valid_rows, test_rows)
    assert len(split.test) == len(split.valid) == len(test_rows) > 0
    assert split.params["users_too_short"] == sum(
        1 for u in range(1, N_USERS + 1) if sum(e[0] == u for e in events) < 3
    )
    last_train_ts = {
        u: max(t for uu, _, t, r in events if uu == u and r not in valid_rows | test_rows)
        for u in split.test.user.tolist()
    }
    assert all(last_train_ts[u] <= t for u, t in zip(split.valid.user.tolist(), split.valid.ts.tolist()))
    assert not split.test.cold_user.any()  # every evaluated user keeps >= 1 training event


@pytest.mark.parametrize("seed", [2, 3])
def test_global_temporal_is_exact_and_ordered(seed: int) -> None:
    inter, events = random_log(seed)
    split = global_temporal(inter)
    order = sorted(events, key=lambda e: (e[2], e[3]))
    n = len(order)
    n_train, n_valid = round(0.7 * n), round(0.15 * n)
    valid_rows = {e[3] for e in order[n_train : n_train + n_valid]}
    test_rows = {e[3] for e in order[n_train + n_valid :]}
    check_split(split, events, valid_rows, test_rows)
    assert split.train.ts.max() <= split.valid.ts.min() and split.valid.ts.max() <= split.test.ts.min()
    for part, ratio in ((len(split.train), 0.7), (len(split.valid), 0.15), (len(split.test), 0.15)):
        assert abs(part - ratio * n) <= 1
    assert split.test.cold_item.any() or split.test.cold_user.any()  # the tags are exercised
    with pytest.raises(ValueError, match="sum to 1"):
        global_temporal(inter, (0.5, 0.2, 0.2))


def test_cold_items_removes_items_from_training_and_tags_exactly() -> None:
    inter, _ = random_log(4)
    base = leave_one_out(inter)
    split = cold_items(base, fraction=0.25, seed=7)
    present = set(base.train.item.tolist())
    removed = present - set(split.train.item.tolist())
    assert len(removed) == split.params["cold_items"] == round(0.25 * len(present))
    # training = the base training minus exactly the removed items' events
    kept = [r for r, i in zip(base.train.row.tolist(), base.train.item.tolist()) if i not in removed]
    assert sorted(split.train.row.tolist()) == sorted(kept)
    train_items, train_users = set(split.train.item.tolist()), set(split.train.user.tolist())
    for es, old in ((split.valid, base.valid), (split.test, base.test)):
        np.testing.assert_array_equal(es.cold_item, [t not in train_items for t in es.target.tolist()])
        np.testing.assert_array_equal(es.cold_user, [u not in train_users for u in es.user.tolist()])
        np.testing.assert_array_equal(es.hist_items, old.hist_items)  # histories unchanged
        assert es.cold_item[np.isin(es.target, list(removed))].all()
    assert split.test.cold_item.sum() > base.test.cold_item.sum()
    again = cold_items(base, fraction=0.25, seed=7)
    np.testing.assert_array_equal(again.train.row, split.train.row)  # deterministic given the seed
    with pytest.raises(ValueError):
        cold_items(base, fraction=1.0)


def test_from_presplit_uses_the_given_rows() -> None:
    inter, events = random_log(5)
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(events))
    valid_rows, test_rows = set(rows[:10].tolist()), set(rows[10:25].tolist())
    split = from_presplit(inter, np.array(sorted(valid_rows)), np.array(sorted(test_rows)))
    check_split(split, events, valid_rows, test_rows)


def test_evalset_subset_keeps_histories() -> None:
    inter, _ = random_log(6)
    es = global_temporal(inter).test
    mask = np.arange(len(es)) % 3 == 1
    sub = es.subset(mask)
    idx = np.flatnonzero(mask)
    assert len(sub) == len(idx)
    for j, e in enumerate(idx):
        np.testing.assert_array_equal(sub.history(j), es.history(e))
    np.testing.assert_array_equal(sub.cold_item, es.cold_item[idx])

"""TrainWindows: every training target exactly once, with the context the stride promises."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.data.interactions import Interactions
from modalrec.data.sequences import TrainWindows

MAX_LEN = 8


def _log(lengths: list[int]) -> Interactions:
    user = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    item = np.arange(1, len(user) + 1)  # every event a distinct item, so targets identify events
    ts = np.arange(len(user))
    return Interactions.from_arrays(user, item, ts, n_users=len(lengths), n_items=len(user))


@pytest.mark.parametrize("stride", [1, 3, MAX_LEN // 2, MAX_LEN, None])
def test_each_target_once_with_promised_context(stride: int | None) -> None:
    inter = _log([1, 2, 5, 9, 30])
    windows = TrainWindows(inter, MAX_LEN, stride=stride)
    batch = windows.batch(np.arange(len(windows)))
    items, targets = batch.items.numpy(), batch.targets.numpy()
    trained = targets[targets > 0]
    # Targets are every event except each user's first, each exactly once.
    firsts = inter.item[inter.offsets[1:-1][inter.seq_lengths()[1:] > 0]]
    expected = np.setdiff1d(inter.item, firsts)
    assert sorted(trained.tolist()) == sorted(expected.tolist())
    assert windows.n_targets == len(expected)
    # Context of a trained target = non-PAD inputs up to and including its position.
    s = MAX_LEN if stride is None else stride
    for row in range(len(items)):
        for pos in np.flatnonzero(targets[row] > 0):
            context = int((items[row, : pos + 1] > 0).sum())
            event = int(targets[row, pos]) - 1  # row index of the target event
            u = int(inter.user[event])
            seen = event - int(inter.offsets[u])  # the user's earlier events
            assert context == min(seen, MAX_LEN) or context >= MAX_LEN - s + 1
            assert context >= min(seen, MAX_LEN - s + 1)


def test_windows_per_step_holds_the_asked_targets_on_average() -> None:
    windows = TrainWindows(_log([30, 9, 2]), MAX_LEN)  # 29 + 8 + 1 = 38 targets in 4 + 1 + 1 = 6 windows
    assert (len(windows), windows.n_targets) == (6, 38)
    assert windows.windows_per_step(19) == 3  # 19 targets = half the epoch = half the windows
    assert windows.windows_per_step(1) == 1  # never fewer than one window


def test_default_is_non_overlapping_and_bad_stride_refused() -> None:
    inter = _log([30])
    assert len(TrainWindows(inter, MAX_LEN)) == len(TrainWindows(inter, MAX_LEN, stride=MAX_LEN)) == 4
    # stride 1: one window per target, except the window at the user's start, which trains all MAX_LEN of its own
    assert len(TrainWindows(inter, MAX_LEN, stride=1)) == 29 - MAX_LEN + 1
    for bad in (0, MAX_LEN + 1):
        with pytest.raises(ValueError, match="stride"):
            TrainWindows(inter, MAX_LEN, stride=bad)


def test_first_events_add_one_empty_history_window_per_user() -> None:
    inter = _log([1, 2, 5, 30])
    plain, windows = TrainWindows(inter, MAX_LEN, stride=3), TrainWindows(inter, MAX_LEN, stride=3, first_events=True)
    assert len(windows) == len(plain) + 4  # one per user, the one-event user too
    assert windows.n_targets == len(inter.item)  # now every event is a target
    batch = windows.batch(np.arange(len(windows)))
    trained = batch.targets.numpy()[batch.targets.numpy() > 0]
    assert sorted(trained.tolist()) == sorted(inter.item.tolist())  # each event exactly once
    extra = np.arange(len(plain), len(windows))
    empty = windows.batch(extra)
    firsts = inter.offsets[:-1][inter.seq_lengths() > 0]
    assert (empty.items == 0).all()  # an empty history, as a new user's is encoded
    assert empty.targets[:, :-1].eq(0).all() and empty.targets[:, -1].tolist() == inter.item[firsts].tolist()
    assert empty.target_ts[:, -1].tolist() == inter.ts[firsts].tolist()  # scored at the first event's time

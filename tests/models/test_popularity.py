"""Pop and RecentPop: known-answer rankings, ties, decay; they are not trained by fit()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modalrec.data.interactions import Interactions
from modalrec.data.sequences import TrainWindows
from modalrec.data.splits import leave_one_out
from modalrec.errors import ConfigError
from modalrec.evaluation.evaluator import Evaluator
from modalrec.models import build_model
from modalrec.models.base import ModelContext
from modalrec.models.popularity import Pop, PopConfig, RecentPop, RecentPopConfig
from modalrec.training.checkpoint import load_state, save_checkpoint
from modalrec.training.loop import TrainConfig, fit
from modalrec.types import SeqBatch


def _inter(events: list[tuple[int, int, int]], n_users: int = 3, n_items: int = 6) -> Interactions:
    u, i, t = (np.array(x) for x in zip(*events, strict=True))
    return Interactions.from_arrays(u, i, t, n_users=n_users, n_items=n_items)


def _batch(b: int = 2) -> SeqBatch:
    return SeqBatch(torch.zeros(b, 4, dtype=torch.long), torch.zeros(b, dtype=torch.long), torch.arange(b))


# item 3 x4, item 1 x3, item 5 x2, item 2 x1, items 4 and 6 never
EVENTS = [
    (1, 3, 0),
    (1, 1, 1),
    (2, 3, 2),
    (2, 5, 3),
    (3, 3, 4),
    (3, 1, 5),
    (1, 2, 6),
    (2, 1, 7),
    (3, 5, 8),
    (3, 3, 9),
]


def test_pop_ranks_most_popular_first_and_same_for_everyone() -> None:
    inter = _inter(EVENTS)
    model = Pop(PopConfig(), ModelContext(n_items=6, n_users=3)).fit_counts(inter)
    scores = model.score(_batch(3))  # [3, 7]
    assert scores.shape == (3, 7)
    assert torch.equal(scores[0], scores[2])
    order = torch.argsort(scores[0, 1:], descending=True, stable=True) + 1
    assert order[:4].tolist() == [3, 1, 5, 2]
    assert scores[0, 4] == scores[0, 6] == 0  # never seen: tied at the bottom
    assert model.score(_batch(2), items=torch.tensor([5, 3])).tolist() == [[2.0, 4.0], [2.0, 4.0]]


def test_pop_from_context_counts_equals_fit_counts_and_evaluates() -> None:
    inter = _inter(EVENTS)
    ctx = ModelContext(n_items=6, n_users=3, train_item_counts=inter.item_counts())
    a = build_model("pop", None, ctx)
    b = Pop(PopConfig(), ModelContext(n_items=6, n_users=3)).fit_counts(inter)
    assert torch.equal(a.score(_batch()), b.score(_batch()))
    # Full-ranking evaluation with the real evaluator: every user's test target is ranked by popularity.
    split = leave_one_out(_inter(EVENTS + [(1, 3, 10), (2, 3, 11), (3, 3, 12)]))
    report = Evaluator(split.test, 6, ks=(1, 5), exclude_seen=False).run(
        Pop(PopConfig(), ctx).fit_counts(split)
    )
    assert report.metric("hr@1") == 1.0  # all test targets are item 3, the most popular


def test_recent_pop_counts_only_the_last_window_and_breaks_ties_by_total() -> None:
    # ts 0..99; window 0.1 of the span [0, 99] -> events with ts >= 89.1 count.
    events = [(1, 1, t) for t in range(60)] + [(2, 2, 90), (2, 2, 95), (3, 4, 99), (3, 5, 20), (3, 5, 30)]
    inter = _inter(events)
    model = RecentPop(RecentPopConfig(window=0.1), ModelContext(n_items=6, n_users=3)).fit_counts(inter)
    s = model.score(_batch(1))[0]
    assert s[2] > s[4] > s[1] > s[5] > s[3]  # recent counts 2, 1, then totals 60 > 2 > 0
    assert s[3] == s[6]  # no event at all: tied
    plain = RecentPop(RecentPopConfig(window=0.1, tie_break=False), ModelContext(n_items=6, n_users=3))
    s2 = plain.fit_counts(inter).score(_batch(1))[0]
    assert s2[1] == s2[5] == s2[3]  # without tie-breaking all non-recent items tie


def test_recent_pop_decay_prefers_newer_events() -> None:
    # item 1: two events early in the window, item 2: one event at the very end.
    events = [(1, 1, 0), (1, 1, 1), (2, 2, 10), (3, 3, 5)]
    ctx = ModelContext(n_items=6, n_users=3)
    flat = RecentPop(RecentPopConfig(window=1.0), ctx).fit_counts(_inter(events)).score(_batch(1))[0]
    decayed = (
        RecentPop(RecentPopConfig(window=1.0, half_life=0.05), ctx)
        .fit_counts(_inter(events))
        .score(_batch(1))[0]
    )
    assert flat[1] > flat[2]
    assert decayed[2] > decayed[1]


def test_bad_window_and_fit_refuses_count_models(tmp_path: Path) -> None:
    ctx = ModelContext(n_items=6, n_users=3)
    with pytest.raises(ConfigError, match="window"):
        RecentPop(RecentPopConfig(window=0.0), ctx)
    inter = _inter(EVENTS)
    with pytest.raises(TypeError, match="fit_counts"):
        fit(Pop(PopConfig(), ctx), TrainWindows(inter, 4), TrainConfig(epochs=1, progress=False))
    model = RecentPop(RecentPopConfig(), ctx).fit_counts(inter)
    save_checkpoint(tmp_path / "rp", model, {"model": "recent_pop"})
    fresh = load_state(tmp_path / "rp", RecentPop(RecentPopConfig(), ctx))
    assert torch.equal(fresh.score(_batch()), model.score(_batch()))

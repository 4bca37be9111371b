"""The repeat bonus (models/repeat.py) and its choice on VALID (training/selection.repeat_sweep)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from seq_testdata import ScoreOnly
from torch import nn

from modalrec.data.splits import EvalSet
from modalrec.errors import ConfigError
from modalrec.evaluation.evaluator import Evaluator
from modalrec.models.repeat import RepeatBonus
from modalrec.training.selection import REPEAT_BONUSES, repeat_sweep
from modalrec.types import SeqBatch

N_ITEMS = 30


class TableModel(nn.Module):
    """Scores event (user u) with row u of a fixed table [n_users + 1, n_items + 1]; reads 8 history items."""

    history_length = 8

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("table", torch.from_numpy(table))

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        out = self.table[batch.users].clone()
        return out if items is None else out[:, items]


def evalset(n_events: int, seed: int, repeat_share: float) -> EvalSet:
    """Event e is user e + 1 with 1..6 history items; `repeat_share` of the targets repeat a history item."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, n_events)
    offsets = np.zeros(n_events + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    hist = np.concatenate([rng.choice(np.arange(1, N_ITEMS + 1), n, replace=False) for n in lengths])
    target = np.array([rng.choice(np.setdiff1d(np.arange(1, N_ITEMS + 1), hist[offsets[e]:offsets[e + 1]]))
                       for e in range(n_events)])
    repeat = rng.random(n_events) < repeat_share
    target[repeat] = hist[offsets[:-1][repeat]]  # the user's first item again
    return EvalSet(user=np.arange(1, n_events + 1), target=target.astype(np.int64), ts=np.arange(n_events),
                   hist_offsets=offsets, hist_items=hist.astype(np.int64), hist_ts=np.zeros(len(hist), np.int64),
                   cold_item=np.zeros(n_events, bool), cold_user=np.zeros(n_events, bool))


def table(n_events: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_events + 1, N_ITEMS + 1)).astype(np.float32)


def test_the_bonus_lifts_history_items_only_and_a_candidate_subset_scores_alike() -> None:
    model = TableModel(table(3, seed=0))
    batch = SeqBatch(items=torch.tensor([[0, 0, 4, 7], [0, 2, 2, 9], [0, 0, 0, 0]]), targets=torch.tensor([1, 2, 3]),
                     users=torch.tensor([1, 2, 3]))
    base = model.score(batch)
    lifted = RepeatBonus(model, 2.5).score(batch)
    expected = base.clone()
    expected[0, [4, 7]] += 2.5
    expected[1, [2, 9]] += 2.5  # an item twice in the history gets the bonus once
    torch.testing.assert_close(lifted, expected)  # PAD (0) and the empty history get nothing
    items = torch.tensor([0, 2, 4, 9, 11])
    torch.testing.assert_close(RepeatBonus(model, 2.5).score(batch, items), expected[:, items])
    torch.testing.assert_close(RepeatBonus(model, 0.0).score(batch), base)
    with pytest.raises(ConfigError, match=">= 0"):
        RepeatBonus(model, -1.0)


def test_under_the_rankable_rule_a_large_bonus_ranks_repeat_targets_first_and_moves_no_novel_target() -> None:
    es = evalset(300, seed=1, repeat_share=0.3)
    repeat = es.repeat_mask()
    assert 50 < repeat.sum() < 150
    model = TableModel(table(300, seed=2))
    evaluator = Evaluator(es, N_ITEMS, ks=(10,), max_len=8)
    plain, lifted = evaluator.run(model), evaluator.run(RepeatBonus(model, 64.0))
    assert (lifted.ranks[repeat] == 1).all() and (plain.ranks[repeat] > 1).any()
    np.testing.assert_array_equal(lifted.ranks[~repeat], plain.ranks[~repeat])
    scorer = RepeatBonus(model)
    choice = repeat_sweep(scorer, evaluator.run)
    assert [s["bonus"] for s in choice.sweep] == list(REPEAT_BONUSES)
    # overall can only rise with the bonus here: the smallest bonus at the best VALID overall
    best = max(s["overall"] for s in choice.sweep)
    assert choice.value == min(s["bonus"] for s in choice.sweep if s["overall"] == best) > 0
    assert choice.report.metric("ndcg@10", "repeat") == 1.0 and scorer.bonus == choice.value


def test_with_every_item_a_candidate_the_bonus_trades_novel_targets_and_valid_picks_the_trade() -> None:
    evaluator = Evaluator(evalset(300, seed=3, repeat_share=0.0), N_ITEMS, ks=(10,), exclude_seen=False, max_len=8)
    model = TableModel(table(300, seed=4))
    # nobody repeats: history items are only in the way of the targets, so VALID keeps the model alone
    choice = repeat_sweep(RepeatBonus(model), evaluator.run)
    assert choice.value == 0.0 and choice.sweep[-1]["overall"] < choice.sweep[0]["overall"]
    # everybody repeats: the bonus is worth it
    evaluator = Evaluator(evalset(300, seed=3, repeat_share=1.0), N_ITEMS, ks=(10,), exclude_seen=False, max_len=8)
    choice = repeat_sweep(RepeatBonus(model), evaluator.run)
    assert choice.value > 0 and choice.report.metric("ndcg@10") > choice.sweep[0]["overall"]


class DotModel(nn.Module):
    """state = row u of a user table; scores = state @ item table.T (+ a per-item bias, the model contract's
    `item_bias`). Small integers: every score exact, ties frequent."""

    history_length = 8

    def __init__(self, seed: int, n_users: int, bias: bool) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.register_buffer("users", torch.from_numpy(rng.integers(-2, 3, (n_users + 1, 4)).astype(np.float32)))
        self.register_buffer("items", torch.from_numpy(rng.integers(-2, 3, (N_ITEMS + 1, 4)).astype(np.float32)))
        self.bias = torch.from_numpy(rng.integers(0, 3, N_ITEMS + 1).astype(np.float32)) if bias else None

    @property
    def dot_product_scores(self) -> bool:
        return self.bias is None

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        return self.users[batch.users]

    def item_embeddings(self) -> torch.Tensor:
        return self.items

    def item_bias(self, n_rows: int) -> torch.Tensor | None:
        return self.bias

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        out = self.forward(batch) @ self.items.T + (0.0 if self.bias is None else self.bias)
        return out if items is None else out[:, items]


@pytest.mark.parametrize(("exclude_seen", "repeat_targets"), [(True, "rankable"), (True, "miss"), (False, "rankable")])
def test_biased_dot_products_and_the_bonus_rank_without_a_score_block_as_they_score(
        exclude_seen: bool, repeat_targets: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-item term (a new-item offset), a blend with one and a history bonus on top are ranked on CPU from the
    state and item table (evaluation/ranking.rank_dot_block), as their `score` ranks them; with every item a
    candidate the bonus moves other history items too, so that model goes through `score`."""
    from modalrec.evaluation import evaluator as evaluator_module
    from modalrec.models.blend import ScoreBlend

    es = evalset(200, seed=5, repeat_share=0.3)
    evaluator = Evaluator(es, N_ITEMS, ks=(10,), exclude_seen=exclude_seen, max_len=8, repeat_targets=repeat_targets)
    biased, plain = DotModel(6, 200, bias=True), DotModel(7, 200, bias=False)
    calls = []
    fused = evaluator_module.rank_dot_block
    monkeypatch.setattr(evaluator_module, "rank_dot_block", lambda *a: calls.append(1) or fused(*a))
    bonus_changes = 0
    for scorer in (biased, ScoreBlend(biased, plain, 0.5), ScoreBlend(plain, plain, 0.5),
                   RepeatBonus(biased, 2.0), RepeatBonus(ScoreBlend(plain, biased, 0.25), 3.0)):
        calls.clear()
        got = evaluator.run(scorer).ranks
        assert bool(calls) == (exclude_seen or not isinstance(scorer, RepeatBonus))
        np.testing.assert_array_equal(got, evaluator.run(ScoreOnly(scorer)).ranks)
        if isinstance(scorer, RepeatBonus):
            bonus_changes += int((got != evaluator.run(scorer.model).ranks).sum())
    assert bonus_changes > 0 if repeat_targets == "rankable" else bonus_changes == 0
    blend = ScoreBlend(biased, plain, 0.5)
    torch.testing.assert_close(blend.item_bias(N_ITEMS + 1), 0.5 * biased.bias)
    assert ScoreBlend(plain, plain, 0.5).item_bias(N_ITEMS + 1) is None  # plain dot products: dot_product_scores says so

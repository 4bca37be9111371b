"""Item age as a sequence input (models/freshness.HistoryAge, SASRecConfig.age_input)."""

from __future__ import annotations

import numpy as np
import torch
from seq_testdata import train_adam

from modalrec.data.interactions import Interactions
from modalrec.data.item_age import NEVER, ItemLaunch
from modalrec.data.items import ItemTable
from modalrec.data.sequences import TrainWindows, eval_batch
from modalrec.data.splits import global_temporal
from modalrec.data.vocab import Vocabulary
from modalrec.models.base import ModelContext
from modalrec.models.freshness import DAY, HistoryAge
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.models.towers.item_towers import TowerConfig
from modalrec.types import SeqBatch


def _launch(meta: list[int | None], first: list[int | None]) -> ItemLaunch:
    as_ts = lambda xs: torch.tensor([NEVER] + [NEVER if x is None else x for x in xs])
    return ItemLaunch(as_ts(meta), as_ts(first))


def test_history_ages_are_taken_at_each_event_and_never_look_ahead() -> None:
    t = 1000 * DAY
    # item 1: released 10 days before t; 2: no date, first event 3 days before t; 3: no date, first event at t;
    # 4: no date, first event 5 days after t (a planted future item); 5: released after t
    launch = _launch([t - 10 * DAY, None, None, None, t + DAY], [None, t - 3 * DAY, t, t + 5 * DAY, None])
    ages = HistoryAge(launch, dim=4, edges_days=(1, 7, 30))
    items = torch.tensor([[0, 1, 2, 3, 4, 5]])
    at_t = ages.buckets(items, torch.full((1, 6), t))
    # PAD, 7-30 days, 1-7 days, first event at t is not evidence of itself, future event, future release
    assert at_t.tolist() == [[0, 3, 2, 0, 0, 0]]
    # each slot is aged at its own event time: item 4 taken 6 days after t has a known (1-day-old) launch
    per_event = ages.buckets(torch.tensor([[4, 1]]), torch.tensor([[t + 6 * DAY, t - 10 * DAY + 1]]))
    assert per_event.tolist() == [[2, 1]]
    # no event times (an ad-hoc history at serving): aged at the query time
    assert ages.buckets(torch.tensor([[4]]), None, torch.tensor([t + 40 * DAY])).tolist() == [[4]]
    out = ages(items, torch.full((1, 6), t))
    assert out[0, 0].abs().sum() == 0  # PAD adds nothing
    torch.testing.assert_close(out[0, 3], ages.embedding.weight[0])  # unknown age has its own vector


def _two_kinds_of_users(n_items: int = 60, per_kind: int = 15, seed: int = 0) -> tuple[Interactions, list[int]]:
    """Item i is released on day i. Every day each 'fresh' user (1..per_kind) may take an item released in the
    last 3 days, each 'classic' user one released 15 or more days ago -- the same items, at other ages."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for day in range(1, n_items + 3):
        fresh = [i for i in range(1, n_items + 1) if 0 <= day - i < 3]
        old = [i for i in range(1, n_items + 1) if day - i >= 15]
        for u in range(1, 2 * per_kind + 1):
            pool = fresh if u <= per_kind else old
            if pool and rng.random() < 0.6:
                users.append(u), items.append(int(rng.choice(pool))), ts.append(day * DAY + u)
    inter = Interactions.from_arrays(np.array(users), np.array(items), np.array(ts), n_users=2 * per_kind,
                                     n_items=n_items)
    return inter, [i * DAY for i in range(1, n_items + 1)]


def test_a_planted_freshness_habit_is_learned_and_applied_to_items_never_trained() -> None:
    inter, release = _two_kinds_of_users()
    split = global_temporal(inter, (0.7, 0.15, 0.15))
    vocab = Vocabulary([f"i{i}" for i in range(1, len(release) + 1)])
    table = ItemTable(vocab, {"title": [""] * (len(release) + 1)}, [None, *release])
    feats = torch.randn(split.n_items + 1, 16, generator=torch.Generator().manual_seed(0))  # says nothing of age
    ctx = ModelContext.for_split(split, item_features={"text": feats}, feature_missing={},
                                 item_launch=ItemLaunch.for_split(split, table, "unix_seconds"))
    test = split.test
    fresh_user = test.user <= 15
    assert split.test.cold_item[fresh_user].mean() > 0.9  # fresh users' test items were never trained

    def new_item_ranks(age_input: bool) -> tuple[float, float, float]:
        """Mean rank (0 = top) of the items released in the last 3 days for fresh and classic users' TEST
        events, and the fresh users' hit rate @3."""
        torch.manual_seed(0)
        model = SASRec(SASRecConfig(dim=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0, loss="ce",
                                    loss_catalogue="all", age="bias", age_personal=True, age_input=age_input,
                                    tower=TowerConfig(kind="text")), ctx)
        train_adam(model, TrainWindows(split.train, 8), epochs=15, lr=0.05)
        with torch.no_grad():
            batch = eval_batch(test, np.arange(len(test.user)), 8)
            scores = model.score(batch)[:, 1:]  # [E, N]
        age = torch.as_tensor(test.ts)[:, None] - torch.tensor(release)[None, :]  # [E, N]
        new = (age >= 0) & (age < 3 * DAY)
        rank = scores.argsort(1, descending=True).argsort(1).float()
        new_rank = (rank * new).sum(1) / new.sum(1)  # NaN where nothing is new
        hit = (scores > scores.gather(1, batch.targets[:, None] - 1)).sum(1) < 3
        f = torch.as_tensor(fresh_user)
        return float(new_rank[f].nanmean()), float(new_rank[~f].nanmean()), float(hit[f].float().mean())

    fresh_rank, classic_rank, fresh_hit = new_item_ranks(True)
    # of ~58 launched items, new ones on top for the users who take them, far down for the others
    assert fresh_rank < 3 and classic_rank > 20, (fresh_rank, classic_rank)
    assert fresh_hit > 0.8, fresh_hit  # the never-trained target among the top 3
    plain_fresh, plain_classic, plain_hit = new_item_ranks(False)  # the state knows items, not their ages
    assert classic_rank - fresh_rank > plain_classic - plain_fresh + 15, (plain_fresh, plain_classic)
    assert fresh_hit > plain_hit + 0.1, plain_hit


def test_the_state_depends_on_when_the_history_was_taken() -> None:
    t = 1000 * DAY
    launch = _launch([t - DAY, t - 400 * DAY], [None, None])
    ctx = ModelContext(n_items=2, n_users=1, train_item_counts=np.array([0, 1, 1]), item_launch=launch)
    model = SASRec(SASRecConfig(dim=8, n_layers=1, n_heads=1, max_len=4, dropout=0.0, age_input=True), ctx)
    model.eval()
    items = torch.tensor([[0, 0, 1, 2]])

    def state(ts: torch.Tensor | None) -> torch.Tensor:
        return model(SeqBatch(items, torch.tensor([1]), torch.tensor([1]), ts, torch.tensor([t + 2 * DAY])))

    now, year_later = state(torch.full((1, 4), t)), state(torch.full((1, 4), t + 365 * DAY))
    assert not torch.allclose(now, year_later)  # item 1 was new when taken at t, a year old a year later
    torch.testing.assert_close(state(None), state(torch.full((1, 4), t + 2 * DAY)))  # no times: the query's

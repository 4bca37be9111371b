"""The freshness prior (models/freshness.py), the loss catalogue and the content towers' starting scale."""

from __future__ import annotations

import math

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
from modalrec.models.freshness import DAY, FreshnessPrior
from modalrec.models.losses import NextItemLoss
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.models.towers.item_towers import TowerConfig


def _launch(meta: list[int | None], first: list[int | None]) -> ItemLaunch:
    as_ts = lambda xs: torch.tensor([NEVER] + [NEVER if x is None else x for x in xs])
    return ItemLaunch(as_ts(meta), as_ts(first))


def test_buckets_match_a_hand_computation_and_never_look_ahead() -> None:
    q = 1000 * DAY
    # item 1: released 0.5 days before q; 2: 10 days; 3: 3 years; 4: released after q; 5: no date, first
    # event 40 days before q; 6: no date, first event at q itself (not evidence of itself); 7: nothing known
    launch = _launch([q - DAY // 2, q - 10 * DAY, q - 3 * 365 * DAY, q + DAY, None, None, None],
                     [None, None, None, None, q - 40 * DAY, q, None])
    prior = FreshnessPrior(launch, edges_days=(1, 7, 30, 365))
    got = prior.age_buckets(torch.arange(8), torch.tensor([q]))
    #                          PAD <1d 7-30 >=365 future 30-365 at-q unknown
    assert got.tolist() == [0, 1, 3, 5, 0, 4, 0, 0]
    # the same item one day later: item 4 has launched (age 0), item 6's first event is now evidence
    later = prior.age_buckets(torch.tensor([4, 6]), torch.tensor([q + DAY]))
    assert later.tolist() == [1, 2]
    with torch.no_grad():
        prior.bias.copy_(torch.arange(6, dtype=torch.float32)[:, None])
    # one day later item 1 is 1.5 days old; item 4, released a day after q, is exactly 1 day old (not < 1 day)
    assert prior(torch.tensor([1, 4]), torch.tensor([[q], [q + 2 * DAY]])).tolist() == [[1.0, 0.0], [2.0, 2.0]]
    assert prior.reference_ts == q + DAY  # no query time: the latest time the table knows


def _fresh_log(n_items: int = 40, n_users: int = 30, seed: int = 0) -> tuple[Interactions, list[int]]:
    """Item i is released on day 2i; every day each user takes a random item released in the last 2 days."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for day in range(1, 2 * n_items):
        fresh = [i for i in range(1, n_items + 1) if 0 <= day - 2 * i < 2]
        for u in range(1, n_users + 1):
            if fresh and rng.random() < 0.5:
                users.append(u), items.append(int(rng.choice(fresh))), ts.append(day * DAY + u)
    inter = Interactions.from_arrays(np.array(users), np.array(items), np.array(ts), n_users=n_users,
                                     n_items=n_items)
    return inter, [2 * i * DAY for i in range(1, n_items + 1)]


def _context(inter: Interactions, release: list[int], split) -> ModelContext:  # type: ignore[no-untyped-def]
    vocab = Vocabulary([f"i{i}" for i in range(1, len(release) + 1)])
    table = ItemTable(vocab, {"title": [""] * (len(release) + 1)}, [None, *release])
    return ModelContext.for_split(split, item_launch=ItemLaunch.for_split(split, table, "unix_seconds"))


def test_the_prior_learns_freshness_and_ranks_items_never_trained() -> None:
    inter, release = _fresh_log()
    split = global_temporal(inter, (0.7, 0.15, 0.15))
    ctx = _context(inter, release, split)
    cold = split.test.cold_item
    assert cold.mean() > 0.8  # the test period takes items released after training

    def trained(age: str) -> tuple[SASRec, float]:
        torch.manual_seed(0)
        model = SASRec(SASRecConfig(dim=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0, loss="ce",
                                    loss_catalogue="all", age=age), ctx)
        train_adam(model, TrainWindows(split.train, 8), epochs=3, lr=0.02)
        with torch.no_grad():
            batch = eval_batch(split.test, np.flatnonzero(cold), 8)
            scores = model.score(batch)
        target = scores.gather(1, batch.targets[:, None])
        rank = (scores[:, 1:] > target).sum(1)  # pessimistic ties do not matter for a strict count
        return model, float((rank < 3).float().mean())

    with_age, hit_age = trained("bias")
    _, hit_plain = trained("none")
    bias = with_age.prior.bias.detach()
    assert bias[1] > bias[-1] and bias[1] > bias[0]  # under a day beats old and not-yet-launched
    assert hit_age > 0.6 and hit_age > hit_plain + 0.4, (hit_age, hit_plain)


def test_catalogue_all_scores_items_without_training_events() -> None:
    counts = np.array([0, 3, 0, 2, 0])  # items 2 and 4 have no training events
    states, targets = torch.randn(6, 4), torch.tensor([1, 3, 1, 3, 1, 3])
    table = torch.randn(5, 4)
    table[0] = 0.0

    class Table(torch.nn.Module):
        def all(self) -> torch.Tensor:
            return table

    train = NextItemLoss("ce", 4, counts=counts)(states, targets, Table())
    every = NextItemLoss("ce", 4, counts=counts, catalogue="all")(states, targets, Table())
    logits = states @ table[1:].T
    torch.testing.assert_close(every, torch.nn.functional.cross_entropy(logits, targets - 1))
    torch.testing.assert_close(train, torch.nn.functional.cross_entropy(logits[:, [0, 2]], (targets - 1) // 2))
    sampler = NextItemLoss("sampled", 4, n_negatives=200, counts=counts, catalogue="all").sampler
    assert set(sampler.sample((200,)).tolist()) == {1, 2, 3, 4}


def test_a_small_learned_scale_starts_the_loss_near_log_items() -> None:
    g = torch.Generator().manual_seed(0)
    n, events = 200, []
    for u in range(1, 41):
        events += [(u, int(i), t) for t, i in enumerate(torch.randint(1, n + 1, (12,), generator=g))]
    u, i, t = map(np.array, zip(*events))
    split = global_temporal(Interactions.from_arrays(u, i, t * 10 + u, n_users=40, n_items=n), (0.8, 0.1, 0.1))
    feats = torch.randn(n + 1, 24, generator=g) + 3.0  # content features that share one big direction
    batch = next(iter(TrainWindows(split.train, 10).batches(40, seed=0, epoch=1)))

    def first_loss(options: dict) -> tuple[float, SASRec]:
        ctx = ModelContext(n_items=n, n_users=40, train_item_counts=split.train.item_counts(),
                           item_features={"text": feats}, feature_missing={})
        model = SASRec(SASRecConfig(dim=32, n_layers=1, n_heads=1, max_len=10, loss="ce", loss_catalogue="all",
                                    tower=TowerConfig(kind="text", options=options)), ctx)
        model.eval()
        return float(model.loss(batch).detach()), model

    small, model = first_loss({"scale": 0.2, "learn_scale": True})
    assert abs(small - math.log(n)) < 0.5, small
    fixed = first_loss({"scale": 3.0, "learn_scale": False})[0]
    assert fixed > small + 0.5
    assert first_loss({})[0] < fixed - 0.5  # the default (length 1, learned) starts nearer log(items)
    model.train()
    model.loss(batch).backward()
    assert model.tower.log_scale.grad is not None and float(model.tower.log_scale.grad.abs()) > 0


def test_recent_activity_counts_whole_days_before_the_query_only() -> None:
    from modalrec.data.item_age import ItemActivity

    day0 = 100 * DAY
    # item 1: events on days 0, 1, 1, 5; item 2: one event on day 5, a few seconds before the query
    act = ItemActivity.from_log(3, np.array([1, 1, 1, 1, 2]),
                                np.array([day0, day0 + DAY, day0 + DAY + 5, day0 + 5 * DAY, day0 + 5 * DAY + 10]))
    q = torch.tensor([[day0 + 5 * DAY + 20], [day0 + 2 * DAY], [day0 + 90 * DAY]])  # [3, 1]
    got = act.recent(torch.arange(5), q, days=7)  # items 3 (no events) and 4 (added after the log)
    assert got.tolist() == [[0, 3, 0, 0, 0], [0, 3, 0, 0, 0], [0, 0, 0, 0, 0]]  # same-day events wait a day
    assert act.recent(torch.tensor([1]), torch.tensor([day0 + 6 * DAY]), days=2).tolist() == [1]
    launch = _launch([day0, day0], [None, None])
    prior = FreshnessPrior(launch, activity=ItemActivity.from_log(2, np.array([1, 1]), np.array([day0, day0 + 1])))
    assert prior.bias.shape == (13, 6)
    assert prior.trend(torch.tensor([1, 2]), torch.tensor([day0 + DAY])).tolist() == [2, 0]  # 2 events -> "2-3"


def test_the_prior_starts_at_the_training_logs_log_event_rates() -> None:
    # edges (1, 7) days -> cells 0 unknown, 1 (< 1 day), 2 (1-7 days), 3 (older); releases on days 0, 10, 100
    launch = _launch([0, 10 * DAY, 100 * DAY], [None, None, None])
    events = (np.array([2, 2, 1]), np.array([10 * DAY + DAY // 2, 12 * DAY, 20 * DAY]))
    prior = FreshnessPrior(launch, edges_days=(1, 7), start_from=(*events, np.array([1, 2, 3])))
    # hits per cell: [0, 1, 1, 1]; expected (catalogue share at each event's time, summed): item 3 is unknown
    # at all three events, item 1 old at all three, item 2 < 1 day, then 1-7 days, then old
    expected = torch.tensor([3 / 3, 1 / 3, 1 / 3, 4 / 3])
    want = torch.log((torch.tensor([0.0, 1, 1, 1]) + 1) / (expected + 1))
    torch.testing.assert_close(prior.start[:, 0], want)
    prior.init_weights()
    torch.testing.assert_close(prior.bias.detach(), prior.start)
    assert not FreshnessPrior(launch, edges_days=(1, 7)).start.any()  # no log: no effect


def test_started_at_log_rates_the_untrained_model_already_ranks_new_items() -> None:
    inter, release = _fresh_log()
    split = global_temporal(inter, (0.7, 0.15, 0.15))
    ctx = _context(inter, release, split)
    ctx.train_targets = split.train.targets()
    cold = np.flatnonzero(split.test.cold_item)

    def untrained_hits(start: str) -> float:
        model = SASRec(SASRecConfig(dim=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0, loss="ce",
                                    loss_catalogue="all", age="bias", age_start=start), ctx)
        model.eval()
        with torch.no_grad():
            batch = eval_batch(split.test, cold, 8)
            scores = model.score(batch)
        rank = (scores[:, 1:] > scores.gather(1, batch.targets[:, None])).sum(1)
        return float((rank < 3).float().mean())

    rates, zero = untrained_hits("rates"), untrained_hits("zero")
    assert rates > 0.9 and rates > zero + 0.5, (rates, zero)


def test_personal_age_vectors_add_the_user_state_dot_the_items_cell_vector() -> None:
    q = 1000 * DAY
    launch = _launch([q - DAY // 2, q - 10 * DAY, q + DAY], [None, None, None])  # cells 1, 3, 0 at q
    prior = FreshnessPrior(launch, edges_days=(1, 7, 30), dim=2)
    with torch.no_grad():
        prior.bias.copy_(torch.tensor([[-1.0], [2.0], [0.5], [0.25], [0.0]]))
        prior.vectors.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [3.0, -1.0], [0.0, 0.0]]))
    state = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # two users querying at q and q
    items = torch.tensor([1, 2, 3])
    want = torch.tensor([[2.0 + 1.0, 0.25 + 3.0, -1.0 + 0.0], [2.0 + 0.0, 0.25 - 2.0, -1.0 + 2.0]])
    torch.testing.assert_close(prior(items, torch.tensor([[q], [q]]), state), want)  # [B, C]
    torch.testing.assert_close(prior(items[:2], torch.tensor([q, q]), state), want[[0, 1], [0, 1]])  # one per row
    torch.testing.assert_close(prior(items, torch.tensor([q])), torch.tensor([2.0, 0.25, -1.0]))  # no state: bias
    prior(items, torch.tensor([[q], [q]]), state).sum().backward()
    assert prior.vectors.grad is not None and prior.vectors.grad.abs().sum() > 0

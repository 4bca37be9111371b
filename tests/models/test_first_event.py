"""ID vectors that count only after an item's first event (SASRec id_scores="after_first_event",
models/first_event.py), the prior's cells apart for items scored without an ID vector, and id_score_dropout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_freshness import _context, _fresh_log

from modalrec.data.item_age import NEVER, ItemLaunch
from modalrec.data.sequences import TrainWindows, eval_batch
from modalrec.data.splits import global_temporal
from modalrec.errors import ConfigError
from modalrec.models.base import ModelContext
from modalrec.models.first_event import FirstEventGate
from modalrec.models.freshness import DAY, FreshnessPrior
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.models.towers.item_towers import TowerConfig


def test_the_gate_opens_strictly_after_the_first_event() -> None:
    first = torch.tensor([NEVER, 10 * DAY, 20 * DAY, NEVER])  # item 3 never taken
    gate = FirstEventGate(ItemLaunch(torch.full((4,), NEVER), first))
    q = torch.tensor([[10 * DAY], [10 * DAY + 1], [30 * DAY]])
    items = torch.tensor([0, 1, 2, 3, 7])  # 7: appended after training
    want = [[False, False, False, False, False],  # item 1's own first event is not evidence of itself
            [False, True, False, False, False],
            [False, True, True, False, False]]
    assert gate(items, q).tolist() == want
    assert gate(items, None).tolist() == [False, True, True, False, False]  # no query time: any event


def _model(split, ctx: ModelContext, **params) -> SASRec:  # type: ignore[no-untyped-def]
    feats = torch.randn(split.n_items + 1, 8, generator=torch.Generator().manual_seed(3))
    ctx = dataclasses.replace(ctx, item_features={"text": feats})
    torch.manual_seed(0)
    cfg = {"dim": 16, "n_layers": 1, "n_heads": 1, "max_len": 8, "dropout": 0.0, "loss": "ce",
           "loss_catalogue": "all", "age": "bias", "id_scores": "after_first_event",
           "tower": TowerConfig(kind="hybrid", options={"content": "text"}), **params}
    return SASRec(SASRecConfig(**cfg), ctx)


def _setup():  # type: ignore[no-untyped-def]
    inter, release = _fresh_log()
    split = global_temporal(inter, (0.7, 0.15, 0.15))
    return split, _context(inter, release, split)


def test_an_items_id_vector_scores_it_only_after_its_first_event() -> None:
    split, ctx = _setup()
    model = _model(split, ctx).eval()
    first = ctx.item_launch.first_event_ts
    item = int(np.flatnonzero(split.train.item_counts() > 0)[5])  # an item with training events
    batch = eval_batch(split.test, np.arange(4), 8)
    before = dataclasses.replace(batch, target_ts=torch.full((4,), int(first[item])))  # at the first event
    after = dataclasses.replace(batch, target_ts=torch.full((4,), int(first[item]) + 1))
    with torch.no_grad():
        s_before, s_after = model.score(before)[:, item], model.score(after)[:, item]
        model.tower.id_embedding.weight[item] += torch.randn(16, generator=torch.Generator().manual_seed(4))
        t_before, t_after = model.score(before)[:, item], model.score(after)[:, item]
    torch.testing.assert_close(s_before, t_before)  # not taken yet: content and prior alone
    assert (s_after - t_after).abs().min() > 1e-3  # taken before the query: its ID vector counts


def test_a_target_at_its_items_first_event_trains_no_id_vector() -> None:
    split, ctx = _setup()
    batch = next(iter(TrainWindows(split.train, 8).batches(16, seed=0, epoch=0, shuffle=False)))
    first = ctx.item_launch.first_event_ts
    at_first = (batch.targets > 0) & (batch.target_ts == first[batch.targets])
    only_first = dataclasses.replace(batch, targets=torch.where(at_first, batch.targets, 0))
    inputs, times = set(batch.items[batch.items > 0].tolist()), batch.target_ts[at_first]
    # targets whose ID row nothing else touches: not a history input, not taken before any kept target's time
    alone = [i for i in set(batch.targets[at_first].tolist()) if i not in inputs and not (times > first[i]).any()]
    assert alone

    def id_gradient(id_scores: str) -> torch.Tensor:
        model = _model(split, ctx, id_scores=id_scores)
        model.loss(only_first).backward()
        return model.tower.id_embedding.weight.grad[alone].abs().amax(1)

    assert id_gradient("after_first_event").max() == 0  # scored by content and prior alone
    assert id_gradient("always").min() > 0  # trained on their own first event


def test_the_prior_keeps_cells_apart_for_items_without_an_id_vector() -> None:
    launch = ItemLaunch(torch.tensor([NEVER, 0, 0]), torch.tensor([NEVER, DAY, 2 * DAY]))
    events = (np.array([1, 1, 2]), np.array([5, 6, 7]) * DAY, np.array([1, 2]))
    prior = FreshnessPrior(launch, edges_days=(1, 30), start_from=events, id_axis=True)
    prior.init_weights()
    q = torch.tensor([10 * DAY])
    with_id = prior(torch.tensor([1, 2]), q, has_id=torch.tensor([True, True]))
    torch.testing.assert_close(with_id, prior(torch.tensor([1, 2]), q, has_id=torch.tensor([False, False])))
    with torch.no_grad():
        prior.bias.view(-1, 1, 2)[..., 0] -= 5.0  # the no-ID half only
    without = prior(torch.tensor([1, 2]), q, has_id=torch.tensor([False, True]))
    torch.testing.assert_close(without, with_id - torch.tensor([5.0, 0.0]))
    plain = FreshnessPrior(launch, edges_days=(1, 30), start_from=events)
    plain.init_weights()
    torch.testing.assert_close(plain(torch.tensor([1, 2]), q), with_id)  # same start as without the axis


def test_id_score_dropout_scores_some_items_without_their_id_vector_in_training_only() -> None:
    split, ctx = _setup()
    batch = next(iter(TrainWindows(split.train, 8).batches(64, seed=0, epoch=0, shuffle=False)))

    def id_rows_with_gradient(p: float) -> int:
        model = _model(split, ctx, id_score_dropout=p)
        torch.manual_seed(1)
        model.loss(batch).backward()
        return int((model.tower.id_embedding.weight.grad.abs().sum(1) > 0).sum())

    assert id_rows_with_gradient(0.9) < id_rows_with_gradient(0.0)
    model = _model(split, ctx, id_score_dropout=0.9).eval()
    with torch.no_grad():
        ev = eval_batch(split.test, np.arange(4), 8)
        torch.testing.assert_close(model.score(ev), model.score(ev))  # no dropout at prediction time


@pytest.mark.parametrize("params", [{"id_score_dropout": 0.3, "id_scores": "always"}, {"id_score_dropout": 1.0},
                                    {"id_scores": "sometimes"}, {"content_aux": 1.0},
                                    {"tower": TowerConfig(kind="text")},
                                    {"tower": TowerConfig(kind="id"), "id_scores": "always", "new_item_offset": 1.0},
                                    {"new_item_offset_unit": "logits"},
                                    {"tower": TowerConfig(kind="text"), "id_scores": "always",
                                     "new_item_offset_unit": "id_spread"}])
def test_bad_id_score_options_are_config_errors(params: dict) -> None:
    split, ctx = _setup()
    with pytest.raises(ConfigError):
        _model(split, ctx, **params)


def _with_and_without_offset(model: SASRec, split, offset: float):  # type: ignore[no-untyped-def]
    """(test batch, its scores at offset 0 and at `offset`, cold-item NDCG@10 over the test split at each) of `model`."""
    from modalrec.evaluation.evaluator import Evaluator

    ev = eval_batch(split.test, np.arange(6), 8)
    evaluator = Evaluator(split.test, split.n_items, ks=(10,), max_len=8)
    with torch.no_grad():
        before, cold_before = model.score(ev), evaluator.run(model).metric("ndcg@10", "cold_item")
        model.new_item_offset = offset
        after, cold_after = model.score(ev), evaluator.run(model).metric("ndcg@10", "cold_item")
    return ev, before, after, cold_before, cold_after


@pytest.mark.parametrize("id_scores", ["always", "after_first_event"])
def test_new_item_offset_lifts_items_without_an_id_vector_at_prediction_only(id_scores: str) -> None:
    split, ctx = _setup()
    model = _model(split, ctx, id_scores=id_scores, age="none").eval()
    assert model.dot_product_scores == (id_scores == "always")  # no prior, no gate: a fixed table
    ev, before, after, cold_before, cold_after = _with_and_without_offset(model, split, 1.5)
    assert not model.dot_product_scores  # a per-item term now: ranked by `score`, not by the table
    items = torch.arange(split.n_items + 1)
    no_id = ~model.tower.has_id_vector(items)
    if id_scores == "after_first_event":
        no_id = no_id | ~model.id_gate(items, ev.target_ts.reshape(-1, 1))
    torch.testing.assert_close(after - before, 1.5 * no_id.float().expand_as(before))
    assert cold_after > cold_before  # every cold item lacks an ID vector, so each one rises
    if id_scores == "always":  # the offset is the only term beyond the table: a per-item bias (the model contract)
        with torch.no_grad():
            torch.testing.assert_close(after, model(ev) @ model.item_embeddings().T
                                       + model.item_bias(split.n_items + 1))
    else:  # the first-event gate depends on the query time
        assert model.item_bias(split.n_items + 1) is None
    batch = next(iter(TrainWindows(split.train, 8).batches(32, seed=0, epoch=0, shuffle=False)))
    model.train()
    losses = []
    for offset in (0.0, 1.5):  # training never sees the offset
        model.new_item_offset = offset
        torch.manual_seed(1)
        losses.append(model.loss(batch))
    torch.testing.assert_close(losses[0], losses[1])


def test_new_item_offset_of_a_content_tower_lifts_the_items_without_training_events() -> None:
    """A content SASRec has no ID vectors; its offset goes to the items with no training events (and items
    appended after training), which it scores from content alone."""
    split, ctx = _setup()
    model = _model(split, ctx, tower=TowerConfig(kind="text"), id_scores="always", age="none").eval()
    _, before, after, cold_before, cold_after = _with_and_without_offset(model, split, 2.0)
    untrained_items = torch.as_tensor(split.train.item_counts()[: split.n_items + 1] == 0)
    assert untrained_items[1:].any()
    torch.testing.assert_close(after - before, 2.0 * untrained_items.float().expand_as(before))
    assert cold_after > cold_before
    beyond = torch.tensor([split.n_items + 1, split.n_items + 5])  # appended after training: new as well
    assert model.without_training_events(beyond).all()


@pytest.mark.parametrize("id_scores", ["always", "after_first_event"])
def test_an_id_spread_offset_scores_new_items_at_each_users_own_id_score_quantile(id_scores: str) -> None:
    """new_item_offset_unit='id_spread': an item without an ID vector gets, per user, the mean of that user's ID
    scores over the items with ID vectors plus `offset` standard deviations of them -- by hand here -- so users
    whose ID scores spread differently get different lifts; training never sees it."""
    split, ctx = _setup()
    model = _model(split, ctx, id_scores=id_scores, age="none", new_item_offset_unit="id_spread").eval()
    ev, before, after, cold_before, cold_after = _with_and_without_offset(model, split, 1.5)
    items = torch.arange(split.n_items + 1)
    has_id = model.tower.has_id_vector(items)
    no_id = ~has_id
    if id_scores == "after_first_event":
        no_id = no_id | ~model.id_gate(items, ev.target_ts.reshape(-1, 1))
    with torch.no_grad():
        state = model(ev)
        id_scores_of_user = state @ model.tower.id_embedding.weight[has_id].T  # [B, items with ID vectors]
    lift = id_scores_of_user.mean(1) + 1.5 * id_scores_of_user.std(1, unbiased=False)  # [B]
    torch.testing.assert_close(after - before, lift[:, None] * no_id.float().expand_as(before))
    assert lift.unique().numel() == len(lift)  # a lift of each user's own, not one constant
    assert cold_after != cold_before
    assert model.item_bias(split.n_items + 1) is None  # the lift depends on the user state: no per-item bias
    model.train()
    batch = next(iter(TrainWindows(split.train, 8).batches(32, seed=0, epoch=0, shuffle=False)))
    losses = []
    for offset in (0.0, 1.5):
        model.new_item_offset = offset
        torch.manual_seed(1)
        losses.append(model.loss(batch))
    torch.testing.assert_close(losses[0], losses[1])

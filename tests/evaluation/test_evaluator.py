"""Evaluator against a naive per-event numpy reference: ties, history masking, chunking, groups, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from modalrec.data.interactions import Interactions
from modalrec.data.splits import EvalSet, leave_one_out
from modalrec.evaluation.evaluator import EXCLUDE_SEEN_RULE, Evaluator
from modalrec.evaluation.metrics import compute_metrics
from modalrec.evaluation.sampled import SampledConfig
from modalrec.types import SeqBatch


def random_evalset(n_events: int, n_items: int, seed: int, max_hist: int = 12) -> EvalSet:
    """Event e belongs to user e + 1 (so table models can look scores up by user). Histories repeat
    items and sometimes contain the target."""
    rng = np.random.default_rng(seed)
    target = rng.integers(1, n_items + 1, n_events)
    lengths = rng.integers(0, max_hist + 1, n_events)
    offsets = np.zeros(n_events + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    hist = rng.integers(1, n_items + 1, int(offsets[-1]))
    for e in np.flatnonzero(rng.random(n_events) < 0.3):  # plant the target in some histories
        if lengths[e]:
            hist[offsets[e] + rng.integers(lengths[e])] = target[e]
    cold_item = rng.random(n_events) < 0.3
    cold_user = rng.random(n_events) < 0.2
    return EvalSet(
        user=np.arange(1, n_events + 1, dtype=np.int64),
        target=target.astype(np.int64),
        ts=np.arange(n_events, dtype=np.int64),
        hist_offsets=offsets,
        hist_items=hist.astype(np.int64),
        hist_ts=np.zeros(len(hist), np.int64),
        cold_item=cold_item,
        cold_user=cold_user,
    )


class TableModel(nn.Module):
    """Scores event (user u) with row u of a fixed table [n_users + 1, n_items + 1]."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("table", torch.from_numpy(table))
        self.calls: list[bool] = []

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(self.training)
        assert not torch.is_grad_enabled()
        return self.table[batch.users].clone()  # [B, N + 1]


class ConstantModel:
    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        return torch.full((len(batch), self.n_items + 1), 0.25)


class PerfectModel:
    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        scores = torch.zeros(len(batch), self.n_items + 1)
        scores[torch.arange(len(batch)), batch.targets] = 1.0
        return scores


def reference_ranks(es: EvalSet, table: np.ndarray, n_items: int, exclude_seen: bool) -> np.ndarray:
    out = np.zeros(len(es), np.int64)
    for e in range(len(es)):
        s, t = table[es.user[e]], es.target[e]
        excluded = set(es.history(e).tolist()) - {t} if exclude_seen else set()
        out[e] = 1 + sum(1 for j in range(1, n_items + 1) if j != t and j not in excluded and s[j] >= s[t])
    return out


def random_table(n_users: int, n_items: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 6, size=(n_users + 1, n_items + 1)).astype(np.float32)


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("budget", [1, 3 * 41, 2**24])
def test_matches_naive_reference_with_ties(exclude_seen: bool, budget: int) -> None:
    n_items, es = 40, random_evalset(150, 40, seed=1)
    table = random_table(150, n_items, seed=2)
    rep = Evaluator(es, n_items, ks=(1, 5, 10), exclude_seen=exclude_seen, score_budget=budget).run(
        TableModel(table)
    )
    expected = reference_ranks(es, table, n_items, exclude_seen)
    np.testing.assert_array_equal(rep.ranks, expected)
    ref = compute_metrics(torch.from_numpy(expected), (1, 5, 10))
    for name, value in ref.items():
        assert rep.metric(name) == pytest.approx(value)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_cpu_blocks_are_scored_in_allocator_sized_calls_with_exact_ranks(exclude_seen: bool) -> None:
    # 1e5 items: the 2**24-float block holds 167 events, the model is called on 41 (16 MiB) at a time
    n_items, n_events = 100_000, 100
    es = random_evalset(n_events, n_items, seed=11, max_hist=60)
    table = np.random.default_rng(12).integers(0, 6, size=(n_events + 1, n_items + 1)).astype(np.float32)
    ev = Evaluator(es, n_items, ks=(1, 10), exclude_seen=exclude_seen)
    assert (ev.batch_size, ev.score_rows) == (167, 41)
    model = TableModel(table)
    rep = ev.run(model)
    assert len(model.calls) == 3  # events 0..40, 41..81, 82..99 of block 0
    scores = table[es.user]  # [E, N + 1]: dense naive reference, ties counted against the target
    t_score = scores[np.arange(n_events), es.target][:, None]
    candidate = np.ones_like(scores, dtype=bool)
    candidate[:, 0] = False
    for e in range(n_events):
        if exclude_seen:
            candidate[e, es.history(e)] = False
        candidate[e, es.target[e]] = False
    np.testing.assert_array_equal(rep.ranks, 1 + ((scores >= t_score) & candidate).sum(1))
    table[51, 7] = np.nan  # event 50: the second call of block 0
    with pytest.raises(ValueError, match=r"NaN.*batch 0 \(events 41\.\.81\)"):
        ev.run(TableModel(table))


def test_agrees_with_a_dense_naive_ranking_on_a_real_split() -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = 30, 25
    user = np.repeat(np.arange(1, n_users + 1), rng.integers(3, 15, n_users))
    inter = Interactions.from_arrays(
        user,
        rng.integers(1, n_items + 1, len(user)),
        rng.integers(0, 5, len(user)),
        n_users=n_users,
        n_items=n_items,
    )
    es = leave_one_out(inter).test
    table = random_table(n_users, n_items, seed=4)
    rep = Evaluator(es, n_items, max_len=3).run(TableModel(table))
    mask = np.ones((len(es), n_items + 1), bool)
    mask[:, 0] = False
    for e in range(len(es)):
        mask[e, es.history(e)] = False
    scores = table[es.user]  # [E, N + 1]
    t_score = scores[np.arange(len(es)), es.target][:, None]
    ranks = 1 + ((scores >= t_score) & mask).sum(1) - mask[np.arange(len(es)), es.target]  # target not counted
    np.testing.assert_array_equal(rep.ranks, ranks)


def test_constant_model_gets_the_worst_rank() -> None:
    n_items, es = 30, random_evalset(60, 30, seed=5)
    rep = Evaluator(es, n_items, max_len=2).run(ConstantModel(n_items))
    n_candidates = [n_items - len(set(es.history(e).tolist()) - {es.target[e]}) for e in range(len(es))]
    np.testing.assert_array_equal(rep.ranks, n_candidates)  # full history masked, not only the max_len window
    rep_all = Evaluator(es, n_items, exclude_seen=False).run(ConstantModel(n_items))
    assert (rep_all.ranks == n_items).all()
    assert rep_all.metric("hr@10") == 0.0 and rep_all.metric("ndcg@20") == 0.0


def test_perfect_model_gets_rank_one() -> None:
    n_items, es = 50, random_evalset(80, 50, seed=6)
    rep = Evaluator(es, n_items, score_budget=200).run(PerfectModel(n_items))
    assert (rep.ranks == 1).all()
    assert rep.metric("ndcg@5") == 1.0 and rep.metric("mrr") == 1.0


def test_target_in_history_is_still_ranked() -> None:
    es = EvalSet(
        user=np.array([1, 2]),
        target=np.array([2, 3]),
        ts=np.array([0, 0]),
        hist_offsets=np.array([0, 3, 5]),
        hist_items=np.array([2, 3, 2, 3, 3]),
        hist_ts=np.zeros(5, np.int64),
        cold_item=np.array([False, False]),
        cold_user=np.array([False, False]),
    )
    assert Evaluator(es, 5).run(ConstantModel(5)).ranks.tolist() == [4, 5]  # {1,2,4,5} and {1,2,3,4,5}
    assert Evaluator(es, 5).run(PerfectModel(5)).ranks.tolist() == [1, 1]
    table = np.zeros((3, 6), np.float32)
    table[:, 3] = 9.0  # item 3 beats event 0's target unless masked (it is in event 0's history)
    table[1, 2] = 5.0
    assert Evaluator(es, 5).run(TableModel(table)).ranks.tolist() == [1, 1]
    assert Evaluator(es, 5, exclude_seen=False).run(TableModel(table)).ranks.tolist() == [2, 1]


class HistoryFirstModel:
    """Scores the event's own history items 1 and every other item 0: it knows nothing about the target."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        scores = torch.zeros(len(batch), self.n_items + 1)
        scores.scatter_(1, batch.items, 1.0)
        scores[:, 0] = 0.0
        return scores


def test_a_rankable_repeat_target_is_found_by_ranking_the_history_first_and_miss_closes_that() -> None:
    n_items, es = 40, random_evalset(200, 40, seed=3)
    repeat = es.repeat_mask()
    assert 20 < repeat.sum() < 150
    model = HistoryFirstModel(n_items)
    rankable = Evaluator(es, n_items, ks=(10,)).run(model)
    # under the SASRec convention the target is the one history item left: rank 1 for every repeat target
    assert (rankable.ranks[repeat] == 1).all() and rankable.metric("ndcg@10", "repeat") == 1.0
    miss = Evaluator(es, n_items, ks=(10,), repeat_targets="miss").run(model)
    assert (miss.ranks[repeat] == n_items).all() and miss.metric("ndcg@10", "repeat") == 0.0
    np.testing.assert_array_equal(miss.ranks[~repeat], rankable.ranks[~repeat])  # novel targets rank alike
    # a naive reference: the whole history masked, the target too (-inf), pessimistic ties
    table = random_table(200, n_items, seed=4)
    got = Evaluator(es, n_items, ks=(10,), repeat_targets="miss").run(TableModel(table)).ranks
    for e in range(len(es)):
        s = table[es.user[e]].astype(np.float64)
        s[list(set(es.history(e).tolist()))] = -np.inf
        t = es.target[e]
        assert got[e] == 1 + sum(1 for j in range(1, n_items + 1) if j != t and s[j] >= s[t]), e
    assert "miss" in miss.meta["candidates"] and miss.meta["candidates"] != rankable.meta["candidates"]
    with pytest.raises(ValueError, match="exclude_seen"):
        Evaluator(es, n_items, exclude_seen=False, repeat_targets="miss")
    with pytest.raises(ValueError, match="repeat_targets"):
        Evaluator(es, n_items, repeat_targets="mask")


def test_repeat_target_rules_have_one_home() -> None:
    """The config, the evaluator and `modalrec evaluate --repeat-targets` accept the same values."""
    import argparse
    import typing

    from modalrec.cli.evaluate import add_arguments
    from modalrec.experiment import EvalConfig
    from modalrec.protocol import REPEAT_TARGETS

    assert typing.get_args(typing.get_type_hints(EvalConfig)["repeat_targets"]) == REPEAT_TARGETS
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flag = next(a for a in parser._actions if a.dest == "repeat_targets")
    assert tuple(flag.choices) == REPEAT_TARGETS
    n_items, es = 20, random_evalset(10, 20, seed=3)
    for rule in REPEAT_TARGETS:
        assert Evaluator(es, n_items, repeat_targets=rule).run(TableModel(random_table(10, n_items, seed=4))).ranks.size


def test_nan_scores_raise_naming_the_batch() -> None:
    n_items, es = 20, random_evalset(30, 20, seed=7)
    table = random_table(30, n_items, seed=8)
    table[17, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*batch 1 \(events 10\.\.19\)"):
        Evaluator(es, n_items, batch_size=10).run(TableModel(table), name="valid")


def test_wrong_score_shape_raises() -> None:
    es = random_evalset(5, 10, seed=9)
    with pytest.raises(ValueError, match="expected"):
        Evaluator(es, 12).run(ConstantModel(10))
    with pytest.raises(ValueError, match="target"):
        Evaluator(es, 3)


def test_group_metrics_equal_metrics_on_the_subset() -> None:
    n_items, es = 40, random_evalset(200, 40, seed=10)
    model = TableModel(random_table(200, n_items, seed=11))
    ev = Evaluator(es, n_items, ks=(5, 10))
    rep = ev.run(model)
    nonempty = 0
    for g, mask in es.group_masks().items():
        assert rep.counts[g] == int(mask.sum())
        if not mask.any():
            assert all(v is None for v in rep.groups[g].values())
            continue
        nonempty += 1
        sub = Evaluator(es.subset(mask), n_items, ks=(5, 10)).run(model)
        assert rep.groups[g] == pytest.approx(sub.overall)
        assert rep.groups[g] == pytest.approx(compute_metrics(torch.from_numpy(rep.ranks[mask]), (5, 10)))
    assert rep.counts["overall"] == 200
    assert nonempty >= 7  # the cold groups, repeat / novel and several history buckets are populated


def test_empty_group_reports_count_zero_and_no_nan() -> None:
    n_items, es = 15, random_evalset(20, 15, seed=12)
    es = EvalSet(
        es.user,
        es.target,
        es.ts,
        es.hist_offsets,
        es.hist_items,
        es.hist_ts,
        np.zeros(20, bool),
        np.zeros(20, bool),
    )
    rep = Evaluator(es, n_items).run(ConstantModel(n_items))
    assert rep.counts["cold_user"] == 0 and rep.metric("ndcg@10", "cold_user") is None
    assert rep.groups["warm"] == rep.overall
    assert "n/a" in rep.to_markdown()


def test_model_sees_the_last_max_len_history_items() -> None:
    n_items, es = 20, random_evalset(25, 20, seed=18)
    seen: list[np.ndarray] = []

    class Recorder(ConstantModel):
        def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
            seen.append(batch.items.numpy().copy())
            return super().score(batch)

    Evaluator(es, n_items, max_len=4, batch_size=10).run(Recorder(n_items))
    items = np.concatenate(seen)  # [E, 4]
    for e in range(len(es)):
        h = es.history(e)[-4:]
        assert items[e].tolist() == [0] * (4 - len(h)) + h.tolist()


def test_meta_states_protocol_and_training_mode_is_restored() -> None:
    n_items, es = 20, random_evalset(25, 20, seed=13)
    model = TableModel(random_table(25, n_items, seed=14))
    model.train()
    rep = Evaluator(es, n_items, batch_size=10).run(model, name="valid")
    assert model.calls == [False, False, False] and model.training
    assert rep.meta["candidates"] == EXCLUDE_SEEN_RULE and rep.meta["ties"] == "pessimistic"
    assert rep.meta["name"] == "valid" and rep.meta["n_batches"] == 3 and rep.meta["events_per_s"] > 0
    assert "sampled" not in rep.meta and not any(k.startswith("sampled") for k in rep.overall)


@pytest.mark.parametrize("kind", ["uniform", "popularity"])
def test_sampled_metrics_are_labelled_exact_and_chunk_invariant(kind: str) -> None:
    n_items, es = 60, random_evalset(90, 60, seed=15)
    counts = np.random.default_rng(16).integers(0, 5, n_items + 1)
    counts[0] = 0
    cfg = SampledConfig(n=20, kind=kind, seed=3, item_counts=counts if kind == "popularity" else None)
    table = random_table(90, n_items, seed=17)
    ev = Evaluator(es, n_items, ks=(5, 10), score_budget=7 * 61, sampled=cfg)
    rep = ev.run(TableModel(table))
    neg = ev.negatives()
    assert neg.shape == (90, 20)
    for e in range(len(es)):
        valid = neg[e][neg[e] >= 0]
        assert len(set(valid.tolist())) == len(valid)  # without replacement
        banned = set(es.history(e).tolist()) | {int(es.target[e]), 0}
        assert not banned & set(valid.tolist())
        if kind == "popularity":
            assert (counts[valid] > 0).all()
            assert len(valid) == min(
                20, int((counts[1:] > 0).sum()) - len(banned & set(np.flatnonzero(counts)))
            )
        else:
            assert len(valid) == 20
    s = table[es.user]  # [E, N + 1]
    t = s[np.arange(len(es)), es.target][:, None]
    expected = 1 + ((s[np.arange(len(es))[:, None], np.maximum(neg, 0)] >= t) & (neg >= 0)).sum(1)
    ref = compute_metrics(torch.from_numpy(expected), (5, 10))
    assert rep.metric("sampled_ndcg@10") == pytest.approx(ref["ndcg@10"])
    assert rep.meta["sampled"]["kind"] == kind and "SAMPLED" in rep.meta["sampled"]["definition"]
    np.testing.assert_array_equal(rep.ranks, reference_ranks(es, table, n_items, True))  # full ranking intact
    other = Evaluator(es, n_items, ks=(5, 10), score_budget=2**24, sampled=cfg)
    np.testing.assert_array_equal(other.negatives(), neg)  # draws do not depend on the chunking


@pytest.mark.parametrize("kind", ["uniform", "popularity"])
def test_negative_draws_follow_the_requested_distribution(kind: str) -> None:
    n_items, n_events = 5, 6000
    counts = np.array([0, 1, 2, 4, 8, 0])  # item 5 never trained: never drawn by popularity
    es = EvalSet(
        np.arange(1, n_events + 1),
        np.full(n_events, 5),
        np.zeros(n_events, np.int64),
        np.zeros(n_events + 1, np.int64),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        np.zeros(n_events, bool),
        np.zeros(n_events, bool),
    )
    cfg = SampledConfig(n=1, kind=kind, seed=1, item_counts=counts)
    first = Evaluator(es, n_items, sampled=cfg).negatives()[:, 0]
    freq = np.bincount(first, minlength=6)[1:5] / n_events
    expected = counts[1:5] / counts[1:5].sum() if kind == "popularity" else np.full(4, 0.25)
    np.testing.assert_allclose(freq, expected, atol=0.025)  # ~5 standard errors at 6000 draws


def test_repeat_and_history_groups_match_a_naive_reference() -> None:
    es = random_evalset(300, 25, seed=21, max_hist=30)
    masks = es.group_masks()
    for e in range(len(es)):
        hist = es.history(e).tolist()
        assert masks["repeat"][e] == (int(es.target[e]) in hist)
        assert masks["novel"][e] == (int(es.target[e]) not in hist)
        n = len(hist)
        expected = "hist_0" if n == 0 else "hist_1" if n == 1 else "hist_2-4" if n <= 4 else "hist_5-19" if n <= 19 else "hist_20+"
        assert [g for g in masks if g.startswith("hist_") and masks[g][e]] == [expected]
    assert 0 < masks["repeat"].sum() < len(es)


def test_dot_product_models_compute_their_item_table_once() -> None:
    """A model with `dot_product_scores` is ranked as forward(batch) @ item_embeddings().T with the table
    computed once per run (not per score block), and ranks exactly as its own `score` does."""
    from modalrec.models.base import ModelContext
    from modalrec.models.sequential.sasrec import SASRec, SASRecConfig

    n_items = 40
    es = random_evalset(30, n_items, seed=3)
    model = SASRec(SASRecConfig(dim=16, n_layers=1, n_heads=2, max_len=8), ModelContext(n_items=n_items, n_users=30))
    model.eval()  # ScoreOnly is no nn.Module: the evaluator cannot switch its dropout off
    calls = []
    table = model.item_embeddings

    def counted() -> torch.Tensor:
        calls.append(1)
        return table()

    model.item_embeddings = counted

    class ScoreOnly:  # the same scores through `score` only (no dot-product contract)
        def score(self, batch: SeqBatch) -> torch.Tensor:
            return model.score(batch)

    for masked in (True, False):
        ev = Evaluator(es, n_items, exclude_seen=masked, max_len=8, batch_size=7)  # 5 blocks
        calls.clear()
        fast = ev.run(model)
        assert len(calls) == 1
        assert np.array_equal(fast.ranks, ev.run(ScoreOnly()).ranks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_trained_on_gpu_is_evaluated_on_the_cpu_and_put_back() -> None:
    n_items, es = 20, random_evalset(25, 20, seed=15)
    table = random_table(25, n_items, seed=16)
    want = Evaluator(es, n_items, batch_size=10).run(TableModel(table)).overall
    model = TableModel(table).cuda()
    got = Evaluator(es, n_items, batch_size=10, device="cpu").run(model).overall
    assert got == want and model.table.device.type == "cuda"

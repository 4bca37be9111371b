"""Streaming evaluation of a stateful model returns a Report whose ranks are the ranking core's, from
scores taken before each batch is observed, with transductive / inductive groups."""

from __future__ import annotations

import numpy as np
import torch

from modalrec.data.events import EventStream
from modalrec.data.interactions import Interactions
from modalrec.data.splits import global_temporal
from modalrec.evaluation.report import Report
from modalrec.evaluation.streaming import StreamEvalConfig, evaluate_stream
from modalrec.models.tgn.model import TGN, TGNConfig


def _stream_and_model() -> tuple[EventStream, TGN, int]:
    rng = np.random.default_rng(0)
    n_users, n_items, n = 12, 15, 160
    late = np.arange(n) >= 100  # users 11-12 and items 13-15 appear only late: cold in VALID / TEST
    users = np.where(late, rng.integers(1, n_users + 1, n), rng.integers(1, n_users - 1, n))
    items = np.where(late, rng.integers(1, n_items + 1, n), rng.integers(1, n_items - 2, n))
    inter = Interactions.from_arrays(users, items, np.arange(n), n_users=n_users, n_items=n_items)
    split = global_temporal(inter, (0.5, 0.25, 0.25))
    test = EventStream.from_evalset(split.test, n_items)
    model = TGN(TGNConfig(dim=8, time_dim=4, n_neighbors=3, n_heads=1, dropout=0.0, item_features="random",
                          random_dim=8), n_users, n_items, seed=1).eval()
    model.reset_state()
    return test, model, n_items


def test_report_groups_and_ranks_match_a_naive_replay() -> None:
    torch.set_num_threads(1)
    test, model, n_items = _stream_and_model()
    cfg = StreamEvalConfig(batch_size=7, ks=(5,), negatives=("random",))
    rep = evaluate_stream(model, test, cfg, restore=True)
    assert isinstance(rep, Report)
    assert {"transductive", "inductive", "cold_item", "cold_user"} <= set(rep.groups)
    assert rep.counts["transductive"] + rep.counts["inductive"] == rep.counts["overall"] == len(test)
    assert 0 < rep.counts["inductive"] < len(test)

    expected = []  # replay: score each batch before observing it, rank naively over items 1..N
    with torch.no_grad():
        for lo, hi in test.spans(cfg.batch_size):
            batch = test.batch(lo, hi)
            scores = model.score(batch, ctx=model.context()).numpy()
            seen = test.history_mask(lo, hi).numpy()
            for b, t in enumerate(batch.items.tolist()):
                others = np.ones(n_items + 1, bool)
                others[0] = others[t] = False
                others &= ~seen[b]
                expected.append(1 + int((scores[b][others] >= scores[b, t]).sum()))
            model.observe(batch)
    np.testing.assert_array_equal(rep.ranks, expected)
    inductive = torch.from_numpy(test.group_masks()["inductive"])
    hits = float((torch.as_tensor(expected)[inductive] <= 5).double().mean())
    assert rep.metric("hr@5", "inductive") == hits


def test_ap_negatives_come_from_the_run_seed() -> None:
    """AP / AUC negatives are drawn from the `seed` argument (the run's one seed), not from a config field."""
    torch.set_num_threads(1)
    test, model, _ = _stream_and_model()
    cfg = StreamEvalConfig(batch_size=7, ks=(5,), negatives=("random",), n_negatives=3)
    ap = {s: [evaluate_stream(model, test, cfg, restore=True, seed=s).metric("ap_random") for _ in range(2)]
          for s in (1, 2)}
    assert ap[1][0] == ap[1][1] and ap[2][0] == ap[2][1]
    assert ap[1][0] != ap[2][0]


def test_streamed_groups_are_the_evaluators_groups_event_for_event() -> None:
    """The streaming report has every Evaluator group (warm / cold / repeat / novel / history buckets) over
    the same events: the random log repeats items, so repeat targets exist and the counts are the EvalSet's."""
    from modalrec.data.splits import GROUPS

    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    n_users, n_items, n = 6, 30, 120  # 20 events a user over 30 items: some targets repeat, some do not
    inter = Interactions.from_arrays(rng.integers(1, n_users + 1, n), rng.integers(1, n_items + 1, n), np.arange(n),
                                     n_users=n_users, n_items=n_items)
    es = global_temporal(inter, (0.5, 0.25, 0.25)).test
    stream = EventStream.from_evalset(es, n_items)
    model = TGN(TGNConfig(dim=8, time_dim=4, n_neighbors=3, n_heads=1, dropout=0.0, item_features="random",
                          random_dim=8), n_users, n_items, seed=1).eval()
    model.reset_state()
    rep = evaluate_stream(model, stream, StreamEvalConfig(batch_size=7, ks=(5,), negatives=("random",)), restore=True)
    masks = es.group_masks()
    assert set(GROUPS) <= set(rep.groups)
    assert {g: rep.counts[g] for g in GROUPS} == {g: int(m.sum()) for g, m in masks.items()}
    assert 0 < rep.counts["repeat"] < len(es)
    assert rep.counts["warm"] == rep.counts["transductive"]
    ranks = np.empty(len(es), dtype=np.int64)
    ranks[stream.source_index] = rep.ranks  # stream order -> EvalSet order
    assert rep.metric("hr@5", "repeat") == float((ranks[masks["repeat"]] <= 5).mean())

"""knn_sasrec starts exactly as the content-kNN rule and then learns a residual that the loss can use."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from seq_testdata import ScoreOnly, random_batch

from modalrec.errors import ConfigError
from modalrec.models import build_model
from modalrec.models.base import ModelContext
from modalrec.models.coldstart import ContentKNNConfig
from modalrec.models.sequential.knn_start import KNNSASRecConfig
from modalrec.models.towers.item_towers import TowerConfig

N = 30


def _ctx() -> ModelContext:
    g = torch.Generator().manual_seed(5)
    feats = {"text": torch.randn(N + 1, 12, generator=g), "image": torch.randn(N + 1, 6, generator=g)}
    missing = {m: torch.zeros(N + 1, dtype=torch.bool) for m in feats}
    missing["image"][4] = True
    counts = torch.ones(N + 1, dtype=torch.int64).numpy()
    counts[0] = 0
    return ModelContext(n_items=N, n_users=4, train_item_counts=counts, item_features=feats,
                        feature_missing=missing, seed=0)


def _cfg(**kw: object) -> KNNSASRecConfig:
    return KNNSASRecConfig(dim=8, n_layers=1, n_heads=2, max_len=6, dropout=0.0, temperature=7.0,
                           tower=TowerConfig(kind="text"), **kw)


def test_untrained_scores_are_content_knn_times_the_temperature() -> None:
    ctx = _ctx()
    model = build_model("knn_sasrec", _cfg(), ctx).eval()
    knn = build_model("content_knn", ContentKNNConfig(max_len=6), ctx).fit_counts(None)
    batch = random_batch(N, batch=5, length=9, seed=2)  # windows longer than max_len: the last 6 count
    with torch.no_grad():
        torch.testing.assert_close(model.score(batch), 7.0 * knn.score(batch), rtol=1e-5, atol=1e-5)
        subset = torch.tensor([4, 1, 17])
        torch.testing.assert_close(model.score(batch, items=subset), 7.0 * knn.score(batch)[:, subset],
                                   rtol=1e-5, atol=1e-5)


def test_untrained_scores_follow_content_knn_with_the_same_decay() -> None:
    ctx = _ctx()
    model = build_model("knn_sasrec", _cfg(knn_decay=0.5), ctx).eval()
    knn = build_model("content_knn", ContentKNNConfig(max_len=6, decay=0.5), ctx).fit_counts(None)
    plain = build_model("content_knn", ContentKNNConfig(max_len=6), ctx).fit_counts(None)
    batch = random_batch(N, batch=5, length=9, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(model.score(batch), 7.0 * knn.score(batch), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(knn.score(batch), plain.score(batch), atol=1e-3)
    with pytest.raises(ConfigError, match="knn_decay"):
        build_model("knn_sasrec", _cfg(knn_decay=1.5), ctx)


def test_training_opens_the_gate_and_lowers_the_loss() -> None:
    model = build_model("knn_sasrec", _cfg(), _ctx())
    batch = random_batch(N, batch=8, length=6, seed=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(batch).item()
    assert first < math.log(N) + 7.0 * 2  # the kNN logits lie in [-tau, tau]: a sane first loss
    for _ in range(30):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    assert model.gate.item() != 0.0 and model.loss(batch).item() < first


def test_the_new_item_offset_lifts_items_without_training_events_and_ranks_as_it_scores() -> None:
    """select.new_item_offset sets the offset on the model it sweeps: for knn_sasrec that must move the joint
    scores of the items training never showed (and nothing else), at prediction only, and the evaluator's
    table path (state . item table + item_bias) must rank as `score` does."""
    from modalrec.data.splits import EvalSet
    from modalrec.evaluation.evaluator import Evaluator

    ctx = _ctx()
    untrained = [3, 9, 21]
    ctx.train_item_counts[untrained] = 0
    model = build_model("knn_sasrec", _cfg(), ctx).eval()
    with torch.no_grad():
        model.gate.fill_(0.5)  # a trained residual, so the scores are not the kNN term alone
    batch = random_batch(N, batch=5, length=9, seed=2)
    with torch.no_grad():
        before = model.score(batch)
        assert model.dot_product_scores and model.item_bias(N + 1) is None
        model.new_item_offset = 2.0
        after = model.score(batch)
        lifted = torch.zeros(N + 1)
        lifted[untrained] = 2.0
        lifted[0] = 2.0  # PAD: never a candidate
        torch.testing.assert_close(after - before, lifted.expand_as(before))
        assert not model.dot_product_scores
        torch.testing.assert_close(model.item_bias(N + 1), lifted)
        torch.testing.assert_close(after, model(batch) @ model.item_embeddings().T + model.item_bias(N + 1))
    model.train()
    assert model.item_bias(N + 1) is None and model.score_terms() is None  # training never sees the offset
    model.eval()

    rng = np.random.default_rng(3)
    n = 40
    target = rng.integers(1, N + 1, n)
    target[:8] = np.resize(untrained, 8)  # cold targets the offset must lift
    es = EvalSet(user=np.arange(1, n + 1), target=target, ts=np.arange(n), hist_offsets=np.arange(0, 5 * n + 1, 5),
                 hist_items=rng.integers(1, N + 1, 5 * n), hist_ts=np.zeros(5 * n, np.int64),
                 cold_item=np.isin(target, untrained), cold_user=np.zeros(n, bool))
    evaluator = Evaluator(es, N, ks=(10,), max_len=6)

    with torch.no_grad():
        fused = evaluator.run(model)
        assert (fused.ranks == evaluator.run(ScoreOnly(model)).ranks).all()
        model.new_item_offset = 0.0
        assert fused.metric("ndcg@10", "overall") != evaluator.run(model).metric("ndcg@10", "overall")


def test_an_id_tower_takes_the_offset_too_since_the_knn_term_scores_new_items_from_content() -> None:
    ctx = _ctx()
    ctx.train_item_counts[[3, 9]] = 0
    cfg = KNNSASRecConfig(dim=8, n_layers=1, n_heads=2, max_len=6, dropout=0.0, tower=TowerConfig(kind="id"),
                          new_item_offset=1.5)  # as an exported artifact rebuilds the chosen offset
    model = build_model("knn_sasrec", cfg, ctx).eval()
    assert model.new_item_offset == 1.5 and not model.dot_product_scores
    bias = model.item_bias(N + 1)
    assert bias[[3, 9]].tolist() == [1.5, 1.5] and bias[1:].sum().item() == 3.0


def test_the_content_tables_are_rebuilt_not_saved_and_older_checkpoints_holding_them_load() -> None:
    from modalrec.training.checkpoint import load_model_state, model_state

    ctx = _ctx()
    model = build_model("knn_sasrec", _cfg(), ctx).eval()
    knn = build_model("content_knn", ContentKNNConfig(max_len=6), ctx).fit_counts(None)
    state = model_state(model)
    assert not any(k.endswith("content") for k in state) and "table" not in model_state(knn)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # a trained state, unlike a fresh build's
    trained = model_state(model)
    batch = random_batch(N, batch=5, length=9, seed=2)
    older = {**trained, "tower.content": model.tower.content.clone()}  # as saved before the table was rebuilt
    again = build_model("knn_sasrec", _cfg(), ctx).eval()
    load_model_state(again, older)
    with torch.no_grad():
        torch.testing.assert_close(again.score(batch), model.score(batch))
    from modalrec.errors import MismatchError

    with pytest.raises(MismatchError, match="unexpected"):
        load_model_state(again, {**trained, "tower.nothing": torch.zeros(1)})

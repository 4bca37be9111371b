"""ScoreBlend (models/blend.py): a trained model's scores interpolated with a reference's, weight on VALID."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from seq_testdata import context, cyclic_split, evaluate, train_adam

from modalrec.data.sequences import TrainWindows, eval_batch
from modalrec.errors import ConfigError
from modalrec.models.blend import ScoreBlend
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.models.towers.item_towers import TowerConfig
from modalrec.training.selection import blend_sweep


def _content_sasrec(split, seed: int, max_len: int = 10) -> SASRec:  # type: ignore[no-untyped-def]
    ctx = context(split)
    feats = torch.randn(split.n_items + 1, 12, generator=torch.Generator().manual_seed(7))
    ctx = dataclasses.replace(ctx, item_features={"text": feats})
    torch.manual_seed(seed)
    cfg = SASRecConfig(dim=16, n_layers=1, n_heads=1, max_len=max_len, dropout=0.0, loss="ce",
                       tower=TowerConfig(kind="text"))
    return SASRec(cfg, ctx).eval()


def test_the_blend_is_the_weighted_sum_of_scores_and_stays_a_dot_product_model() -> None:
    split = cyclic_split()
    a, b = _content_sasrec(split, 0), _content_sasrec(split, 1)
    blend = ScoreBlend(a, b, weight=0.3)
    batch = eval_batch(split.test, np.arange(8), 10)
    with torch.no_grad():
        want = 0.7 * a.score(batch) + 0.3 * b.score(batch)
        assert blend.dot_product_scores
        torch.testing.assert_close(blend.score(batch), want)
        torch.testing.assert_close(blend(batch) @ blend.item_embeddings().T, want, rtol=1e-5, atol=1e-5)


def test_a_part_with_a_history_bonus_is_blended_through_its_scores() -> None:
    """A RepeatBonus part (its bonus depends on the history: no item table, no per-item term) makes the blend a
    score-path model, ranked by the weighted scores -- a late fusion of two finished models, bonus included."""
    from modalrec.models.repeat import RepeatBonus

    split = cyclic_split()
    a, b = RepeatBonus(_content_sasrec(split, 0), 4.0), _content_sasrec(split, 1)
    blend = ScoreBlend(a, b, weight=0.4)
    assert not blend.dot_product_scores and blend.item_bias(split.n_items + 1) is None
    batch = eval_batch(split.test, np.arange(8), 10)
    with torch.no_grad():
        torch.testing.assert_close(blend.score(batch), 0.6 * a.score(batch) + 0.4 * b.score(batch))
    want = evaluate(ScoreBlend(a, b, 0.0), split).ranks.tolist()
    assert want == evaluate(a, split).ranks.tolist()


def test_weight_zero_ranks_as_the_trained_model_and_one_as_the_reference() -> None:
    split = cyclic_split()
    a, b = _content_sasrec(split, 0), _content_sasrec(split, 1)
    train_adam(a.train(), TrainWindows(split.train, 10), epochs=3, lr=5e-3)
    ranks = {name: evaluate(m, split).ranks.tolist() for name, m in (("a", a), ("b", b))}
    assert ranks["a"] != ranks["b"]  # the two models differ, so the endpoints tell them apart
    assert evaluate(ScoreBlend(a, b, 0.0), split).ranks.tolist() == ranks["a"]
    assert evaluate(ScoreBlend(a, b, 1.0), split).ranks.tolist() == ranks["b"]


def test_the_sweep_keeps_the_model_that_learned_the_planted_pattern() -> None:
    split = cyclic_split()
    trained, untrained = _content_sasrec(split, 0), _content_sasrec(split, 0)
    train_adam(trained.train(), TrainWindows(split.train, 10), epochs=30, lr=5e-3)
    weights = [x / 4 for x in range(5)]
    learned = evaluate(trained, split).metric("ndcg@10")
    assert learned > 2 * evaluate(untrained, split).metric("ndcg@10")  # the pattern was learned
    # the pattern-learning model beats its untrained self on every group, so the sweep leans to it
    blend = ScoreBlend(trained, untrained)
    choice = blend_sweep(blend, lambda m: evaluate(m, split), weights)
    weight, sweep = choice.value, choice.sweep
    assert weight < 0.5 and [s["weight"] for s in sweep] == weights
    # the Choice carries the VALID report at the chosen weight: the blend, left at that weight, ranks so
    assert blend.weight == weight and choice.report.ranks.tolist() == evaluate(blend, split).ranks.tolist()
    chosen, reference = (next(s for s in sweep if s["weight"] == w) for w in (weight, 1.0))
    assert chosen["overall"] == max(s["overall"] for s in sweep)
    assert all(chosen["groups"][g] >= v for g, v in reference["groups"].items())
    # the other way round the reference is the trained model: only weights near it lose no group
    swapped = blend_sweep(ScoreBlend(untrained, trained), lambda m: evaluate(m, split), weights).value
    assert swapped > 0.5


def test_bad_weights_and_mismatched_windows_are_refused() -> None:
    split = cyclic_split()
    a = _content_sasrec(split, 0)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        ScoreBlend(a, _content_sasrec(split, 1), weight=1.5)
    with pytest.raises(ConfigError, match="history"):
        ScoreBlend(a, _content_sasrec(split, 1, max_len=5))
    with pytest.raises(ConfigError, match="weight 1"):
        blend_sweep(ScoreBlend(a, _content_sasrec(split, 1)), lambda m: evaluate(m, split), [0.0, 0.5])

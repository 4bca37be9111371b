"""Metrics from ranks and pessimistic ranks from scores, against hand values and a naive reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modalrec.evaluation.metrics import compute_metrics, hit_rate, metric_names, mrr, ndcg, ranks_from_scores


def naive_ranks(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    out = []
    for b in range(scores.shape[0]):
        t = targets[b]
        r = 1
        for j in range(scores.shape[1]):
            if j != t and (mask is None or mask[b, j]) and scores[b, j] >= scores[b, t]:
                r += 1
        out.append(r)
    return np.array(out)


def test_metric_values_by_hand() -> None:
    ranks = torch.tensor([1, 2, 3, 11])
    assert float(hit_rate(ranks, 10)) == pytest.approx(0.75)
    assert float(hit_rate(ranks, 1)) == pytest.approx(0.25)
    assert float(ndcg(ranks, 10)) == pytest.approx((1 + 1 / math.log2(3) + 1 / 2 + 0) / 4)
    assert float(ndcg(ranks, 2)) == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert float(mrr(ranks)) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 11) / 4)
    assert float(mrr(ranks, 2)) == pytest.approx((1 + 1 / 2) / 4)


def test_compute_metrics_keys_recall_equals_hr_and_empty_is_none() -> None:
    ranks = torch.tensor([1, 4, 7, 30, 2])
    m = compute_metrics(ranks, (5, 10))
    assert list(m) == metric_names((5, 10))
    for k in (5, 10):
        assert m[f"recall@{k}"] == m[f"hr@{k}"]
    assert m["hr@5"] == pytest.approx(3 / 5)
    empty = compute_metrics(torch.zeros(0, dtype=torch.int64), (5, 10))
    assert set(empty.values()) == {None}
    with pytest.raises(ValueError):
        hit_rate(torch.tensor([0, 1]), 5)  # ranks are 1-based


@pytest.mark.parametrize("use_mask", [False, True])
def test_ranks_from_scores_matches_naive_with_ties(use_mask: bool) -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(40, 25)).astype(np.float32)  # many ties
    targets = rng.integers(0, 25, size=40)
    mask = rng.random((40, 25)) < 0.7 if use_mask else None
    got = ranks_from_scores(
        torch.from_numpy(scores), torch.from_numpy(targets), None if mask is None else torch.from_numpy(mask)
    )
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), naive_ranks(scores, targets, mask))


def test_constant_scores_get_the_worst_rank() -> None:
    scores = torch.full((3, 10), 0.5)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, :4] = False  # 4 non-candidates
    mask[2, 7] = False  # the target is ranked even when marked as a non-candidate
    ranks = ranks_from_scores(scores, torch.tensor([2, 6, 7]), mask)
    assert ranks.tolist() == [10, 6, 10]


def test_nan_scores_raise_naming_rows() -> None:
    scores = torch.randn(5, 8)
    scores[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN.*rows \[3\]"):
        ranks_from_scores(scores, torch.zeros(5, dtype=torch.int64))


def test_infinite_scores_are_ranked_pessimistically() -> None:
    scores = torch.tensor([[float("-inf"), float("-inf"), 0.0], [float("inf"), float("inf"), 0.0]])
    assert ranks_from_scores(scores, torch.tensor([0, 1])).tolist() == [3, 2]

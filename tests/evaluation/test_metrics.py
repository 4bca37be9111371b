"""The metric table, metrics from ranks, and the ranking core's pessimistic ranks from scores, against hand
values and a naive reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modalrec.evaluation import ranking
from modalrec.evaluation.metrics import (
    METRICS,
    compute_metrics,
    definitions,
    hit_rate,
    metric,
    metric_names,
    mrr,
    ndcg,
)
from modalrec.evaluation.ranking import exclusion_pairs, rank_block


def naive_ranks(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """1 + #(candidate columns 1..N other than the target scoring >= it); column 0 is PAD."""
    out = []
    for b in range(scores.shape[0]):
        t = targets[b]
        r = 1
        for j in range(1, scores.shape[1]):
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


def ranks_of(scores: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """rank_block with a dense candidate mask (True = candidate) turned into excluded pairs."""
    excluded = exclusion_pairs(~candidates, targets) if candidates is not None else (None, None)
    return rank_block(scores, targets, *excluded)[0]


@pytest.mark.parametrize("use_mask", [False, True])
def test_rank_block_matches_naive_with_ties(use_mask: bool) -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(40, 25)).astype(np.float32)  # many ties
    targets = rng.integers(1, 25, size=40)
    mask = rng.random((40, 25)) < 0.7 if use_mask else None
    got = ranks_of(torch.from_numpy(scores), torch.from_numpy(targets), None if mask is None else torch.from_numpy(mask))
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), naive_ranks(scores, targets, mask))


@pytest.mark.parametrize("chunk", [7, 30, 64])  # chunks of columns of one row / the whole row / more than a row
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_counting_matches_naive(chunk: int, dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranking, "COUNT_CHUNK", chunk)
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(9, 31)).astype(dtype)  # many ties; columns split unevenly
    targets = rng.integers(1, 31, size=9)
    mask = rng.random((9, 31)) < 0.7
    got = ranks_of(torch.from_numpy(scores), torch.from_numpy(targets), torch.from_numpy(mask))
    np.testing.assert_array_equal(got.numpy(), naive_ranks(scores, targets, mask))
    half = ranks_of(torch.from_numpy(scores).bfloat16(), torch.from_numpy(targets), torch.from_numpy(mask))
    np.testing.assert_array_equal(half.numpy(), naive_ranks(scores, targets, mask))  # small integers are exact
    for row, col in ((8, 30), (0, 0), (4, 1)):  # NaN in the last chunk, in PAD's column (checked too), the first
        bad = torch.from_numpy(scores.copy())
        bad[row, col] = float("nan")
        with pytest.raises(ValueError, match=rf"NaN.*rows \[{row}\]"):
            ranks_of(bad, torch.from_numpy(targets))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])  # NumPy path / torch path
def test_excluded_pairs_in_any_order_match_naive(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """The NumPy count subtracts each row's excluded items after the row; pairs need not come sorted by row."""
    monkeypatch.setattr(ranking, "COUNT_CHUNK", 8)
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(12, 29)).astype(np.float32)  # many ties
    targets = rng.integers(1, 29, size=12)
    mask = rng.random((12, 29)) < 0.6
    mask[5] = True  # a row with nothing excluded
    rows, items = exclusion_pairs(~torch.from_numpy(mask), torch.from_numpy(targets))
    order = torch.from_numpy(rng.permutation(len(rows)))
    got, _ = rank_block(torch.from_numpy(scores).to(dtype), torch.from_numpy(targets), rows[order], items[order])
    np.testing.assert_array_equal(got.numpy(), naive_ranks(scores, targets, mask))


def test_constant_scores_get_the_worst_rank() -> None:
    scores = torch.full((3, 11), 0.5)  # PAD + 10 items
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 1:5] = False  # 4 non-candidates
    mask[2, 7] = False  # the target is ranked even when marked as a non-candidate
    ranks = ranks_of(scores, torch.tensor([2, 6, 7]), mask)
    assert ranks.tolist() == [10, 6, 10]


def test_nan_scores_raise_naming_rows() -> None:
    scores = torch.randn(5, 8)
    scores[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN.*rows \[3\]"):
        ranks_of(scores, torch.ones(5, dtype=torch.int64))


def test_infinite_scores_are_ranked_pessimistically() -> None:
    scores = torch.tensor([[0.0, float("-inf"), float("-inf"), 0.0], [0.0, float("inf"), float("inf"), 0.0]])
    assert ranks_of(scores, torch.tensor([1, 2])).tolist() == [3, 2]


def test_metric_table_names_every_reported_metric_with_a_direction() -> None:
    reported = metric_names((5, 10))
    assert {metric(n).name for n in reported} == {m.name for m in METRICS.values() if m.compute is not None}
    assert metric("sampled_ndcg@10").name == "ndcg@k" and metric("auc_historical").name == "auc"
    assert metric("rank").direction == "min" and metric("ndcg@10").direction == "max"
    assert set(definitions()) == set(METRICS)
    with pytest.raises(KeyError, match="unknown metric"):
        metric("precision@10")


@pytest.mark.parametrize("chunk", [20, 64, 2**19])  # a few columns per chunk / several / the whole catalogue
def test_dot_product_ranking_without_the_score_block_matches_naive(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """rank_dot_block (scores formed chunk by chunk from state @ table.T) = the naive ranks of the full score
    block, ties included: small integer vectors give exact, often equal, scores; duplicate and zero items tie."""
    monkeypatch.setattr(ranking, "CPU_CHUNK", chunk)
    rng = np.random.default_rng(2)
    table = rng.integers(-2, 3, size=(31, 4)).astype(np.float32)  # PAD + 30 items
    table[0] = 0.0
    table[5] = table[9]  # duplicates tie exactly
    table[12] = 0.0
    state = rng.integers(-2, 3, size=(9, 4)).astype(np.float32)
    targets = rng.integers(1, 31, size=9)
    targets[:3] = (9, 5, 12)
    mask = rng.random((9, 31)) < 0.7
    scores = state @ table.T
    want = naive_ranks(scores, targets, mask)
    t, s = torch.from_numpy(targets), torch.from_numpy(state)
    got, t_score = ranking.rank_dot_block(s, torch.from_numpy(table), t, *exclusion_pairs(~torch.from_numpy(mask), t))
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(t_score[:, 0].numpy(), scores[np.arange(9), targets])
    no_mask = ranking.rank_dot_block(s, torch.from_numpy(table), t)[0]
    np.testing.assert_array_equal(no_mask.numpy(), naive_ranks(scores, targets, None))
    bad = torch.from_numpy(table.copy())
    bad[17, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN.*rows \[0, 1, 2"):
        ranking.rank_dot_block(s, bad, t)
    inf_state = s.clone()  # an infinite state times item 12's zeros: NaN in one column of row 4
    inf_state[4, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN.*rows \[4\]"):
        ranking.rank_dot_block(inf_state, torch.from_numpy(table), t)
    # finite, but past the no-overflow bound: every chunk is checked, ranks unchanged. A power of two keeps every
    # product and sum exact, so ties stay ties whatever order a matmul kernel sums in
    big = s * 2.0**123
    np.testing.assert_array_equal(ranking.rank_dot_block(big, torch.from_numpy(table), t)[0].numpy(),
                                  naive_ranks((big @ torch.from_numpy(table).T).numpy(), targets, None))


@pytest.mark.parametrize("chunk", [20, 2**19])
def test_dot_product_ranking_with_a_per_item_term_and_a_target_bonus_matches_naive(
        chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """rank_dot_block with `item_bias` ranks state @ table.T + item_bias; `target_bonus` lifts each row's target
    alone. Exact integer scores, so ties are ties on both sides."""
    monkeypatch.setattr(ranking, "CPU_CHUNK", chunk)
    rng = np.random.default_rng(4)
    table = rng.integers(-2, 3, size=(41, 4)).astype(np.float32)
    state = rng.integers(-2, 3, size=(12, 4)).astype(np.float32)
    bias = rng.integers(-1, 2, size=41).astype(np.float32)
    bonus = rng.integers(0, 3, size=12).astype(np.float32)
    targets = rng.integers(1, 41, size=12)
    mask = rng.random((12, 41)) < 0.8
    scores = state @ table.T + bias
    lifted = scores.copy()
    lifted[np.arange(12), targets] += bonus
    t = torch.from_numpy(targets)
    args = (torch.from_numpy(state), torch.from_numpy(table), t, *exclusion_pairs(~torch.from_numpy(mask), t))
    got, t_score = ranking.rank_dot_block(*args, item_bias=torch.from_numpy(bias), target_bonus=torch.from_numpy(bonus))
    np.testing.assert_array_equal(got.numpy(), naive_ranks(lifted, targets, mask))
    np.testing.assert_array_equal(t_score[:, 0].numpy(), lifted[np.arange(12), targets])
    plain = ranking.rank_dot_block(*args, item_bias=torch.from_numpy(bias))[0]
    np.testing.assert_array_equal(plain.numpy(), naive_ranks(scores, targets, mask))
    assert (got <= plain).all() and (got < plain).any()  # the bonus only lifts targets

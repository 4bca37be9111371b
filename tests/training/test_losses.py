"""Loss functions against hand computation; the negative sampler's distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modalrec.errors import ConfigError
from modalrec.models.losses import (
    NegativeSampler,
    NextItemLoss,
    batch_candidates,
    bce,
    bpr,
    chunked_softmax_ce,
    full_softmax_ce,
    inbatch_debiased_ce,
    sampled_softmax_ce,
)
from modalrec.models.towers.item_towers import IDTower


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_full_softmax_ce_ignores_pad_targets_and_pad_column() -> None:
    logits = torch.tensor(
        [[[9.0, 1.0, 2.0, 0.5], [0.0, 0.0, 0.0, 0.0]], [[-3.0, 0.2, 0.1, 3.0], [5.0, 1.0, 1.0, 1.0]]]
    )  # [2, 2, N + 1 = 4]
    targets = torch.tensor([[2, 0], [3, 1]])  # one PAD target
    expected = []
    for row, t in ((logits[0, 0], 2), (logits[1, 0], 3), (logits[1, 1], 1)):
        z = [math.exp(float(v)) for v in row[1:]]  # PAD column (index 0) excluded, even when it is large
        expected.append(-math.log(z[t - 1] / sum(z)))
    got = full_softmax_ce(logits, targets)
    assert got.item() == pytest.approx(sum(expected) / 3, rel=1e-6)
    no_pad = full_softmax_ce(logits[..., 1:], targets, pad_column=False)
    assert no_pad.item() == pytest.approx(got.item(), rel=1e-6)
    zero = full_softmax_ce(logits.requires_grad_(), torch.zeros(2, 2, dtype=torch.long))
    assert zero.item() == 0.0 and zero.requires_grad


def test_chunked_softmax_ce_equals_full_softmax_in_value_and_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(300, 8, generator=g, dtype=torch.float64, requires_grad=True)  # [M, d]
    table = torch.randn(51, 8, generator=g, dtype=torch.float64, requires_grad=True)  # [N + 1, d]
    targets = torch.randint(1, 51, (300,), generator=g)
    chunked = chunked_softmax_ce(h, table[1:], targets, budget=64 * 50)  # 5 chunks of 64 rows
    full = full_softmax_ce(h @ table.T, targets)
    assert chunked.item() == pytest.approx(full.item(), rel=1e-12)
    g_chunked = torch.autograd.grad(3.0 * chunked, (h, table))
    g_full = torch.autograd.grad(3.0 * full, (h, table))
    for a, b in zip(g_chunked, g_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.count_nonzero(g_chunked[1][0]) == 0  # PAD row never gets a gradient
    with torch.no_grad():
        assert chunked_softmax_ce(h, table[1:], targets).item() == pytest.approx(full.item(), rel=1e-12)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_chunked_softmax_ce_label_smoothing_equals_torch_cross_entropy(eps: float) -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(200, 8, generator=g, dtype=torch.float64, requires_grad=True)  # [M, d]
    table = torch.randn(40, 8, generator=g, dtype=torch.float64, requires_grad=True)  # [N, d], no PAD row
    targets = torch.randint(1, 41, (200,), generator=g)
    chunked = chunked_softmax_ce(h, table, targets, budget=64 * 40, label_smoothing=eps)  # 4 chunks
    ref = F.cross_entropy(h @ table.T, targets - 1, label_smoothing=eps)
    assert chunked.item() == pytest.approx(ref.item(), rel=1e-12)
    # A confident, correct prediction costs ~0 without smoothing and clearly more with it.
    sure = torch.eye(40, 8, dtype=torch.float64)[:5] * 30.0  # [5, d]: state i points at item i + 1 only
    sure_table = torch.eye(40, 8, dtype=torch.float64)  # [N, d]
    sure_targets = torch.arange(1, 6)
    assert chunked_softmax_ce(sure, sure_table, sure_targets).item() < 1e-6
    assert chunked_softmax_ce(sure, sure_table, sure_targets, label_smoothing=eps).item() > eps
    for a, b in zip(torch.autograd.grad(chunked, (h, table)), torch.autograd.grad(ref, (h, table)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_next_item_loss_label_smoothing_is_checked() -> None:
    with pytest.raises(ConfigError, match="label_smoothing"):
        NextItemLoss("ce", 10, label_smoothing=1.0)
    with pytest.raises(ConfigError, match="'ce' only"):
        NextItemLoss("sampled", 10, label_smoothing=0.1)


def test_sampled_softmax_ce_matches_hand_computation_with_logq_and_accidental_hit() -> None:
    pos = torch.tensor([2.0, 0.5])  # [M = 2]
    neg = torch.tensor([[1.0, 0.0, 3.0], [0.5, 1.5, -1.0]])  # [M, K = 3]
    targets = torch.tensor([7, 4])
    negatives = torch.tensor([4, 7, 9])  # row 0's second negative is its target: an accidental hit
    lq_pos, lq_neg = torch.log(torch.tensor([0.1, 0.3])), torch.log(torch.tensor([0.3, 0.1, 0.2]))
    expected = []
    # row 0: candidates target(q=.1), neg 4 (q=.3), neg 9 (q=.2); neg 7 masked
    z0 = [2.0 - math.log(0.1), 1.0 - math.log(0.3), 3.0 - math.log(0.2)]
    # row 1: target 4 (q=.3); neg 4 is a hit (masked), neg 7 (q=.1), neg 9 (q=.2)
    z1 = [0.5 - math.log(0.3), 1.5 - math.log(0.1), -1.0 - math.log(0.2)]
    for z in (z0, z1):
        expected.append(-z[0] + math.log(sum(math.exp(v) for v in z)))
    got = sampled_softmax_ce(pos, neg, targets, negatives, lq_pos, lq_neg)
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    plain = sampled_softmax_ce(pos, neg, targets, negatives)  # uniform q: no correction
    z = [2.0, 1.0, 3.0]
    assert plain.item() == pytest.approx(
        (-2.0 + math.log(sum(map(math.exp, z))) - 0.5 + math.log(sum(map(math.exp, [0.5, 1.5, -1.0])))) / 2,
        rel=1e-6,
    )


def test_inbatch_debiased_ce_matches_hand_computation() -> None:
    targets = torch.tensor([5, 2, 5])
    items, col = batch_candidates(targets)
    assert items.tolist() == [2, 5] and col.tolist() == [1, 0, 1]
    logits = torch.tensor([[0.3, 1.2], [2.0, -0.5], [0.0, 0.1]])  # [M = 3, U = 2]
    log_q = torch.log(torch.tensor([0.25, 0.5]))
    expected = 0.0
    for r, c in enumerate(col.tolist()):
        z = [float(logits[r, j]) - float(log_q[j]) for j in range(2)]
        expected += -z[c] + math.log(sum(math.exp(v) for v in z))
    assert inbatch_debiased_ce(logits, col, log_q).item() == pytest.approx(expected / 3, rel=1e-6)
    # Popular items are penalised less as negatives after the correction than without it.
    assert inbatch_debiased_ce(logits, col, log_q).item() != pytest.approx(
        inbatch_debiased_ce(logits, col).item()
    )


def test_bpr_and_bce_match_hand_computation() -> None:
    pos = torch.tensor([1.0, -0.5])
    neg = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    valid = torch.tensor([[True, False], [True, True]])
    bpr_expected = (-math.log(_sig(1.0)) - math.log(_sig(-1.5)) - math.log(_sig(0.5))) / 3
    assert bpr(pos, neg, valid).item() == pytest.approx(bpr_expected, rel=1e-6)
    assert bpr(pos, neg[:, 0]).item() == pytest.approx(
        (-math.log(_sig(1.0)) - math.log(_sig(-1.5))) / 2, rel=1e-6
    )
    row0 = -math.log(_sig(1.0)) - math.log(1 - _sig(0.0))
    row1 = -math.log(_sig(-0.5)) - 0.5 * (math.log(1 - _sig(1.0)) + math.log(1 - _sig(-1.0)))
    assert bce(pos, neg, valid).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_negative_sampler_ranges_seeding_and_popularity() -> None:
    counts = np.array([0, 1, 0, 3, 6])  # item 2 never seen
    uni = NegativeSampler(4, "uniform", seed=1)
    a = uni.sample((1000,))
    assert a.min() >= 1 and a.max() <= 4
    uni.reseed(5)
    b1 = uni.sample((50,))
    uni.reseed(5)
    assert torch.equal(b1, uni.sample((50,)))
    pop = NegativeSampler(4, "popularity", counts, seed=0)
    draws = pop.sample((20000,))
    freq = torch.bincount(draws, minlength=5).double() / 20000
    assert freq[2] == 0 and freq[0] == 0
    np.testing.assert_allclose(freq[1:].numpy(), [0.1, 0.0, 0.3, 0.6], atol=0.015)
    np.testing.assert_allclose(pop.log_q(torch.tensor([1, 3, 4])).exp().numpy(), [0.1, 0.3, 0.6], rtol=1e-5)
    with pytest.raises(ConfigError, match="counts"):
        NegativeSampler(4, "popularity")


def test_next_item_loss_ce_equals_full_softmax_and_pad_row_gets_no_gradient() -> None:
    tower = IDTower(6, 4)
    tower.init_weights(torch.Generator().manual_seed(0))
    states = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))  # [B, L, d]
    targets = torch.tensor([[0, 2, 6], [1, 0, 3]])
    loss = NextItemLoss("ce", 6)(states, targets, tower)
    logits = states @ tower.all().T  # [B, L, N + 1]
    torch.testing.assert_close(loss, full_softmax_ce(logits, targets))
    loss.backward()
    assert torch.count_nonzero(tower.embedding.weight.grad[0]) == 0
    with pytest.raises(ConfigError, match="loss"):
        NextItemLoss("hinge", 6)

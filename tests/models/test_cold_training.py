"""Training options for items without training events: the "launched" loss catalogue (an item is a softmax
class / negative only at events at or after its launch) and the training-only popularity term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.data.item_age import NEVER, ItemLaunch
from modalrec.errors import ConfigError
from modalrec.models.freshness import DAY, FreshnessPrior
from modalrec.models.losses import NextItemLoss


def _launch(meta: list[int | None], first: list[int | None]) -> ItemLaunch:
    as_ts = lambda xs: torch.tensor([NEVER] + [NEVER if x is None else x for x in xs])
    return ItemLaunch(as_ts(meta), as_ts(first))


class _Table(torch.nn.Module):
    """An ID tower: one learned row per item (row 0 = PAD)."""

    def __init__(self, n_items: int, dim: int = 4) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_items + 1, dim, generator=torch.Generator().manual_seed(0)))

    def all(self) -> torch.Tensor:
        return self.weight

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.weight[items]


def _grads(catalogue: str, kind: str = "ce", smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    # item 3 is released on day 50 and has no training events; every training event lies before day 50
    launch = _launch([0, 0, 50 * DAY], [1 * DAY, 2 * DAY, None])
    counts = np.array([0, 5, 5, 0])
    states = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    targets, ts = torch.tensor([1, 2, 1, 2, 1, 2]), torch.arange(10, 16) * DAY
    table = _Table(3)
    loss = NextItemLoss(kind, 3, n_negatives=50, counts=counts, catalogue=catalogue, launch=launch,
                        label_smoothing=smoothing)
    out = loss(states, targets, table, query_ts=ts)
    out.backward()
    return out.detach(), table.weight.grad


def test_an_item_is_never_a_negative_before_its_launch() -> None:
    loss, grad = _grads("launched")
    assert grad[3].abs().max() == 0  # not launched at any event: not pushed down
    assert grad[1].abs().max() > 0 and grad[2].abs().max() > 0
    _, grad_all = _grads("all")
    assert grad_all[3].abs().max() > 0  # the whole catalogue pushes the unreleased item down
    states = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    logits = states @ _Table(3).weight[1:3].T  # only items 1 and 2 exist at the events
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1, 0, 1])))


def test_launched_sampled_negatives_and_label_smoothing_skip_unlaunched_items() -> None:
    assert _grads("launched", "sampled")[1][3].abs().max() == 0
    assert _grads("all", "sampled")[1][3].abs().max() > 0
    loss, grad = _grads("launched", smoothing=0.5)
    assert torch.isfinite(loss) and grad[3].abs().max() == 0


def test_a_launched_item_is_a_class_from_its_launch_and_a_target_at_its_first_event() -> None:
    launch = _launch([None, None, 12 * DAY], [1 * DAY, 2 * DAY, 20 * DAY])
    counts = np.array([0, 5, 5, 1])
    loss = NextItemLoss("ce", 3, counts=counts, catalogue="launched", launch=launch)
    states = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    table = _Table(3)
    # day 11: item 3 not launched; day 13: launched (metadata); day 20: item 3 is the target itself
    ts, targets = torch.tensor([11, 13, 20]) * DAY, torch.tensor([1, 1, 3])
    got = loss(states, targets, table, query_ts=ts)
    logits = states @ table.weight[1:].T
    want = torch.stack([
        torch.nn.functional.cross_entropy(logits[0, :2][None], torch.tensor([0])),
        torch.nn.functional.cross_entropy(logits[1][None], torch.tensor([0])),
        torch.nn.functional.cross_entropy(logits[2][None], torch.tensor([2]))]).mean()
    torch.testing.assert_close(got, want)


def test_launched_needs_launch_times_event_times_and_a_softmax_loss() -> None:
    launch = _launch([0], [None])
    with pytest.raises(ConfigError, match="launched"):
        NextItemLoss("ce", 1, catalogue="launched")
    with pytest.raises(ConfigError, match="launched"):
        NextItemLoss("bpr", 1, catalogue="launched", launch=launch)
    loss = NextItemLoss("ce", 1, catalogue="launched", launch=launch)
    with pytest.raises(ValueError, match="target times"):
        loss(torch.randn(2, 4), torch.tensor([1, 1]), _Table(1))


def test_launched_prior_starts_at_launched_item_rates_and_keeps_the_unknown_cell_fixed() -> None:
    # edges (1, 7) days -> cells 0 unknown, 1 (< 1 day), 2 (1-7 days), 3 (older); releases on days 0, 10, 100
    launch = _launch([0, 10 * DAY, 100 * DAY], [None, None, None])
    events = (np.array([2, 2, 1]), np.array([10 * DAY + DAY // 2, 12 * DAY, 20 * DAY]))
    prior = FreshnessPrior(launch, edges_days=(1, 7), start_from=(*events, np.array([1, 2, 3])), launched_only=True)
    # item 3 is unlaunched at every event and leaves the catalogue: items 1 and 2 share each event half and half
    expected = torch.tensor([0.0, 1 / 2, 1 / 2, 1 / 2 + 1 / 2 + 2 / 2])
    want = torch.log((torch.tensor([0.0, 1, 1, 1]) + 1) / (expected + 1))
    want[0] = 0.0
    torch.testing.assert_close(prior.start[:, 0], want)
    prior.init_weights()
    out = prior(torch.tensor([3, 2]), torch.tensor([20 * DAY, 20 * DAY]))  # item 3 unknown, item 2 old
    out.sum().backward()
    assert prior.bias.grad[0].abs().max() == 0 and prior.bias.grad[3].abs().max() > 0


def test_the_popularity_term_is_added_to_training_logits_only() -> None:
    counts = np.array([0, 6, 2, 0])  # item 3 has no training events: counted as one
    states = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([1, 2, 1, 1, 2])
    table = _Table(3)
    got = NextItemLoss("ce", 3, counts=counts, catalogue="all", popularity=0.5)(states, targets, table)
    log_q = torch.log(torch.tensor([6.0, 2.0, 1.0]) / 9.0)
    want = torch.nn.functional.cross_entropy(states @ table.weight[1:].T + 0.5 * log_q, targets - 1)
    torch.testing.assert_close(got, want)
    plain = NextItemLoss("ce", 3, counts=counts, catalogue="all")(states, targets, table)
    assert not torch.allclose(got, plain)
    with pytest.raises(ConfigError, match="popularity"):
        NextItemLoss("sampled", 3, counts=counts, popularity=1.0)


def test_popularity_scope_items_trains_item_vectors_with_the_term_and_the_prior_without_it() -> None:
    launch = _launch([0, 0, 38 * DAY], [None, None, None])
    counts = np.array([0, 6, 2, 0])
    states = torch.randn(5, 4, generator=torch.Generator().manual_seed(4))
    targets, ts = torch.tensor([1, 2, 1, 1, 2]), torch.arange(40, 45) * DAY
    log_q = torch.log(torch.tensor([6.0, 2.0, 1.0]) / 9.0)

    def grads(scope: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        table = _Table(3)
        prior = FreshnessPrior(launch, edges_days=(1, 7))
        with torch.no_grad():
            prior.bias.copy_(torch.tensor([[0.0], [0.3], [0.9], [-0.2]]))
        loss = NextItemLoss("ce", 3, counts=counts, catalogue="all", popularity=1.0, popularity_scope=scope)
        out = loss(states, targets, table, prior, ts)
        out.backward()
        return out.detach(), table.weight.grad[1:], prior.bias.grad

    out, item_grad, prior_grad = grads("items")
    table = _Table(3)
    dot = states @ table.weight[1:].T
    # at days 40-44 items 1 and 2 are >= 7 days old (cell 3), item 3 2-6 days (cell 2)
    bias = torch.tensor([-0.2, -0.2, 0.9]).requires_grad_()
    items_loss = torch.nn.functional.cross_entropy(dot + log_q, targets - 1)
    prior_loss = torch.nn.functional.cross_entropy(dot.detach() + bias, targets - 1)
    torch.testing.assert_close(out, (items_loss + prior_loss).detach())
    items_loss.backward()
    torch.testing.assert_close(item_grad, table.weight.grad[1:])  # the item vectors never see the prior's loss
    prior_loss.backward()
    assert prior_grad[2:].abs().sum() > 0
    # the prior never sees the popularity term
    torch.testing.assert_close(prior_grad[2:, 0], torch.stack([bias.grad[2], bias.grad[:2].sum()]))
    _, _, prior_grad_all = grads("all")
    assert not torch.allclose(prior_grad_all, prior_grad)
    with pytest.raises(ConfigError, match="scope"):
        NextItemLoss("ce", 3, counts=counts, popularity=1.0, popularity_scope="prior")

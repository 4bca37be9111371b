"""The new-item gate: its history features, its fit on a planted pattern, and the per-user lift it adds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modalrec.errors import ConfigError
from modalrec.models.new_item_gate import GateFit, NewItemGate, fit_gate, history_features, roc_auc
from modalrec.types import SeqBatch


def test_history_features_by_hand() -> None:
    counts = torch.tensor([0, 0, 1, 3, 7])  # item 1 never taken in training, item 4 seven times
    history = torch.tensor([[0, 0, 4, 1], [0, 0, 0, 0], [0, 3, 2, 9]])  # item 9: added after training
    f = history_features(history, counts)
    ln = math.log1p
    assert f[0].tolist() == pytest.approx([math.log(2), (ln(7) + 0) / 2, 0.0, 0.0, 0.5])
    assert f[1].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]  # an empty window
    assert f[2].tolist() == pytest.approx([math.log(3), (ln(3) + ln(1)) / 3, 0.0, 0.0, 2 / 3])


def _planted(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Explorers' windows hold items taken once in training, regulars' items taken 50 times; explorers' next
    item is new 80% of the time, regulars' 5%."""
    rng = np.random.default_rng(seed)
    counts = torch.tensor([0] + [1] * 50 + [50] * 50)
    explorer = rng.random(n) < 0.3
    items = np.where(explorer[:, None], rng.integers(1, 51, (n, 6)), rng.integers(51, 101, (n, 6)))
    new = rng.random(n) < np.where(explorer, 0.8, 0.05)
    return torch.from_numpy(items), torch.from_numpy(new), counts


def test_the_gate_learns_which_users_take_new_items() -> None:
    items, new, counts = _planted(2000)
    fit = fit_gate(history_features(items, counts), new)
    assert fit.valid_events == 2000 and fit.valid_new_share == pytest.approx(float(new.float().mean()))
    assert fit.valid_auc > 0.85
    z = fit.z(history_features(items, counts))
    explorer = items[:, 0] <= 50
    assert float(z[explorer].min()) > float(z[~explorer].max())  # every explorer ranks above every regular
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-9) and float(z.std()) == pytest.approx(1.0, abs=1e-6)
    again = GateFit.from_dict(fit.to_dict())
    assert torch.equal(again.z(history_features(items, counts)), z)


def test_the_gate_refuses_valid_without_both_kinds_of_targets() -> None:
    items, _, counts = _planted(50)
    with pytest.raises(ConfigError, match="new_item_gate"):
        fit_gate(history_features(items, counts), torch.zeros(50, dtype=torch.bool))


def test_roc_auc_by_hand() -> None:
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)


class _Fixed(torch.nn.Module):
    """Scores from a fixed [B, N + 1] table, whatever the history."""

    history_length = 4

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores
        self.calls = 0

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        return self.scores.clone() if items is None else self.scores[:, items]


def test_the_gate_lifts_only_items_without_training_events_by_each_users_amount() -> None:
    items, new, counts = _planted(400)
    fit = fit_gate(history_features(items, counts), new)
    counts = torch.cat([counts, torch.tensor([0, 4])])  # catalogue 0..102: item 101 never taken, 102 taken
    base = torch.randn(3, 103)
    batch = SeqBatch(items=items[:3, -4:], targets=torch.tensor([1, 2, 3]), users=torch.arange(3))
    gate = NewItemGate(_Fixed(base), counts[:102], fit, offset=0.5, slope=2.0)  # 102: added after training
    lift = 0.5 + 2.0 * fit.z(history_features(batch.items, counts)).float()
    got = gate.score(batch) - base
    new_items = torch.tensor([101, 102])
    assert torch.allclose(got[:, new_items], lift[:, None].expand(3, 2))
    assert torch.all(got[:, :101] == 0)  # PAD and every item with training events unchanged
    sub = torch.tensor([5, 101, 102, 60])
    assert torch.allclose(gate.score(batch, sub), gate.score(batch)[:, sub])


def test_reused_scores_call_the_model_once_per_batch_and_stop_after() -> None:
    items, new, counts = _planted(100)
    fit = fit_gate(history_features(items, counts), new)
    model = _Fixed(torch.randn(2, 101))
    gate = NewItemGate(model, counts, fit)
    batch = SeqBatch(items=items[:2, -4:], targets=torch.tensor([1, 2]), users=torch.arange(2))
    with gate.reused_scores():
        for slope in (0.0, 1.0, 2.0):
            gate.slope = slope
            gate.score(batch)
        assert gate.score_scale() == pytest.approx(float(model.scores[:, 1:].std(1).mean()), rel=1e-5)
    assert model.calls == 1
    gate.score(batch)
    assert model.calls == 2

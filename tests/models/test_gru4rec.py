"""GRU4Rec learns a planted pattern; PAD never moves its hidden state."""

from __future__ import annotations

import pytest
import torch
from seq_testdata import context, cyclic_split, evaluate, random_batch

from modalrec.data.sequences import TrainWindows
from modalrec.models import build_model
from modalrec.models.sequential.gru4rec import GRU4Rec, GRU4RecConfig
from modalrec.training.loop import TrainConfig, fit
from modalrec.types import SeqBatch


@pytest.mark.parametrize("loss", ["ce", "bpr"])
def test_learns_next_item_pattern(loss: str) -> None:
    split = cyclic_split(n_items=30, n_users=60)
    model = GRU4Rec.build(GRU4RecConfig(dim=32, dropout=0.1, max_len=10, loss=loss), context(split))
    before = evaluate(model, split, part="test")
    train = TrainConfig(epochs=40, patience=5, monitor="hr@1", batch_size=32, lr=1e-2, progress=False)
    fit(model, TrainWindows(split.train, 10), train, validate=lambda m: evaluate(m, split))
    after = evaluate(model, split, part="test")
    assert before.metric("hr@1") < 0.3
    assert after.metric("hr@1") >= 0.9, (loss, after.overall)
    assert after.metric("ndcg@10") >= 0.9


def test_states_of_all_positions_match_prefix_runs() -> None:
    """encode() gives, at every real position, the state of the prefix ending there."""
    split = cyclic_split(n_items=20, n_users=5)
    model = GRU4Rec.build(GRU4RecConfig(dim=8, n_layers=2, max_len=6), context(split)).eval()
    batch = random_batch(20, batch=4, length=6, seed=2)
    with torch.no_grad():
        for name, p in model.gru.named_parameters():  # non-zero biases: a PAD step would move h
            if "bias" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
        assert torch.count_nonzero(model.gru(torch.zeros(1, 1, 8))[0]) > 0
        states = model.encode(batch.items)  # [B, L, d]
        for t in range(6):
            prefix = torch.nn.functional.pad(batch.items[:, : t + 1], (5 - t, 0))  # same prefix, left-padded
            real = batch.items[:, t] > 0
            torch.testing.assert_close(states[real, t], model.encode(prefix)[real, -1], rtol=1e-5, atol=1e-5)


def test_empty_history_gets_a_finite_state_and_registry_builds() -> None:
    split = cyclic_split(n_items=10, n_users=5)
    model = build_model("gru4rec", GRU4RecConfig(dim=8, max_len=5), context(split)).eval()
    empty = SeqBatch(
        torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, dtype=torch.long), torch.zeros(2).long()
    )
    with torch.no_grad():
        scores = model.score(empty)
    assert scores.shape == (2, 11) and torch.isfinite(scores).all()

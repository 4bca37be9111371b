"""SASRec learns a planted pattern with every loss; config errors are clear."""

from __future__ import annotations

import pytest
import torch
from seq_testdata import context, cyclic_split, evaluate, random_batch

from modalrec.data.sequences import TrainWindows
from modalrec.errors import ConfigError
from modalrec.models import build_model
from modalrec.models.base import ModelContext
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.models.towers.item_towers import TowerConfig
from modalrec.training.loop import TrainConfig, fit
from modalrec.types import SeqBatch


@pytest.fixture(scope="module")
def split():  # type: ignore[no-untyped-def]
    return cyclic_split(n_items=30, n_users=60)


@pytest.mark.parametrize("loss", ["ce", "ce+smoothing", "sampled", "bce", "bpr", "inbatch"])
def test_learns_next_item_pattern(split, loss: str) -> None:  # type: ignore[no-untyped-def]
    """Item i is always followed by i + 1: after a short training the next item ranks first on TEST."""
    ctx = context(split)
    cfg = SASRecConfig(
        dim=32,
        n_layers=1,
        n_heads=2,
        dropout=0.1,
        max_len=10,
        loss=loss.split("+")[0],
        n_negatives=20 if loss == "sampled" else None,
        label_smoothing=0.3 if loss == "ce+smoothing" else 0.0,
    )
    model = SASRec.build(cfg, ctx)
    before = evaluate(model, split, part="test")
    train = TrainConfig(epochs=30, patience=4, monitor="hr@1", batch_size=32, lr=1e-2, progress=False)
    hist = fit(model, TrainWindows(split.train, 10), train, validate=lambda m: evaluate(m, split))
    after = evaluate(model, split, part="test")
    # ~20 unseen candidates: a random ranking has HR@1 ~ 0.05 and NDCG@10 ~ 0.3.
    assert before.metric("hr@1") < 0.3
    assert after.metric("hr@1") >= 0.9, (loss, after.overall, hist.valid)
    assert after.metric("ndcg@10") >= 0.9
    assert hist.best_metric is not None and hist.best_metric >= 0.9


def test_build_through_registry_and_bad_configs() -> None:
    split = cyclic_split(n_items=10, n_users=5)
    model = build_model("sasrec", None, context(split))
    assert isinstance(model, SASRec) and model.cfg == SASRecConfig()
    with pytest.raises(ConfigError, match="divisible"):
        build_model("sasrec", SASRecConfig(dim=10, n_heads=3), context(split))
    with pytest.raises(ConfigError, match="loss"):
        build_model("sasrec", SASRecConfig(loss="hinge"), context(split))
    with pytest.raises(ConfigError, match="label_smoothing"):
        build_model("sasrec", SASRecConfig(loss="bpr", label_smoothing=0.1), context(split))
    with pytest.raises(ConfigError, match="tower"):
        build_model("sasrec", SASRecConfig(tower=TowerConfig(kind="pixels")), context(split))
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("sasrecc", None, context(split))


def test_longer_histories_are_truncated_to_max_len() -> None:
    split = cyclic_split(n_items=20, n_users=5)
    model = SASRec.build(SASRecConfig(dim=16, n_layers=1, max_len=6), context(split)).eval()
    batch = random_batch(20, batch=3, length=12, seed=1)
    cut = type(batch)(batch.items[:, -6:], batch.targets[:, -6:], batch.users)
    with torch.no_grad():
        torch.testing.assert_close(model.score(batch), model.score(cut))
    assert torch.isfinite(model.loss(batch))


@pytest.mark.parametrize("positions", ["from_start", "from_end"])
def test_prefix_state_in_a_training_window_matches_evaluation(positions: str) -> None:
    """from_start: the state after item j of a full training window equals the state an evaluation batch
    computes for that prefix alone (left-padded); from_end numbers slots from the right, so it does not."""
    split = cyclic_split(n_items=20, n_users=5)
    cfg = SASRecConfig(dim=16, n_layers=2, max_len=8, positions=positions)
    model = SASRec.build(cfg, context(split)).eval()
    window = torch.tensor([[3, 7, 1, 9, 4, 12, 5, 2]])  # [1, 8] a full window
    with torch.no_grad():
        in_window = model.encode(window)[0]  # [8, d]
        for j in (1, 4, 6):
            prefix = torch.zeros(1, 8, dtype=torch.long)
            prefix[0, 8 - (j + 1) :] = window[0, : j + 1]  # [1, 8] left-padded prefix items[: j + 1]
            alone = model.encode(prefix)[0, -1]
            same = torch.allclose(in_window[j], alone, atol=1e-5)
            assert same == (positions == "from_start"), (positions, j)


def test_unknown_position_numbering_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="positions"):
        build_model("sasrec", SASRecConfig(positions="middle"), context(cyclic_split(n_items=10, n_users=5)))


@pytest.mark.parametrize(("norm", "layers"), [("post", 2), ("pre", 2), ("post", 1), ("post", 0)])
def test_states_of_selected_positions_equal_the_full_encoding(norm: str, layers: int) -> None:
    """encode_at (the last block computes only the scored rows) = encode(...)[at]: the states, and the
    training loss and its gradients, which read only those states."""
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(dim=16, n_layers=layers, n_heads=2, max_len=12, norm=norm, dropout=0.0,
                                label_smoothing=0.3), ModelContext(n_items=30, n_users=6)).eval()
    items = torch.randint(1, 31, (6, 12))
    items[0, :5] = 0  # a short history
    at = torch.rand(6, 12) < 0.4
    at[1] = False  # a row with nothing to score
    at[2, :3] = True  # PAD and real rows alike
    assert torch.allclose(model.encode_at(items, at), model.encode(items)[at], atol=1e-6)
    targets = torch.where(at, torch.randint(1, 31, (6, 12)), 0)
    batch = SeqBatch(items=items, targets=targets, users=torch.arange(6))
    grads = []
    for encode_at in (model.encode_at, lambda x, a: model.encode(x)[a]):  # the selected rows, or all rows
        model.zero_grad()
        model.encode_at = encode_at
        loss = model.loss(batch)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
        del model.encode_at
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0][1], grads[1][1], strict=True))

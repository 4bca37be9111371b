"""The contract every sequence model keeps. Add a model by appending a case to CASES."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from seq_testdata import random_batch

from modalrec.models import MODELS
from modalrec.models.base import ModelContext
from modalrec.models.graph.lightgcn import LightGCN, LightGCNConfig
from modalrec.models.graph.mmgcn import MMGCN, MMGCNConfig
from modalrec.models.graph.vbpr import VBPR, VBPRConfig
from modalrec.models.sequential.bert4rec import BERT4Rec, BERT4RecConfig
from modalrec.models.sequential.gru4rec import GRU4Rec, GRU4RecConfig
from modalrec.models.sequential.knn_start import KNNSASRec, KNNSASRecConfig
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.training.checkpoint import load_state, read_config, save_checkpoint
from modalrec.types import SeqBatch

N_ITEMS = 40

# (id, builder(ctx) -> model). Models score [B, n_items + 1] and train from TrainWindows-style batches.
CASES: list[tuple[str, Callable[[ModelContext], torch.nn.Module]]] = [
    ("sasrec", lambda ctx: SASRec.build(SASRecConfig(dim=16, n_layers=2, n_heads=2, max_len=8), ctx)),
    ("sasrec-preln", lambda ctx: SASRec.build(SASRecConfig(dim=16, n_layers=1, max_len=8, norm="pre"), ctx)),
    ("knn_sasrec", lambda ctx: KNNSASRec.build(KNNSASRecConfig(dim=16, n_layers=1, n_heads=2, max_len=8),
                                               _with_features(ctx))),
    ("gru4rec", lambda ctx: GRU4Rec.build(GRU4RecConfig(dim=16, hidden=24, max_len=8), ctx)),
    ("bert4rec", lambda ctx: BERT4Rec.build(BERT4RecConfig(dim=16, n_layers=2, n_heads=2, max_len=8), ctx)),
    ("lightgcn", lambda ctx: LightGCN.build(LightGCNConfig(dim=16, n_layers=2, max_len=8), ctx)),
    ("mmgcn", lambda ctx: MMGCN.build(MMGCNConfig(dim=8, latent_dim=12, max_len=8), _with_features(ctx))),
    ("vbpr", lambda ctx: VBPR.build(VBPRConfig(dim=8, content_dim=8, max_len=8), _with_features(ctx))),
]


def _with_features(ctx: ModelContext) -> ModelContext:
    """Fixed random text (10-d) and image (6-d) features for the content baselines (item 3 has no image)."""
    g = torch.Generator().manual_seed(11)
    feats = {"text": torch.randn(N_ITEMS + 1, 10, generator=g), "image": torch.rand(N_ITEMS + 1, 6, generator=g)}
    missing = {m: torch.zeros(N_ITEMS + 1, dtype=torch.bool) for m in feats}
    missing["image"][3] = True
    return dataclasses.replace(ctx, item_features=feats, feature_missing=missing)


def _ctx(seed: int = 0) -> ModelContext:
    counts = np.arange(N_ITEMS + 1, dtype=np.int64)
    counts[0] = 0
    return ModelContext(n_items=N_ITEMS, n_users=5, train_item_counts=counts, seed=seed)


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def build(request: pytest.FixtureRequest) -> Callable[[ModelContext], torch.nn.Module]:
    return request.param[1]


def test_shapes_and_item_subset(build: Callable) -> None:
    model = build(_ctx()).eval()
    batch = random_batch(N_ITEMS, batch=5, length=8)
    with torch.no_grad():
        state = model(batch)
        scores = model.score(batch)
        subset = torch.tensor([3, 1, 17])
        part = model.score(batch, items=subset)
    assert state.shape[0] == 5 and state.dim() == 2
    assert scores.shape == (5, N_ITEMS + 1)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(part, scores[:, subset])
    assert model.item_embeddings().shape[0] == N_ITEMS + 1


def test_batched_equals_single_rows(build: Callable) -> None:
    model = build(_ctx()).eval()
    batch = random_batch(N_ITEMS, batch=6, length=8, seed=3)
    with torch.no_grad():
        full = model.score(batch)
        rows = torch.cat(
            [
                model.score(
                    SeqBatch(batch.items[i : i + 1], batch.targets[i : i + 1], batch.users[i : i + 1])
                )
                for i in range(6)
            ]
        )
    torch.testing.assert_close(full, rows, rtol=1e-5, atol=1e-5)


def test_extra_left_padding_changes_nothing(build: Callable) -> None:
    """PAD slots are not items: the same histories padded to a longer length score the same."""
    model = build(_ctx()).eval()
    short = random_batch(N_ITEMS, batch=4, length=5, seed=4)
    longer = SeqBatch(
        torch.nn.functional.pad(short.items, (3, 0)),
        torch.nn.functional.pad(short.targets, (3, 0)),
        short.users,
    )
    with torch.no_grad():
        torch.testing.assert_close(model.score(short), model.score(longer), rtol=1e-5, atol=1e-5)


def test_pad_row_is_zero_and_pad_targets_are_ignored(build: Callable) -> None:
    model = build(_ctx())
    assert torch.count_nonzero(model.item_embeddings()[0]) == 0
    batch = random_batch(N_ITEMS, batch=5, length=8, seed=5)
    model.eval()  # no dropout, so the two losses are comparable
    with_pad_row = SeqBatch(
        torch.cat([batch.items, torch.zeros(1, 8, dtype=torch.long)]),
        torch.cat([batch.targets, torch.zeros(1, 8, dtype=torch.long)]),
        torch.arange(6),
    )
    torch.testing.assert_close(model.loss(batch), model.loss(with_pad_row))


def test_loss_is_a_finite_scalar_with_gradients(build: Callable) -> None:
    model = build(_ctx()).train()
    loss = model.loss(random_batch(N_ITEMS, batch=5, length=8, seed=6))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_init_is_deterministic_in_the_seed(build: Callable) -> None:
    a, b, c = build(_ctx(0)), build(_ctx(0)), build(_ctx(1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_checkpoint_round_trip_gives_identical_scores(build: Callable, tmp_path: Path) -> None:
    model = build(_ctx(0)).eval()
    with torch.no_grad():  # move weights away from init so the round trip is not trivially equal
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        model.item_embeddings()[0].zero_()
    save_checkpoint(tmp_path / "ckpt", model, {"model": "any"}, {"metrics": {"ndcg@10": 0.5}})
    fresh = build(_ctx(7)).eval()
    load_state(tmp_path / "ckpt", fresh)
    batch = random_batch(N_ITEMS, batch=5, length=8, seed=8)
    with torch.no_grad():
        assert torch.equal(model.score(batch), fresh.score(batch))
    assert read_config(tmp_path / "ckpt")["model_class"] == type(model).__name__


def test_registry_lists_each_case_class() -> None:
    classes = {cls for cls, _ in MODELS.values()}
    for _, builder in CASES:
        assert type(builder(_ctx())) in classes

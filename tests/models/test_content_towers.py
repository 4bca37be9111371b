"""Content item towers: shapes, PAD, missing modalities, adaptors, hybrid warm/cold, growing the catalogue."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from modalrec.data.sequences import history_batch
from modalrec.errors import ConfigError, MismatchError
from modalrec.models.base import ModelContext
from modalrec.models.sequential.gru4rec import GRU4Rec, GRU4RecConfig
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.models.towers.content import ContentTower, HybridTower, Whitening
from modalrec.models.towers.fusion import FiLMFusion
from modalrec.models.towers.item_towers import TOWERS, TowerConfig, tower_from_config
from modalrec.training.checkpoint import load_state, save_checkpoint
from modalrec.types import SeqBatch

N, DIM = 12, 16
CONTENT = ("text", "image", "text+image", "hybrid")



def _features(n: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    feats = {"text": torch.randn(n + 1, 10, generator=g), "image": torch.rand(n + 1, 6, generator=g)}
    feats["text"][0] = 0
    feats["image"][0] = 0
    missing = {"text": torch.zeros(n + 1, dtype=torch.bool), "image": torch.zeros(n + 1, dtype=torch.bool)}
    missing["image"][3] = True  # item 3 has no picture
    missing["text"][5] = True  # item 5 has no text
    missing["text"][0] = missing["image"][0] = True
    return feats, missing


def _ctx(n: int = N) -> ModelContext:
    feats, missing = _features(n)
    counts = np.zeros(n + 1, dtype=np.int64)
    counts[1 : n - 3] = np.arange(1, n - 3)  # the last 4 items (9..12 when n = 12) never seen in training
    return ModelContext(n_items=n, n_users=5, train_item_counts=counts, item_features=feats,
                        feature_missing=missing, seed=0)


def _tower(kind: str, fusion: str = "mlp", ctx: ModelContext | None = None, **options: object):
    return tower_from_config(TowerConfig(kind=kind, fusion=fusion, options=dict(options)), ctx or _ctx(), DIM)


def test_towers_dict_is_explicit() -> None:
    assert {"id", *CONTENT} <= set(TOWERS)


@pytest.mark.parametrize("kind", CONTENT)
@pytest.mark.parametrize("adaptor", ["linear", "whiten", "moe"])
def test_shapes_pad_and_gather(kind: str, adaptor: str) -> None:
    tower = _tower(kind, adaptor=adaptor, mlp=True, layernorm=True).eval()
    table = tower.all()
    assert table.shape == (N + 1, DIM) and torch.isfinite(table).all()
    assert torch.equal(table[0], torch.zeros(DIM))
    items = torch.tensor([[0, 2, 2, 7], [11, 12, 0, 1]])
    assert torch.allclose(tower(items), table[items], atol=1e-6)
    tower(items).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())


def test_missing_modality_masks() -> None:
    ctx = _ctx()
    text = _tower("text", ctx=ctx).eval()
    assert torch.equal(text.all()[5], torch.zeros(DIM))  # no text -> nothing to say
    both = _tower("text+image", "gated", ctx=ctx).eval()
    before = both.all()
    feats = {k: v.clone() for k, v in ctx.item_features.items()}
    feats["image"][3] = 1e3  # garbage in a missing slot must not leak
    feats["text"][5] = -1e3
    both.set_item_features(feats, ctx.feature_missing)
    after = both.all()
    assert torch.allclose(before, after)
    assert after[3].abs().sum() > 0 and after[5].abs().sum() > 0  # one modality is enough


def test_features_are_not_in_checkpoints(tmp_path) -> None:
    ctx = _ctx()
    model = SASRec(SASRecConfig(dim=DIM, n_layers=1, n_heads=2, max_len=6, tower=TowerConfig(kind="text+image")), ctx)
    keys = set(model.state_dict())
    assert not any(k.split(".")[-1].startswith(("feat_", "present_")) for k in keys)
    assert any(k.endswith("mean") for k in keys)  # the centring statistic is part of the weights
    model.eval()
    batch = history_batch([np.array([1, 2]), np.array([4])], 6)
    save_checkpoint(tmp_path / "ckpt", model, {"model": "sasrec"})
    fresh = SASRec(dataclasses.replace(model.cfg), dataclasses.replace(ctx, seed=7)).eval()
    assert not torch.allclose(fresh.score(batch), model.score(batch))
    load_state(tmp_path / "ckpt", fresh)
    assert torch.allclose(fresh.score(batch), model.score(batch), atol=1e-6)


def test_item_vector_length_defaults_by_kind_and_old_checkpoints_say_how_to_load(tmp_path) -> None:
    ctx = _ctx()
    for kind in ("text", "image", "text+image"):  # unit length times a learned temperature
        norms = _tower(kind, ctx=ctx).eval().all()[1:].norm(dim=-1)
        present = norms > 0  # an item without the tower's only modality scores from a zero vector
        assert int(present.sum()) >= N - 1
        torch.testing.assert_close(norms[present], torch.ones(int(present.sum())))
        assert _tower(kind, ctx=ctx).log_scale is not None
    hybrid = _tower("hybrid", ctx=ctx)  # hybrids keep the fixed length 3
    assert hybrid.content.log_scale is None
    torch.testing.assert_close(hybrid.content.eval().all()[1:].norm(dim=-1), torch.full((N,), 3.0))  # text+image
    fixed = _tower("text", ctx=ctx, scale=3.0, learn_scale=False)
    assert fixed.log_scale is None
    cfg = SASRecConfig(dim=DIM, n_layers=1, n_heads=2, max_len=6,
                       tower=TowerConfig(kind="text", options={"scale": 3.0, "learn_scale": False}))
    save_checkpoint(tmp_path / "fixed", SASRec(cfg, ctx), {"model": "sasrec"})
    with pytest.raises(MismatchError, match="learn_scale=false, scale=3.0"):
        load_state(tmp_path / "fixed", SASRec(dataclasses.replace(cfg, tower=TowerConfig(kind="text")), ctx))


def test_whitening_bias_starts_at_train_mean() -> None:
    ctx = _ctx()
    tower = _tower("text", ctx=ctx, adaptor="whiten")
    white = next(m for m in tower.modules() if isinstance(m, Whitening))
    x = torch.nn.functional.normalize(ctx.item_features["text"][[1, 2, 3, 4, 6, 7, 8]], dim=-1)  # warm, with text
    assert torch.allclose(white.bias.detach(), x.mean(0), atol=1e-6)


def test_hybrid_uses_ids_only_for_warm_items() -> None:
    ctx = _ctx()
    hybrid = _tower("hybrid", "sum", ctx=ctx, id_init_std=0.5).eval()
    assert isinstance(hybrid, HybridTower)
    content = hybrid.content.all()
    table = hybrid.all()
    warm = torch.zeros(N + 1, dtype=torch.bool)
    warm[1:9] = True
    assert torch.allclose(table[~warm], content[~warm])  # cold (and PAD): content only
    assert (table[warm] - content[warm]).abs().sum(1).min() > 0  # warm: content + own ID vector
    learned = _tower("hybrid", "sum", ctx=ctx, cold_default="learned", id_dropout=0.5)
    with torch.no_grad():
        learned.cold_vector.fill_(1.0)
    learned.eval()
    t = learned.all()
    assert torch.allclose(t[10] - learned.content.all()[10], torch.ones(DIM))
    assert torch.equal(t[0], torch.zeros(DIM))
    # id_dropout acts only in training mode: eval is deterministic
    assert torch.equal(learned.all(), learned.all())


def test_film_identity_survives_sequence_model_init() -> None:
    model = SASRec(SASRecConfig(dim=DIM, n_layers=1, n_heads=2, max_len=6,
                                tower=TowerConfig(kind="text+image", fusion="film")), _ctx())
    film = model.tower.fusion
    assert isinstance(film, FiLMFusion)
    assert torch.equal(film.gamma.weight, torch.zeros_like(film.gamma.weight))
    assert torch.equal(film.beta.bias, torch.zeros_like(film.beta.bias))


@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("kind", CONTENT)
def test_sequence_models_score_appended_items(model_name: str, kind: str) -> None:
    ctx = _ctx()
    tower = TowerConfig(kind=kind)
    model = (SASRec(SASRecConfig(dim=DIM, n_layers=1, n_heads=2, max_len=6, tower=tower), ctx) if model_name == "sasrec"
             else GRU4Rec(GRU4RecConfig(dim=DIM, max_len=6, tower=tower), ctx)).eval()
    batch = history_batch([np.array([1, 2, 3]), np.array([9])], 6)
    before = model.score(batch)
    assert before.shape == (2, N + 1)
    feats, missing = _features(N + 2)  # same seed: rows 0..N identical, two new rows appended
    feats = {k: torch.cat([ctx.item_features[k], v[N + 1 :]]) for k, v in feats.items()}
    missing = {k: torch.cat([ctx.feature_missing[k], torch.zeros(2, dtype=torch.bool)]) for k in missing}
    feats["text"][N + 2] = feats["text"][4]  # new item N+2 has exactly item 4's content
    feats["image"][N + 2] = feats["image"][4]
    model.set_item_features(feats, missing)
    after = model.score(batch)
    assert after.shape == (2, N + 3)
    assert torch.allclose(after[:, : N + 1], before, atol=1e-5)  # old items unchanged
    if kind != "hybrid":  # content only: same content -> same score
        assert torch.allclose(after[:, N + 2], after[:, 4], atol=1e-5)
    else:  # item 4 is warm (content + its ID), the copy is cold (content only)
        assert torch.allclose(after[:, N + 2], model.score(batch, torch.tensor([4]))[:, 0]
                              - (model.forward(batch) @ model.tower.id_embedding.weight[4]), atol=1e-4)


def test_set_item_features_errors() -> None:
    tower = _tower("text+image")
    feats, missing = _features(N)
    with pytest.raises(MismatchError, match="lack modality"):
        tower.set_item_features({"text": feats["text"]}, missing)
    with pytest.raises(MismatchError, match="trained on 6-d"):
        tower.set_item_features({"text": feats["text"], "image": torch.rand(N + 1, 7)}, missing)
    with pytest.raises(MismatchError, match="different item counts"):
        tower.set_item_features({"text": feats["text"], "image": feats["image"][:-1]}, missing)
    with pytest.raises(IndexError, match="set_item_features"):
        tower(torch.tensor([N + 3]))


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="features.image"):
        tower_from_config(TowerConfig(kind="image"), dataclasses.replace(_ctx(), item_features={
            "text": torch.zeros(N + 1, 4)}), DIM)
    with pytest.raises(ConfigError, match="unknown config key"):
        _tower("text", adaptr="whiten")
    with pytest.raises(ConfigError, match="adaptor"):
        _tower("text", adaptor="pca")
    with pytest.raises(ConfigError, match="fusion"):
        _tower("text+image", "concat")
    feats, missing = _features(N + 3)
    with pytest.raises(MismatchError, match="another catalogue"):
        tower_from_config(TowerConfig(kind="text"), dataclasses.replace(_ctx(), item_features=feats,
                                                                         feature_missing=missing), DIM)
    with pytest.raises(ConfigError, match="train_item_counts"):
        tower_from_config(TowerConfig(kind="hybrid"), dataclasses.replace(_ctx(), train_item_counts=None), DIM)


@pytest.mark.parametrize("loss", ["inbatch", "sampled", "bpr", "ce"])
def test_losses_with_content_towers(loss: str) -> None:
    """Every loss trains a content tower; in-batch / sampled / BPR never embed the whole catalogue."""
    n = 200
    ctx = _ctx(n)
    model = SASRec(SASRecConfig(dim=DIM, n_layers=1, n_heads=2, max_len=6, loss=loss, n_negatives=5,
                                tower=TowerConfig(kind="text")), ctx)
    tower = model.tower
    assert isinstance(tower, ContentTower)
    rows: list[int] = []
    tower.projectors[0].register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0]))
    items = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 5, 6, 7, 8, 9]])
    targets = torch.tensor([[0, 0, 2, 3, 4, 5], [0, 6, 7, 8, 9, 10]])
    batch = SeqBatch(items=items, targets=targets, users=torch.tensor([1, 2]))
    loss_value = model.loss(batch)
    loss_value.backward()
    assert torch.isfinite(loss_value)
    assert tower.projectors[0].adaptor.linear.weight.grad.abs().sum() > 0
    if loss == "ce":  # full softmax: the whole catalogue, once
        assert max(rows) == n + 1
    elif loss == "inbatch":  # the batch's own items (inputs, then distinct targets) only
        assert max(rows) <= 11 and sum(rows) < 25
    else:  # plus the sampled negatives (5 shared, or 5 per position for BPR)
        assert max(rows) < 60 and n + 1 not in rows


@pytest.mark.parametrize("kind", ["text+image", "hybrid"])
def test_chunked_feature_reads_match_whole_table(kind: str, monkeypatch) -> None:
    """Without autograd `all()` embeds the catalogue in row chunks and the train mean is read in chunks:
    the same numbers as one pass over the whole table (a chunk of 5 rows splits the 13-row table unevenly)."""
    from modalrec.models.towers import content

    whole = _tower(kind, ctx=_ctx(), adaptor="whiten", mlp=True, layernorm=True).eval()
    with torch.no_grad():
        expected = whole.embed(torch.arange(N + 1))
    monkeypatch.setattr(content, "EMBED_CHUNK", 5)
    chunked = _tower(kind, ctx=_ctx(), adaptor="whiten", mlp=True, layernorm=True).eval()
    with torch.no_grad():
        assert torch.allclose(chunked.all(), expected, atol=1e-6)
    assert torch.allclose(chunked.all(), expected, atol=1e-6)  # with autograd: one pass, same rows
    white = next(m for m in chunked.modules() if isinstance(m, Whitening))
    feats = _ctx().item_features["text"]
    # warm items 1..8 with text (item 5 has none), L2-normalised, averaged (test_whitening_bias_starts_at_train_mean)
    ref = torch.nn.functional.normalize(feats[[1, 2, 3, 4, 6, 7, 8]], dim=-1).mean(0)
    assert torch.allclose(white.bias.detach(), ref, atol=1e-6)


def test_content_aux_adds_a_loss_of_the_content_part_alone_and_needs_a_hybrid_tower() -> None:
    from seq_testdata import random_batch

    def model(aux: float, kind: str = "hybrid") -> SASRec:
        cfg = SASRecConfig(dim=DIM, n_layers=1, n_heads=1, max_len=8, loss="ce", loss_catalogue="all",
                           content_aux=aux, tower=TowerConfig(kind=kind, options={"id_init_std": 0.5}))
        return SASRec(cfg, _ctx()).eval()  # eval: no dropout, so the terms can be recomputed exactly

    batch = random_batch(N, seed=3)
    with_aux, plain = model(0.5), model(0.0)
    plain.load_state_dict(with_aux.state_dict())
    at = batch.targets > 0
    states = with_aux.encode_at(batch.items, at)
    content_only = with_aux.criterion(states, batch.targets[at], with_aux.tower.content)
    torch.testing.assert_close(with_aux.loss(batch), plain.loss(batch) + 0.5 * content_only)
    # the content part alone ranks differently from content + IDs: the term is not a copy of the main loss
    assert not torch.allclose(content_only, plain.loss(batch))
    with pytest.raises(ConfigError, match="content_aux"):
        model(0.5, kind="text")
    with pytest.raises(ConfigError, match="content_aux"):
        model(-1.0)

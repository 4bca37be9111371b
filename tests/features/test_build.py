"""The encoding job: resume gives byte-identical stores, missing images are reported, append encodes
only new items, mismatched setups are refused, sharded runs finalise to the same bytes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from feature_helpers import Interrupting, make_items, tree_bytes

from modalrec.errors import DataError, MismatchError
from modalrec.features.build import encode_catalogue
from modalrec.features.encoders.base import EncodedBatch
from modalrec.features.encoders.hashing import HashingText
from modalrec.features.encoders.stats import ColourTextureStats
from modalrec.features.store import FeatureStore

JOB = {"chunk_size": 8, "batch_size": 3, "progress": False, "device": "cpu"}


def test_resume_after_crash_is_byte_identical(tmp_path: Path) -> None:
    items = make_items(40)
    ref = encode_catalogue(items, tmp_path / "ref", {"text": HashingText(64)}, template="{title}", **JOB)
    assert ref.finalised and ref.mode == "create" and ref.modalities["text"].n_encoded == 40
    crashing = Interrupting(HashingText(64), fail_after=7)  # 3 batches per chunk: dies inside chunk 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_catalogue(items, tmp_path / "run", {"text": crashing}, template="{title}", **JOB)
    assert not (tmp_path / "run").exists(), "no store under the final name after a crash"
    done = sorted((tmp_path / "run.partial" / "text").glob("chunk-*.done.json"))
    assert len(done) == 2, "finished chunks are kept, the unfinished one is lost"
    again = Interrupting(HashingText(64), fail_after=None)
    res = encode_catalogue(items, tmp_path / "run", {"text": again}, template="{title}", **JOB)
    ms = res.modalities["text"]
    assert (ms.n_resumed, ms.n_encoded, again.calls) == (16, 24, 9)
    assert ms.n_missing == 1 and res.finalised
    assert tree_bytes(tmp_path / "ref") == tree_bytes(tmp_path / "run")
    assert not (tmp_path / "run.partial").exists()


def test_resume_with_a_transformer_and_two_modalities(tmp_path: Path, bert_tokenizer: Any,
                                                      image_files: Callable[..., dict[str, str]]) -> None:
    transformers = pytest.importorskip("transformers")
    from modalrec.features.encoders.text import HFTextEncoder

    files = image_files(3)
    paths = [files[k] for k in ("good0", "good1", "good2", "corrupt", "absent")] * 4
    items = make_items(20, images=paths)
    cfg = transformers.BertConfig(vocab_size=bert_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64)
    bert = HFTextEncoder(cfg, bert_tokenizer, max_length=64)
    encoders = {"text": bert, "image": ColourTextureStats()}
    tmpl = "{title} by {brand}"
    encode_catalogue(items, tmp_path / "ref", encoders, template=tmpl, dtype="float32", **JOB)
    with pytest.raises(RuntimeError):
        encode_catalogue(items, tmp_path / "run", {"text": Interrupting(bert, 4), "image": ColourTextureStats()},
                         template=tmpl, dtype="float32", **JOB)
    res = encode_catalogue(items, tmp_path / "run", encoders, template=tmpl, dtype="float32", **JOB)
    assert res.modalities["text"].n_resumed == 8 and res.modalities["image"].n_missing == 8
    assert tree_bytes(tmp_path / "ref") == tree_bytes(tmp_path / "run")
    store = FeatureStore.open(tmp_path / "run", items.vocab)
    assert store.meta["modalities"]["text"]["template"] == tmpl
    np.testing.assert_allclose(store.array("text")[2], bert.encode([items.text(2, tmpl)]).features[0], atol=1e-5)


def test_missing_and_corrupt_images_reported(tmp_path: Path, image_files: Callable[..., dict[str, str]],
                                             caplog: pytest.LogCaptureFixture) -> None:
    files = image_files(2)
    paths = [files["good0"], None, files["corrupt"], files["truncated"], files["absent"], files["good1"]]
    items = make_items(6, images=paths)
    with caplog.at_level(logging.WARNING):
        res = encode_catalogue(items, tmp_path / "fs", {"image": ColourTextureStats()}, **JOB)
    ms = res.modalities["image"]
    assert ms.n_missing == 4 and [p["item"] for p in ms.problems] == ["it1", "it2", "it3", "it4"]
    assert files["corrupt"] in ms.problems[1]["reason"] and "file not found" in ms.problems[3]["reason"]
    assert "'it2'" in caplog.text and files["corrupt"] in caplog.text and files["absent"] in caplog.text
    store = FeatureStore.open(tmp_path / "fs", items.vocab)
    assert store.missing("image").tolist() == [False, False, True, True, True, True, False]
    assert np.all(store.array("image")[2:6] == 0) and np.any(store.array("image")[1] != 0)


def test_append_encodes_only_new_items(tmp_path: Path) -> None:
    items = make_items(20)
    encode_catalogue(items, tmp_path / "fs", {"text": HashingText(32)}, **JOB)
    old = (tmp_path / "fs" / "text.f16").read_bytes()
    bigger = items.extended({"new1": {"title": "brand new gauge"}, "new2": {"title": ""},
                             "new3": {"title": "copper wire"}})
    counting = Interrupting(HashingText(32), None)
    res = encode_catalogue(bigger, tmp_path / "fs", {"text": counting}, **JOB)
    assert res.mode == "append" and res.modalities["text"].n_encoded == 3 and counting.calls == 1
    assert (tmp_path / "fs" / "text.f16").read_bytes()[: len(old)] == old
    store = FeatureStore.open(tmp_path / "fs", bigger.vocab)
    fresh = encode_catalogue(bigger, tmp_path / "fresh", {"text": HashingText(32)}, **JOB)
    assert fresh.finalised
    np.testing.assert_array_equal(store.array("text"), FeatureStore.open(tmp_path / "fresh", bigger.vocab).array("text"))
    assert store.missing("text")[-3:].tolist() == [False, True, False]
    again = encode_catalogue(bigger, tmp_path / "fs", {"text": counting}, **JOB)
    assert again.mode == "up-to-date" and counting.calls == 1


def test_mismatched_setups_refused(tmp_path: Path) -> None:
    items = make_items(10)
    encode_catalogue(items, tmp_path / "fs", {"text": HashingText(32)}, **JOB)
    with pytest.raises(MismatchError, match="different encoder setup"):
        encode_catalogue(items.extended({"z": {"title": "z"}}), tmp_path / "fs", {"text": HashingText(16)}, **JOB)
    with pytest.raises(MismatchError, match="different item vocabulary"):
        encode_catalogue(make_items(10, prefix="other"), tmp_path / "fs", {"text": HashingText(32)}, **JOB)
    with pytest.raises(MismatchError, match="modalities"):
        encode_catalogue(items, tmp_path / "fs", {"title": HashingText(32)}, **JOB)
    res = encode_catalogue(items, tmp_path / "fs", {"text": HashingText(16)}, overwrite=True, **JOB)
    assert res.mode == "create" and FeatureStore.open(tmp_path / "fs", items.vocab).dim("text") == 16


def test_changed_settings_restart_the_partial_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = make_items(30)
    with pytest.raises(RuntimeError):
        encode_catalogue(items, tmp_path / "fs", {"text": Interrupting(HashingText(32), 5)}, **JOB)
    other = {**JOB, "batch_size": 4}  # batch composition changes the numbers of padded models
    with caplog.at_level(logging.WARNING):
        res = encode_catalogue(items, tmp_path / "fs", {"text": HashingText(32)}, **other)
    assert res.modalities["text"].n_resumed == 0 and "discarding partial results" in caplog.text
    with pytest.raises(RuntimeError):
        encode_catalogue(items, tmp_path / "fs2", {"text": Interrupting(HashingText(32), 5)}, **JOB)
    res = encode_catalogue(items, tmp_path / "fs2", {"text": HashingText(32)}, resume=False, **JOB)
    assert res.modalities["text"].n_resumed == 0 and res.modalities["text"].n_encoded == 30


def test_shards_then_finalise(tmp_path: Path) -> None:
    items = make_items(30)
    encode_catalogue(items, tmp_path / "ref", {"text": HashingText(32)}, **JOB)
    for k in range(3):  # shard 0 first: it cannot finalise (others unfinished), a plain call does
        part = encode_catalogue(items, tmp_path / "fs", {"text": HashingText(32)}, shard=(k, 3), **JOB)
        assert part.mode == "partial" and not part.finalised and part.modalities["text"].n_encoded == (14, 8, 8)[k]
    final = encode_catalogue(items, tmp_path / "fs", {"text": HashingText(32)}, **JOB)
    assert final.finalised and final.modalities["text"].n_encoded == 0
    assert final.modalities["text"].n_resumed == 30
    assert tree_bytes(tmp_path / "ref") == tree_bytes(tmp_path / "fs")
    waits: list[int] = []
    for k in (2, 1, 0):  # as under torchrun: each shard waits at the barrier, shard 0 finalises
        res = encode_catalogue(items, tmp_path / "fs2", {"text": HashingText(32)}, shard=(k, 3),
                               barrier=lambda k=k: waits.append(k), **JOB)
        assert res.finalised == (k == 0)
    assert waits == [2, 1, 0] and tree_bytes(tmp_path / "ref") == tree_bytes(tmp_path / "fs2")


class _NaNAt(HashingText):
    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        out = super()._encode_texts(texts)
        out[[i for i, t in enumerate(texts) if t.endswith("#7")]] = np.nan
        return out


def test_nan_from_encoder_is_an_error(tmp_path: Path) -> None:
    items = make_items(12)
    with pytest.raises(DataError, match=r"'text'.*NaN.*'it7'"):
        encode_catalogue(items, tmp_path / "fs", {"text": _NaNAt(16)}, template="{title}", **JOB)
    assert not (tmp_path / "fs").exists()


def test_summary_and_tensors(tmp_path: Path) -> None:
    items = make_items(5)
    res = encode_catalogue(items, tmp_path / "fs", text=HashingText(8), template="{title}", **JOB)
    d = res.to_dict()
    assert d["n_items"] == 5 and d["modalities"]["text"]["shape"] == [8] and d["seconds"] > 0
    feats, missing = res.tensors()
    assert feats["text"].shape == (6, 8) and missing["text"].sum() == 1
    assert "text: hashing-8" in str(res)


class _Echo(HashingText):
    """Records what it was asked to encode (checks the item order the job feeds in)."""

    def __init__(self) -> None:
        super().__init__(8)
        self.seen: list[str] = []

    def encode(self, inputs: Sequence[Any]) -> EncodedBatch:
        self.seen += list(inputs)
        return super().encode(inputs)


def test_batches_are_length_sorted_and_written_back_in_item_order(tmp_path: Path) -> None:
    items = make_items(16)
    echo = _Echo()
    encode_catalogue(items, tmp_path / "fs", {"text": echo}, template="{title}", **JOB)
    lengths = [len(t) for t in echo.seen]
    assert lengths == sorted(lengths, reverse=True)
    store = FeatureStore.open(tmp_path / "fs", items.vocab)
    for i in (1, 9, 16):
        np.testing.assert_allclose(store.array("text")[i], HashingText(8).encode([items.text(i, "{title}")]).features[0],
                                   atol=1e-3)


def _race(monkeypatch: Any, items: Any, out: Path, encoder: Any) -> list[Any]:
    """After this run's first task, another job encodes and finalises `out` with `encoder` (its summary lands in
    the returned list): two jobs sharing a feature cache, deterministically interleaved."""
    from modalrec.features import build

    run_task, other = build._run_task, []

    def task_then_other_job(*args: Any, **kwargs: Any) -> Any:
        result = run_task(*args, **kwargs)
        if not other:
            other.append(None)  # the other job's own tasks run unpatched from here on
            other[0] = encode_catalogue(items, out, {"text": encoder}, template="{title}", **JOB)
        return result

    monkeypatch.setattr(build, "_run_task", task_then_other_job)
    return other


def test_a_store_finished_by_a_concurrent_run_is_used_not_refused(tmp_path: Path, monkeypatch: Any) -> None:
    """While this run encodes, another one finalises the same store: this run opens that store (same catalogue
    and encoder) instead of failing on the existing directory; a different encoder is still refused."""
    items = make_items(20)
    other = _race(monkeypatch, items, tmp_path / "fs", HashingText(32))
    res = encode_catalogue(items, tmp_path / "fs", {"text": HashingText(32)}, template="{title}", **JOB)
    assert other[0].mode == "create" and other[0].finalised
    assert res.mode == "up-to-date" and res.finalised
    np.testing.assert_array_equal(res.open(items.vocab).tensors()[0]["text"].numpy(),
                                  other[0].open(items.vocab).tensors()[0]["text"].numpy())
    _race(monkeypatch, items, tmp_path / "other", HashingText(16))
    with pytest.raises(MismatchError):
        encode_catalogue(items, tmp_path / "other", {"text": HashingText(32)}, template="{title}", **JOB)


def test_encode_cli_writes_the_lexical_modality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`modalrec encode --lexical` adds the exact-words encoding beside --text, one store, one row per item."""
    import json

    from modalrec.cli.main import main

    out = tmp_path / "store"
    args = ["encode", "data.source=synthetic", "data.options.n_users=20", "data.options.n_items=30",
            "--text", "hashing:32", "--lexical", "hashing:64", "--template", "{title}. {description}",
            "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_items"] == 30 and sorted(meta["modalities"]) == ["lexical", "text"]
    assert meta["modalities"]["lexical"]["shape"] == [64] and meta["modalities"]["text"]["shape"] == [32]
    assert main([*args[:-1], str(tmp_path / "hidden"), "--hidden"]) != 0
    assert "--lexical is a pooled feature" in capsys.readouterr().err

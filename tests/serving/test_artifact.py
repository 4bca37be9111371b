"""Artifacts: export from a run, load, and refusal of every kind of mismatch with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalrec.data.vocab import Vocabulary
from modalrec.errors import ConfigError, DataError, MismatchError
from modalrec.serving.artifact import export_artifact, load_artifact
from modalrec.serving.recommender import Recommender


def test_export_contents(content_artifact: Path, content_run) -> None:
    art = load_artifact(content_artifact)
    assert {p.name for p in content_artifact.iterdir()} >= {"artifact.json", "model", "vocab.json", "items.json",
                                                             "users.json", "users.safetensors", "features"}
    assert art.vocab.size == 120 and art.user_vocab.size == 200 and art.model_name == "sasrec"
    assert art.encoders == {"text": "hashing:128", "image": "stats"}
    assert sorted(art.store.modalities) == ["image", "text"] and art.store.n_items == 120
    assert art.meta["train_vocab_hash"] == json.loads((content_run.run_dir / "model" / "item_vocab_hash.json").read_text())
    assert len(art.train_item_counts) == 121 and art.train_item_counts.sum() > 0


def test_export_refuses_existing_dir_and_non_runs(content_run, content_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        export_artifact(content_run.run_dir, content_artifact)
    with pytest.raises(ConfigError, match="not a run directory"):
        export_artifact(tmp_path, tmp_path / "out")


def _rewrite_vocab(d: Path, ids: list[str]) -> Vocabulary:
    v = Vocabulary(ids, name="item")
    v.save(d / "vocab.json")
    return v


def test_vocab_mismatch_is_refused(artifact_copy: Path) -> None:
    ids = load_artifact(artifact_copy).vocab.raw_ids
    _rewrite_vocab(artifact_copy, ids[::-1])  # a valid vocabulary file, but reordered
    with pytest.raises(MismatchError, match="vocab.json .* does not match artifact.json"):
        load_artifact(artifact_copy)
    v = _rewrite_vocab(artifact_copy, ids[::-1])
    meta = json.loads((artifact_copy / "artifact.json").read_text())
    meta["vocab_hash"] = v.hash  # make artifact.json agree: the checkpoint still disagrees
    (artifact_copy / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(MismatchError, match="checkpoint was trained on item vocabulary"):
        load_artifact(artifact_copy)


def test_edited_vocab_file_is_refused(artifact_copy: Path) -> None:
    payload = json.loads((artifact_copy / "vocab.json").read_text())
    payload["ids"][0] = "edited"
    (artifact_copy / "vocab.json").write_text(json.dumps(payload))
    with pytest.raises(DataError, match="hash does not match"):
        load_artifact(artifact_copy)


def test_replaced_weights_are_refused(artifact_copy: Path) -> None:
    path = artifact_copy / "model" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MismatchError, match="model.safetensors has hash"):
        load_artifact(artifact_copy)


def test_store_ahead_of_vocabulary_is_refused(artifact_copy: Path) -> None:
    """An add_items interrupted after the store append: the store has an item vocab.json lacks."""
    import numpy as np

    art = load_artifact(artifact_copy)
    grown = art.vocab.extended(["orphan"])
    art.store.append(grown, {m: np.zeros((1, *art.store.array(m).shape[1:]), np.float32) for m in art.store.modalities},
                     None)
    with pytest.raises(MismatchError, match="features"):
        load_artifact(artifact_copy)


def test_encoder_spec_must_match_the_store(artifact_copy: Path) -> None:
    meta = json.loads((artifact_copy / "artifact.json").read_text())
    meta["features"]["encoders"]["text"] = "hashing:64"
    (artifact_copy / "artifact.json").write_text(json.dumps(meta))
    rec = Recommender.load(artifact_copy)
    with pytest.raises(MismatchError, match="differs from the one that built the text features"):
        rec.add_items([{"id": "x", "title": "a bag"}])
    assert "x" not in rec.vocab and load_artifact(artifact_copy).vocab.size == 120  # nothing half-added

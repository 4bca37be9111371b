"""Artifacts: export from a run, load, and refusal of every kind of mismatch with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalrec.data.vocab import Vocabulary
from modalrec.errors import ConfigError, DataError, MismatchError
from modalrec.serving.artifact import export_artifact, load_artifact, meta_hash
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


def _edit_meta(d: Path, edit, rehash: bool = True) -> None:
    """Change artifact.json; with rehash, as a careful forger would (its own hash recomputed)."""
    meta = json.loads((d / "artifact.json").read_text())
    edit(meta)
    if rehash:
        meta["artifact_hash"] = meta_hash(meta)
    (d / "artifact.json").write_text(json.dumps(meta))


def test_tampered_files_are_refused(artifact_copy: Path) -> None:
    ids = load_artifact(artifact_copy).vocab.raw_ids
    Vocabulary(ids[::-1], name="item").save(artifact_copy / "vocab.json")  # a valid file, reordered
    with pytest.raises(MismatchError, match="vocab.json has changed since export"):
        load_artifact(artifact_copy)


def test_replaced_weights_are_refused(artifact_copy: Path) -> None:
    path = artifact_copy / "model" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MismatchError, match="model.safetensors has changed since export"):
        load_artifact(artifact_copy)


def test_edited_artifact_json_is_refused(artifact_copy: Path, tmp_path: Path) -> None:
    """An encoder spec is part of the hash; and even a re-hashed spec cannot switch on remote code."""
    evil = tmp_path / "evil_model"
    evil.mkdir()
    (evil / "modeling_evil.py").write_text("open(__file__ + '.ran', 'w').write('ran')\n")
    spec = f"hf:{evil}?trust_remote_code=true"

    def set_spec(meta: dict) -> None:
        meta["features"]["encoders"]["text"] = spec

    _edit_meta(artifact_copy, set_spec, rehash=False)
    with pytest.raises(MismatchError, match="does not match its artifact_hash"):
        load_artifact(artifact_copy)
    _edit_meta(artifact_copy, set_spec, rehash=True)
    rec = Recommender.load(artifact_copy)
    with pytest.raises(ConfigError, match="never taken from the artifact"):
        rec.add_items([{"id": "x", "title": "a bag"}])
    assert not (evil / "modeling_evil.py.ran").exists() and "x" not in rec.catalogue


def test_old_format_is_refused_with_reexport_message(artifact_copy: Path) -> None:
    _edit_meta(artifact_copy, lambda meta: meta.update(format_version=1))
    with pytest.raises(DataError, match="re-export"):
        load_artifact(artifact_copy)


def test_encoder_spec_must_match_the_store(artifact_copy: Path) -> None:
    _edit_meta(artifact_copy, lambda meta: meta["features"]["encoders"].update(text="hashing:64"))
    rec = Recommender.load(artifact_copy)
    with pytest.raises(MismatchError, match="differs from the one that built the text features"):
        rec.add_items([{"id": "x", "title": "a bag"}])
    assert "x" not in rec.catalogue and Recommender.load(artifact_copy).n_items == 120  # nothing half-added

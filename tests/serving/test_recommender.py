"""Recommender facade: rankings match the model's own scores, known users, filters, similar items,
adding items (encoded like the store, persisted, rankable at once), removing items, errors, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modalrec.data.sequences import history_batch
from modalrec.errors import DataError, UnknownIdError
from modalrec.serving.recommender import DuplicateIdError, NotSupportedError, Recommender

HIST = ["item00003", "item00010", "item00011"]


@pytest.fixture(scope="module")
def rec(content_artifact: Path) -> Recommender:
    return Recommender.load(content_artifact, persist=False)


def _reference(rec: Recommender, history: list[str], k: int) -> tuple[list[int], torch.Tensor]:
    idx = rec.catalogue.indices(history)
    with torch.no_grad():
        s = rec.model.score(history_batch([idx], rec.model.history_length))[0]  # [n + 1]
    s[0] = float("-inf")
    s[torch.from_numpy(idx)] = float("-inf")
    top = torch.topk(s, k)
    return top.indices.tolist(), top.values


def test_recommend_matches_model_scores_and_excludes_history(rec: Recommender) -> None:
    out = rec.recommend(history=HIST, k=10)
    ids, scores = _reference(rec, HIST, 10)
    assert [rec.catalogue.index(r.item_id) for r in out] == ids
    assert torch.allclose(torch.tensor([r.score for r in out]), scores, atol=1e-4)
    assert not set(HIST) & {r.item_id for r in out}
    assert out[0].title == rec.catalogue.fields["title"][ids[0]]
    with_seen = rec.recommend(history=HIST, k=rec.n_items, exclude_seen=False)
    assert set(HIST) <= {r.item_id for r in with_seen} and len(with_seen) == rec.n_items


def test_known_user_uses_stored_history(rec: Recommender, content_run) -> None:
    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig
    from modalrec.pipeline import load_data

    cfg = from_dict(ExperimentConfig, content_run.manifest["config"])
    ds = load_data(cfg.data)
    u = ds.user_vocab.index("user00007")
    history = [ds.item_vocab.raw(int(i)) for i in ds.interactions.sequence(u)]
    assert [r.item_id for r in rec.recommend(user_id="user00007", k=5)] == \
        [r.item_id for r in rec.recommend(history=history, k=5)]
    with pytest.raises(UnknownIdError, match="user id"):
        rec.recommend(user_id="nobody")


def test_unknown_ids_are_all_listed(rec: Recommender) -> None:
    with pytest.raises(UnknownIdError) as err:
        rec.recommend(history=["ghost-1", "item00001", "ghost-2"])
    assert err.value.ids == ["ghost-1", "ghost-2"] and "ghost-2" in str(err.value)
    with pytest.raises(UnknownIdError):
        rec.similar_items("ghost")
    with pytest.raises(DataError, match="k must be"):
        rec.recommend(history=HIST, k=0)


def test_filters_and_popular_fallback(rec: Recommender) -> None:
    cat = rec.catalogue.fields["category"][5]
    out = rec.recommend(history=HIST, k=10, filters={"category": cat})
    assert out and all(rec.catalogue.fields["category"][rec.catalogue.index(r.item_id)] == cat for r in out)
    with pytest.raises(DataError, match="colour"):
        rec.recommend(history=HIST, filters={"colour": "red"})
    counts = rec.artifact.train_item_counts
    assert rec.catalogue.index(rec.recommend(history=[], k=1)[0].item_id) == int(np.argmax(counts))


def test_a_model_trained_on_first_events_ranks_an_empty_history_itself(first_events_artifact: Path) -> None:
    rec = Recommender.load(first_events_artifact, persist=False)
    assert rec.artifact.meta["empty_history"] == "model"
    out = rec.recommend(history=[], k=10)
    ids, scores = _reference(rec, [], 10)  # the model's own scores of an all-PAD history
    assert [rec.catalogue.index(r.item_id) for r in out] == ids
    assert torch.allclose(torch.tensor([r.score for r in out]), scores, atol=1e-4)


def test_similar_items_is_cosine_over_item_embeddings(rec: Recommender) -> None:
    emb = F.normalize(rec.model.item_embeddings().detach(), dim=-1)
    i = rec.catalogue.index("item00020")
    s = emb @ emb[i]
    s[0] = s[i] = float("-inf")
    out = rec.similar_items("item00020", k=5)
    assert [rec.catalogue.index(r.item_id) for r in out] == torch.topk(s, 5).indices.tolist()
    assert out[0].score == pytest.approx(float(torch.topk(s, 1).values), abs=1e-5)


def test_add_items_encodes_like_the_store_and_persists(artifact_copy: Path, image_root: Path) -> None:
    rec = Recommender.load(artifact_copy)
    top = rec.recommend(history=HIST, k=1)[0].item_id
    src = rec.catalogue.index(top)
    twin = {"id": "twin", **rec.catalogue.record(src), "image": str(image_root / f"{top}.png")}
    assert rec.add_items([twin]) == ["twin"]
    out = rec.recommend(history=HIST, k=2)
    assert {r.item_id for r in out} == {"twin", top}  # identical content -> identical score, both on top
    assert rec.similar_items("twin", k=1)[0].item_id == top
    # The model scores the new item from the appended features exactly like any other item.
    ids, _ = _reference(rec, HIST, 2)
    assert set(ids) == {rec.catalogue.index("twin"), src}
    # Persisted: a fresh load sees the item, its feature row equals the source item's encoding.
    again = Recommender.load(artifact_copy)
    assert again.n_items == rec.n_items and "twin" in again.catalogue
    for feats in again._feats.values():
        assert torch.equal(feats[again.catalogue.index("twin")], feats[src])
    assert np.isnan(again.item_added_at()[src]) and again.item_added_at()[-1] > 0
    with pytest.raises(DuplicateIdError, match="already exist"):
        again.add_items([{"id": "twin", "title": "x"}])
    with pytest.raises(DataError, match="unknown field"):
        again.add_items([{"id": "n1", "colour": "red"}])
    with pytest.raises(DataError, match="neither text nor an image"):
        again.add_items([{"id": "n2", "title": "  "}])


def test_add_items_in_memory_only_leaves_artifact_unchanged(artifact_copy: Path) -> None:
    rec = Recommender.load(artifact_copy, persist=False)
    rec.add_items({"mem-1": {"title": "Juniper Lane daypack", "description": "A daypack for commuting."}})
    assert "mem-1" in rec.catalogue and not (artifact_copy / "catalogue.sqlite").exists()
    assert Recommender.load(artifact_copy).n_items == rec.n_items - 1


def test_remove_items_masks_results(artifact_copy: Path) -> None:
    rec = Recommender.load(artifact_copy)
    first = rec.recommend(history=HIST, k=3)
    rec.remove_items([first[0].item_id])
    assert first[0].item_id not in {r.item_id for r in rec.recommend(history=HIST, k=rec.n_items)}
    assert [r.item_id for r in rec.recommend(history=HIST, k=2)] == [r.item_id for r in first[1:]]
    assert first[0].item_id not in {r.item_id for r in rec.similar_items(first[1].item_id, k=rec.n_items)}
    again = Recommender.load(artifact_copy)
    assert again.item(first[0].item_id)["removed"]  # persisted


def test_id_only_model_refuses_new_items(id_artifact: Path) -> None:
    rec = Recommender.load(id_artifact, persist=False)
    assert not rec.supports_new_items and len(rec.recommend(history=HIST, k=5)) == 5
    with pytest.raises(NotSupportedError, match="learned ID embeddings"):
        rec.add_items([{"id": "new", "title": "a new bag"}])


def test_concurrent_reads_during_adds(artifact_copy: Path) -> None:
    rec = Recommender.load(artifact_copy, persist=False)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                out = rec.recommend(history=HIST, k=10)
                assert len(out) == 10 and all(r.item_id in rec.catalogue for r in out)
            except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for j in range(5):
        rec.add_items([{"id": f"c{j}-{i}", "title": f"bag {j} {i}", "description": "a bag"} for i in range(3)])
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert rec.n_items == 120 + 15


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_serves_the_same_top_items(content_artifact: Path, rec: Recommender, kind: str) -> None:
    pytest.importorskip("faiss")
    opts = {"kind": kind, **({"nlist": 4, "nprobe": 4} if kind == "ivf" else {})}  # small catalogue: probe all
    ann = Recommender.load(content_artifact, index=opts, persist=False)
    for hist in (HIST, ["item00050"], ["item00100", "item00007"]):
        assert [r.item_id for r in ann.recommend(history=hist, k=5)] == [r.item_id for r in rec.recommend(history=hist, k=5)]
    top = ann.recommend(history=HIST, k=1)[0].item_id
    src = ann.catalogue.index(top)
    ann.add_items([{"id": "twin", **ann.catalogue.record(src), "image": ann.catalogue.image_path(src)}])
    assert {r.item_id for r in ann.recommend(history=HIST, k=2)} == {"twin", top}


def test_exact_words_rule_scores_an_added_item_by_its_words(tmp_path: Path) -> None:
    """content_knn over text + lexical (features.lexical) served: an added item is encoded by both encoders and
    ranked by its words at once -- a copy of a history item's text outranks every catalogue item."""
    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig
    from modalrec.pipeline import run_experiment
    from modalrec.serving.artifact import export_artifact

    cfg = {"name": "lexical", "seed": 0, "output_dir": str(tmp_path / "runs"),
           "data": {"source": "synthetic", "options": {"n_users": 60, "n_items": 40, "avg_seq_len": 6}},
           "split": {"kind": "leave_one_out"},
           "features": {"text": "hashing:64", "lexical": "hashing:256", "template": "{title}. {description}",
                        "cache_dir": str(tmp_path / "features")},
           "model": {"name": "content_knn", "params": {"modalities": "text+lexical"}}, "eval": {"ks": [10]}}
    run = run_experiment(from_dict(ExperimentConfig, cfg))
    art = export_artifact(run, tmp_path / "artifact")
    rec = Recommender.load(art, persist=False)
    assert set(rec._feats) == {"text", "lexical"}
    last = HIST[-1]
    rec.add_items([{"id": "copy", **rec.catalogue.record(rec.catalogue.index(last))}])
    out = rec.recommend(history=HIST, k=1)
    assert out[0].item_id == "copy"
    ids, _ = _reference(rec, HIST, 1)
    assert ids == [rec.catalogue.index("copy")]

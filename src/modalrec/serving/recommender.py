"""Recommender: the serving facade over an artifact (recommend, similar items, add / remove items).

Reads run concurrently; mutations (add_items, remove_items) are serialised and swap the catalogue
in under an exclusive lock, so a request sees either the old or the new catalogue, never half of one.
New items are encoded with the FeatureStore's own encoders (same spec, same template, checked against
the store's recorded encoder identity), appended to the store, and pushed into the model's item
features and the index: they are rankable at once, without retraining. ID-only models refuse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from modalrec.data.items import ItemTable
from modalrec.data.vocab import Vocabulary
from modalrec.errors import DataError, MismatchError, UnknownIdError
from modalrec.serving.artifact import Artifact, NotSupportedError, build_model, load_artifact
from modalrec.serving.index import index_from_config

log = logging.getLogger(__name__)

IMAGE_KEY = "image"


class DuplicateIdError(DataError):
    """An item id that already exists (or appears twice in one request)."""


class Recommendation(NamedTuple):
    item_id: str
    score: float
    title: str

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "score": self.score, "title": self.title}


def unknown_ids(kind: str, ids: Sequence[str]) -> UnknownIdError:
    """An UnknownIdError listing every unknown id (`.ids` holds them for the HTTP layer)."""
    shown = ", ".join(repr(i) for i in ids[:20]) + (f" (+{len(ids) - 20} more)" if len(ids) > 20 else "")
    err = UnknownIdError(f"unknown {kind} id(s): {shown}")
    err.ids = list(ids)  # type: ignore[attr-defined]
    return err


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Recommender:
    """Load with `Recommender.load(artifact_dir)`. All ids are raw (string) ids."""

    def __init__(self, artifact: Artifact, model: torch.nn.Module, content: bool, device: str = "cpu",
                 index: Mapping[str, Any] | None = None, persist: bool = True) -> None:
        self.artifact, self.model, self.content, self.device, self.persist = artifact, model, content, device, persist
        self.vocab: Vocabulary = artifact.vocab
        self.items: ItemTable = artifact.items
        self.index_config = dict(index or artifact.meta.get("index") or {"kind": "exact"})
        self._lock, self._write_mutex, self._sim_lock = RWLock(), threading.Lock(), threading.Lock()
        self._feats: dict[str, torch.Tensor] = {}
        self._missing: dict[str, torch.Tensor] = {}
        if artifact.store is not None:
            self._feats, self._missing = artifact.store.tensors()
        removed = torch.zeros(len(self.vocab), dtype=torch.bool)  # [n + 1]
        removed[torch.as_tensor([self.vocab.index(r) for r in artifact.removed], dtype=torch.long)] = True
        self._removed = removed
        self._emb: torch.Tensor | None = None
        self._index: Any = None  # None: rank with model.score (exact, no index)
        self._sim_index: Any = None
        if model.dot_product_scores:  # the contract: score == forward @ item_embeddings().T, so an index ranks
            with torch.no_grad():
                self._emb = model.item_embeddings().detach().float()  # [n + 1, d]
            if self._emb.shape[0] != len(self.vocab):
                raise MismatchError(f"the model scores {self._emb.shape[0] - 1} items, the vocabulary has "
                                    f"{self.vocab.size}; an ID-only model cannot serve items added after training")
            self._index = index_from_config(self._emb, self.index_config, "ip", device)
        self._columns: dict[str, np.ndarray] = {}

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu", index: Mapping[str, Any] | None = None,
             persist: bool = True) -> Recommender:
        """Open an artifact. `index` overrides the artifact's index config ({"kind": "hnsw", ...});
        `persist=False` keeps added / removed items in memory only (the artifact stays unchanged)."""
        art = load_artifact(directory)
        model, content = build_model(art, device)
        return cls(art, model, content, device, index, persist)

    # ---- reading -------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return self.vocab.size

    @property
    def supports_new_items(self) -> bool:
        return self.content

    def describe(self) -> dict[str, Any]:
        with self._lock.read():
            return {"model": self.artifact.model_name, "items": self.vocab.size, "removed": int(self._removed.sum()),
                    "users": self.artifact.user_vocab.size, "content_features": sorted(self._feats),
                    "new_items_supported": self.content, "index": self.index_config.get("kind", "exact"),
                    "vocab_hash": self.vocab.hash, "max_len": self.model.history_length}

    def title(self, idx: int) -> str:
        fields = self.items.fields
        name = "title" if "title" in fields else next(iter(fields), None)
        return fields[name][idx] if name else self.vocab.raw(idx)

    def item(self, item_id: str) -> dict[str, Any]:
        """An item's id, title, text fields, whether it has an image and whether it was removed."""
        with self._lock.read():
            idx = int(self._resolve([item_id])[0])
            return {"id": str(item_id), "title": self.title(idx), "fields": self.items.record(idx),
                    "has_image": self.items.image_paths[idx] is not None, "removed": bool(self._removed[idx])}

    def _resolve(self, ids: Sequence[str]) -> np.ndarray:
        unknown = [str(r) for r in ids if str(r) not in self.vocab]
        if unknown:
            raise unknown_ids("item", unknown)
        return self.vocab.indices([str(r) for r in ids])

    def _filter_mask(self, filters: Mapping[str, Any] | None) -> torch.Tensor | None:
        """[n + 1] bool: items whose field values match every filter ({field: value or [values]})."""
        if not filters:
            return None
        keep = np.ones(len(self.vocab), dtype=bool)
        for name, wanted in filters.items():
            if name not in self.items.fields:
                raise DataError(f"cannot filter on unknown item field; fields: {self.items.field_names}", field=name)
            col = self._columns.get(name)
            if col is None:
                col = self._columns[name] = np.asarray(self.items.fields[name], dtype=object)
            values = [wanted] if isinstance(wanted, str) else [str(v) for v in wanted]
            keep &= np.isin(col, values)
        return torch.from_numpy(keep)

    def recommend(self, history: Sequence[str] | None = None, user_id: str | None = None, k: int = 10,
                  exclude_seen: bool = True, filters: Mapping[str, Any] | None = None) -> list[Recommendation]:
        """Top-k items for a history of raw item ids (oldest first) and / or a known user's stored history.

        With both, the user's history is followed by `history`. With neither (or an empty one) the most
        popular training items are returned. `filters` keeps items whose fields match ({field: value(s)}).
        """
        if int(k) < 1:
            raise DataError(f"k must be >= 1, got {k}", field="k")
        with self._lock.read():
            parts = []
            if user_id is not None:
                if str(user_id) not in self.artifact.user_vocab:
                    raise unknown_ids("user", [str(user_id)])
                parts.append(self.artifact.history(str(user_id)))
            if history:
                parts.append(self._resolve(list(history)))
            hist = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            allowed = ~self._removed.clone()  # [n + 1]
            allowed[0] = False
            if exclude_seen and len(hist):
                allowed[torch.from_numpy(hist)] = False
            fmask = self._filter_mask(filters)
            if fmask is not None:
                allowed &= fmask
            user = self.artifact.user_vocab.index(str(user_id)) if user_id is not None else 0
            scores, ids = self._rank(hist, allowed, int(k), user)
            return [Recommendation(self.vocab.raw(int(i)), float(s), self.title(int(i)))
                    for s, i in zip(scores.tolist(), ids.tolist()) if i > 0]

    def _rank(self, hist: np.ndarray, allowed: torch.Tensor, k: int, user: int = 0,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        from modalrec.data.sequences import history_batch

        if len(hist) == 0:  # no history: most popular training items (items added later count 0)
            counts = torch.zeros(len(self.vocab))
            train = torch.from_numpy(self.artifact.train_item_counts).float()
            counts[: len(train)] = train
            return _masked_topk(counts, allowed, k)
        batch = history_batch([hist], self.model.history_length)
        batch.users[0] = user  # user-item models (LightGCN, VBPR) read it; sequence models ignore it
        batch = batch.to(self.device)
        with torch.no_grad():
            if self._index is not None:
                state = self.model.forward(batch).float()  # [1, d]
                s, i = self._index.search(state, k, allowed)
                return s[0], i[0]
            scores = self.model.score(batch)[0].float().cpu()  # [n + 1]
        return _masked_topk(scores, allowed, k)

    def similar_items(self, item_id: str, k: int = 10) -> list[Recommendation]:
        """The k items whose embeddings have the highest cosine with `item_id`'s (itself and removed excluded)."""
        if int(k) < 1:
            raise DataError(f"k must be >= 1, got {k}", field="k")
        with self._lock.read():
            idx = int(self._resolve([item_id])[0])
            if self._emb is None:
                raise NotSupportedError(f"model {self.artifact.model_name!r} has no item embeddings")
            if self._sim_index is None:
                with self._sim_lock:  # built once, on first use (not _write_mutex: a writer may wait on us)
                    if self._sim_index is None:
                        self._sim_index = index_from_config(self._emb, self.index_config, "cosine", self.device)
            allowed = ~self._removed.clone()
            allowed[0] = allowed[idx] = False
            s, i = self._sim_index.search(self._emb[idx : idx + 1], int(k), allowed)
            return [Recommendation(self.vocab.raw(int(j)), float(v), self.title(int(j)))
                    for v, j in zip(s[0].tolist(), i[0].tolist()) if j > 0]

    # ---- mutation ------------------------------------------------------------------------------
    def remove_items(self, ids: Sequence[str]) -> list[str]:
        """Never recommend these items again (they stay valid in histories). Persisted with the artifact."""
        idx = self._resolve(list(ids))
        with self._write_mutex:
            with self._lock.write():
                self._removed[torch.from_numpy(idx)] = True
            removed = {self.vocab.raw(int(i)) for i in torch.nonzero(self._removed).flatten()}
            if self.persist:
                self.artifact.save_catalogue(self.vocab, self.items, removed)
            else:
                self.artifact.removed = removed
        return [str(r) for r in ids]

    def add_items(self, records: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Add new items: [{"id": ..., <text field>: ..., "image": path}, ...] or {id: {...}}.

        Text fields must be item-table fields; "image" is a path the image encoder reads. Returns the new ids.
        """
        if not self.content:
            raise NotSupportedError(
                f"model {self.artifact.model_name!r} ranks items by learned ID embeddings only; it cannot score "
                "items added after training. Serve a content model (tower text / image / text+image / hybrid)")
        with self._write_mutex:
            recs = self._check_records(records)
            vocab = self.vocab.extended(list(recs))
            items = self.items.extended(recs, image_field=IMAGE_KEY)
            n_old, new = self.vocab.size, np.arange(self.vocab.size + 1, vocab.size + 1)
            values, missing = self.artifact.encode_items(items, new, self.device)
            store = self.artifact.store
            if self.persist:
                hashes = [items.content_hash(int(i)) for i in new]
                self.artifact.store = store.append(vocab, values, missing, hashes)
            rows = {m: torch.from_numpy(np.where(missing[m][:, None], 0.0, values[m])
                                        .astype(store.meta["modalities"][m]["dtype"]).astype(np.float32))
                    for m in values}  # exactly what the store holds (its dtype)
            with self._lock.write():
                feats = {m: torch.cat([self._feats[m], rows[m].to(self._feats[m].device)]) for m in rows}
                miss = {m: torch.cat([self._missing[m], torch.from_numpy(missing[m]).to(self._missing[m].device)])
                        for m in rows}
                self.model.set_item_features({m: f.to(self.device) for m, f in feats.items()},
                                             {m: f.to(self.device) for m, f in miss.items()})
                self._feats, self._missing = feats, miss
                self.vocab, self.items, self._columns = vocab, items, {}
                self._removed = torch.cat([self._removed, torch.zeros(len(new), dtype=torch.bool)])
                if self._emb is not None:
                    new_emb = self._embed(torch.from_numpy(new))  # [k, d]
                    self._emb = torch.cat([self._emb, new_emb])
                    self._index.add(new_emb)
                    if self._sim_index is not None:
                        self._sim_index.add(new_emb)
            if self.persist:
                self.artifact.save_catalogue(vocab, items, self.artifact.removed)
            log.info("added %d items (catalogue %d -> %d)", len(new), n_old, vocab.size)
            return list(recs)

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.embed_items(idx.to(self.device)).detach().float()  # [k, d]

    def _check_records(self, records: Any) -> dict[str, dict[str, Any]]:
        if isinstance(records, Mapping):
            records = [{"id": rid, **dict(rec)} for rid, rec in records.items()]
        if not records:
            raise DataError("no items given", field="items")
        fields, out = set(self.items.fields), {}
        for n, rec in enumerate(records):
            rid = str(rec.get("id", "")).strip()
            if not rid:
                raise DataError(f"item #{n} has no id", field="id")
            extra = set(rec) - fields - {"id", IMAGE_KEY}
            if extra:
                raise DataError(f"item {rid!r}: unknown field(s) {sorted(extra)}; item fields are "
                                f"{sorted(fields)} and {IMAGE_KEY!r}", field=min(extra))
            if not any(str(rec.get(f) or "").strip() for f in fields) and not rec.get(IMAGE_KEY):
                raise DataError(f"item {rid!r} has neither text nor an image; it could not be ranked", field="id")
            if rid in out:
                raise DuplicateIdError(f"item id {rid!r} appears twice in the request", field="id")
            out[rid] = {**{f: str(rec[f]) for f in fields if rec.get(f) is not None},
                        IMAGE_KEY: (str(rec[IMAGE_KEY]) if rec.get(IMAGE_KEY) else None)}
        clash = [r for r in out if r in self.vocab]
        if clash:
            raise DuplicateIdError(f"item id(s) already exist: {clash[:20]}", field="id")
        return out


def _masked_topk(scores: torch.Tensor, allowed: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [n + 1], allowed [n + 1] -> (top scores [k'], indices [k']) over allowed items only."""
    s = scores.masked_fill(~allowed, float("-inf"))
    k = min(k, int(allowed.sum()))
    top_s, top_i = torch.topk(s, k)  # [k]
    return top_s, top_i

"""Recommender: the serving facade over an artifact and its live catalogue (recommend, similar items,
add / remove items).

The exported artifact is read-only; items added or removed later live in the catalogue database beside
it (`modalrec.serving.catalogue`). Every process that opens the artifact replays the catalogue in index
order and catches up with other processes' commits through `sync()`, so replicas and a notebook on the
same artifact agree. An add encodes the new items with the FeatureStore's own encoders (same spec, same
text template, identity-checked) before any lock is taken, commits them in one transaction, then applies
the commit: the swap into the model's item features and the index happens under a short exclusive lock,
so a request sees either the old or the new catalogue, never half of one. ID-only models refuse adds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from modalrec.data.items import ItemTable
from modalrec.data.vocab import PAD_TOKEN, Vocabulary
from modalrec.devices import resolve_device
from modalrec.errors import DataError, MismatchError, UnknownIdError
from modalrec.models.freshness import LaunchAges
from modalrec.serving.artifact import Artifact, NotSupportedError, build_model, load_artifact
from modalrec.serving.catalogue import (
    DEFAULT_FILE,
    AddedItem,
    CatalogueStore,
    Changes,
    DuplicateIdError,
    Layout,
    NewItem,
    is_postgres_url,
    normalise_id,
    open_catalogue,
)
from modalrec.serving.index import index_from_config

log = logging.getLogger(__name__)

IMAGE_KEY = "image"
__all__ = ["DuplicateIdError", "LiveCatalogue", "NotSupportedError", "Recommendation", "Recommender"]


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


class LiveCatalogue:
    """The items a process serves: the artifact's plus those added since, by index (0 = PAD).

    ids, text fields, image paths, add times (unix seconds; NaN for exported items) and removal flags.
    Lookups accept an id in any Unicode normal form. An id removed and added again names its newest index.
    """

    def __init__(self, items: ItemTable) -> None:
        self.n_base = items.vocab.size
        self.ids: list[str] = [PAD_TOKEN, *items.vocab.raw_ids]
        self._index = {rid: i for i, rid in enumerate(self.ids) if i}
        self.fields = {name: list(col) for name, col in items.fields.items()}
        self.image_paths: list[str | None] = list(items.image_paths)
        self.image_root = items.image_root
        self._added_at = [math.nan] * len(self.ids)
        self.removed = torch.zeros(len(self.ids), dtype=torch.bool)  # [n + 1]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return len(self.ids) - 1

    @property
    def field_names(self) -> list[str]:
        return list(self.fields)

    def __contains__(self, raw: object) -> bool:
        return self.get(str(raw)) > 0

    def get(self, raw: str) -> int:
        idx = self._index.get(raw, 0)
        return idx or self._index.get(unicodedata.normalize("NFC", raw), 0)

    def index(self, raw: str) -> int:
        idx = self.get(str(raw))
        if not idx:
            raise UnknownIdError(f"unknown item id {raw!r}")
        return idx

    def indices(self, raws: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.index(r) for r in raws), dtype=np.int64, count=len(raws))

    def raw(self, idx: int) -> str:
        return self.ids[int(idx)]

    def live(self, raw: str) -> bool:
        idx = self.get(raw)
        return idx > 0 and not bool(self.removed[idx])

    def record(self, idx: int) -> dict[str, str]:
        return {name: col[idx] for name, col in self.fields.items()}

    def image_path(self, idx: int) -> str | None:
        p = self.image_paths[idx]
        if p is not None and self.image_root and not p.startswith("/"):
            return f"{self.image_root.rstrip('/')}/{p}"
        return p

    def title(self, idx: int) -> str:
        name = "title" if "title" in self.fields else next(iter(self.fields), None)
        return self.fields[name][idx] if name else self.ids[idx]

    def added_at(self) -> np.ndarray:
        """[n + 1] float64 unix seconds at which each item was added (NaN: exported with the artifact)."""
        return np.asarray(self._added_at, dtype=np.float64)

    def append(self, items: Sequence[AddedItem]) -> None:
        """Add committed items (their indices must continue the table). Caller holds the write lock."""
        for it in items:
            if it.idx != len(self.ids):
                raise MismatchError(f"catalogue item index {it.idx} does not continue the served table "
                                    f"({len(self.ids) - 1} items)")
            self.ids.append(it.id)
            self._index[it.id] = it.idx
            for name, col in self.fields.items():
                col.append(str(it.fields.get(name) or ""))
            self.image_paths.append(it.image)
            self._added_at.append(it.added_at)
        self.removed = torch.cat([self.removed, torch.zeros(len(items), dtype=torch.bool)])


class Recommender:
    """Load with `Recommender.load(artifact_dir)`. All ids are raw (string) ids."""

    def __init__(self, artifact: Artifact, model: torch.nn.Module, content: bool, device: str = "cpu",
                 index: Mapping[str, Any] | None = None, persist: bool = True,
                 catalogue: str | Path | None = None, trust_remote_code: bool = False) -> None:
        self.artifact, self.model, self.content, self.device, self.persist = artifact, model, content, device, persist
        self.trust_remote_code = trust_remote_code
        self.encoder_process: Any = None  # an EncoderProcess, when encoding runs in a child process
        self.catalogue = LiveCatalogue(artifact.items)
        self.index_config = dict(index or artifact.meta.get("index") or {"kind": "exact"})
        self._lock, self._write_mutex, self._sim_lock = RWLock(), threading.Lock(), threading.Lock()
        self._feats: dict[str, torch.Tensor] = {}
        self._missing: dict[str, torch.Tensor] = {}
        if artifact.store is not None:
            self._feats, self._missing = artifact.store.tensors()
        self.layout = Layout(tuple((m, int(f.shape[1])) for m, f in self._feats.items()))
        self._emb: torch.Tensor | None = None
        self._index: Any = None  # None: rank with model.score (exact, no index)
        self._sim_index: Any = None
        if model.dot_product_scores:  # the contract: score == forward @ item_embeddings().T, so an index ranks
            with torch.no_grad():
                self._emb = model.item_embeddings().detach().float()  # [n + 1, d]
            if self._emb.shape[0] != len(self.catalogue):
                raise MismatchError(f"the model scores {self._emb.shape[0] - 1} items, the vocabulary has "
                                    f"{self.catalogue.size}; an ID-only model cannot serve items added after training")
            self._index = index_from_config(self._emb, self.index_config, "ip", device)
        self._columns: dict[str, np.ndarray] = {}
        location = str(catalogue) if catalogue is not None else str(artifact.directory / DEFAULT_FILE)
        self.store: CatalogueStore | None = None
        if persist or is_postgres_url(location) or Path(location).is_file():
            # persist=False still serves what the catalogue holds, as a snapshot it never writes to
            self.store = open_catalogue(location, artifact.vocab, artifact.hash, self.layout, read_only=not persist)
        self._cursor = (self.catalogue.n_base, 0)
        self.sync()
        if not persist and self.store is not None:
            self.store.close()
            self.store = None

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu", index: Mapping[str, Any] | None = None,
             persist: bool = True, catalogue: str | Path | None = None,
             trust_remote_code: bool = False) -> Recommender:
        """Open an artifact and its live catalogue.

        index: overrides the artifact's index config ({"kind": "hnsw", ...}).
        persist: False serves a snapshot of the catalogue and keeps adds / removals in memory only.
        catalogue: the catalogue database (default `DIR/catalogue.sqlite`; or a `postgresql://` URL).
        trust_remote_code: allow an encoder that runs code shipped with its model (never read from a file).
        """
        art, device = load_artifact(directory), resolve_device(device)
        model, content = build_model(art, device)
        return cls(art, model, content, device, index, persist, catalogue, trust_remote_code)

    # ---- reading -------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return self.catalogue.size

    @property
    def supports_new_items(self) -> bool:
        return self.content

    def item_added_at(self) -> np.ndarray:
        """[n + 1] float64: unix seconds at which each item index was added through the catalogue
        (`add_items` / POST /items); NaN for the artifact's exported items and for PAD (index 0)."""
        with self._lock.read():
            return self.catalogue.added_at()

    def describe(self) -> dict[str, Any]:
        with self._lock.read():
            return {"model": self.artifact.model_name, "items": self.catalogue.size,
                    "removed": int(self.catalogue.removed.sum()), "users": self.artifact.user_vocab.size,
                    "content_features": sorted(self._feats), "new_items_supported": self.content,
                    "index": self.index_config.get("kind", "exact"), "artifact_hash": self.artifact.hash[:16],
                    "max_len": self.model.history_length}

    def title(self, idx: int) -> str:
        return self.catalogue.title(idx)

    def item(self, item_id: str) -> dict[str, Any]:
        """An item's id, title, text fields, whether it has an image, when it was added and whether it was removed."""
        with self._lock.read():
            idx = int(self._resolve([item_id])[0])
            at = self.catalogue.added_at()[idx] if idx > self.catalogue.n_base else math.nan
            return {"id": self.catalogue.raw(idx), "title": self.title(idx), "fields": self.catalogue.record(idx),
                    "has_image": self.catalogue.image_paths[idx] is not None,
                    "added_at": None if math.isnan(at) else float(at),
                    "removed": bool(self.catalogue.removed[idx])}

    def _resolve(self, ids: Sequence[str]) -> np.ndarray:
        unknown = [str(r) for r in ids if str(r) not in self.catalogue]
        if unknown:
            raise unknown_ids("item", unknown)
        return self.catalogue.indices([str(r) for r in ids])

    def _filter_mask(self, filters: Mapping[str, Any] | None) -> torch.Tensor | None:
        """[n + 1] bool: items whose field values match every filter ({field: value or [values]})."""
        if not filters:
            return None
        keep = np.ones(len(self.catalogue), dtype=bool)
        for name, wanted in filters.items():
            if name not in self.catalogue.fields:
                raise DataError(f"cannot filter on unknown item field; fields: {self.catalogue.field_names}",
                                field=name)
            col = self._columns.get(name)
            if col is None:
                col = self._columns[name] = np.asarray(self.catalogue.fields[name], dtype=object)
            values = [wanted] if isinstance(wanted, str) else [str(v) for v in wanted]
            keep &= np.isin(col, values)
        return torch.from_numpy(keep)

    def recommend(self, history: Sequence[str] | None = None, user_id: str | None = None, k: int = 10,
                  exclude_seen: bool = True, filters: Mapping[str, Any] | None = None) -> list[Recommendation]:
        """Top-k items for a history of raw item ids (oldest first) and / or a known user's stored history.

        With both, the user's history is followed by `history`. With neither (or an empty one) the model ranks
        from an empty history if it was trained on users' first events (`train.first_event_targets`), else the
        most popular training items are returned. `filters` keeps items whose fields match ({field: value(s)}).
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
            allowed = ~self.catalogue.removed.clone()  # [n + 1]
            allowed[0] = False
            if exclude_seen and len(hist):
                allowed[torch.from_numpy(hist)] = False
            fmask = self._filter_mask(filters)
            if fmask is not None:
                allowed &= fmask
            user = self.artifact.user_vocab.index(str(user_id)) if user_id is not None else 0
            scores, ids = self._rank(hist, allowed, int(k), user)
            return [Recommendation(self.catalogue.raw(int(i)), float(s), self.title(int(i)))
                    for s, i in zip(scores.tolist(), ids.tolist()) if i > 0]

    def _rank(self, hist: np.ndarray, allowed: torch.Tensor, k: int, user: int = 0,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        from modalrec.data.sequences import history_batch

        if len(hist) == 0 and self.artifact.meta.get("empty_history") != "model":
            # no history and a model never trained on one: most popular training items (items added later count 0)
            counts = torch.zeros(len(self.catalogue))
            train = torch.from_numpy(self.artifact.train_item_counts).float()
            counts[: len(train)] = train
            return _masked_topk(counts, allowed, k)
        batch = history_batch([hist], self.model.history_length)
        batch.users[0] = user  # user-item models (LightGCN, VBPR) read it; sequence models ignore it
        batch.target_ts = torch.tensor([int(time.time())])  # the query time: item ages are counted to now
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
            allowed = ~self.catalogue.removed.clone()
            allowed[0] = allowed[idx] = False
            s, i = self._sim_index.search(self._emb[idx : idx + 1], int(k), allowed)
            return [Recommendation(self.catalogue.raw(int(j)), float(v), self.title(int(j)))
                    for v, j in zip(s[0].tolist(), i[0].tolist()) if j > 0]

    # ---- mutation ------------------------------------------------------------------------------
    def encode_in_subprocess(self, nice: int = 10) -> None:
        """Encode new items in a child process at lower CPU priority (what `modalrec serve` does): a large
        add then takes no GIL time from requests. Call load_encoders() to start it now."""
        from modalrec.serving.encoding import EncoderProcess

        self.encoder_process = EncoderProcess(self.artifact.directory, self.device, self.trust_remote_code, nice)

    def load_encoders(self) -> None:
        """Build the encoders new items need now (a server calls this at start, not on the first add)."""
        if not self.content:
            return
        if self.encoder_process is not None:
            self.encoder_process.load()
        else:
            self.artifact.load_encoders(self.device, self.trust_remote_code)

    def close(self) -> None:
        """Stop the encoder process and close the catalogue (the Recommender cannot change afterwards)."""
        if self.encoder_process is not None:
            self.encoder_process.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    def sync(self) -> bool:
        """Apply what other processes committed to the catalogue since the last sync; True if anything."""
        if self.store is None:
            return False
        with self._write_mutex:
            changes = self.store.changes(self._cursor)
            if changes is None:
                return False
            self._apply(changes)
            return True

    def remove_items(self, ids: Sequence[str]) -> list[str]:
        """Never recommend these items again (they stay valid in histories); one committed transaction."""
        ids = [str(r) for r in ids]
        with self._write_mutex:
            if self.store is None:
                idx = self._resolve(ids)
                with self._lock.write():
                    self.catalogue.removed[torch.from_numpy(idx)] = True
                return ids
            # ids this process has not seen yet may exist already: the store resolves them in the commit
            canon = [self.catalogue.raw(self.catalogue.get(r)) if self.catalogue.get(r)
                     else unicodedata.normalize("NFC", r) for r in ids]
            self.store.remove(canon)
            self._apply(self.store.changes(self._cursor))
        return ids

    def add_items(self, records: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Add new items: [{"id": ..., <text field>: ..., "image": path}, ...] or {id: {...}}.

        Text fields must be item-table fields; "image" is a path the image encoder reads. Returns the new
        (NFC-normalised) ids. An id that was removed may be added again (as a new item).
        """
        if not self.content:
            raise NotSupportedError(
                f"model {self.artifact.model_name!r} ranks items by learned ID embeddings only; it cannot score "
                "items added after training. Serve a content model (tower text / image / text+image / hybrid)")
        recs = self._check_records(records)
        new = self._encode(recs)  # the slow part: no lock held
        with self._write_mutex:
            if self.store is None:
                first = len(self.catalogue)
                self._apply(Changes(added=[AddedItem(first + j, it.id, it.fields, it.image, time.time(), it.features,
                                                     it.missing) for j, it in enumerate(new)]))
            else:
                self.store.add(new)
                self._apply(self.store.changes(self._cursor))
        log.info("added %d items (catalogue now %d)", len(new), self.catalogue.size)
        return list(recs)

    def _encode(self, recs: Mapping[str, Mapping[str, Any]]) -> list[NewItem]:
        """Encode records exactly as the store was built; values rounded through the store's dtype."""
        names = list(recs)
        fields = {f: [""] + [str(recs[r].get(f) or "") for r in names] for f in self.catalogue.fields}
        table = ItemTable(Vocabulary(names), fields, [None] + [recs[r][IMAGE_KEY] for r in names],
                          self.catalogue.image_root)
        encode = self.encoder_process.encode if self.encoder_process is not None else self.artifact.encode_items
        values, missing = encode(table, np.arange(1, len(names) + 1), self.device,
                                 trust_remote_code=self.trust_remote_code)
        store = self.artifact.store
        rows = {m: np.where(missing[m][:, None], 0.0, values[m]).astype(store.meta["modalities"][m]["dtype"])
                .astype(np.float32) for m in values}  # exactly what an exported item's row holds
        return [NewItem(r, {f: fields[f][j + 1] for f in fields}, recs[r][IMAGE_KEY],
                        {m: rows[m][j] for m in rows}, {m: bool(missing[m][j]) for m in rows})
                for j, r in enumerate(names)]

    def _apply(self, changes: Changes | None) -> None:
        """Swap committed changes into the served state (caller holds _write_mutex)."""
        if changes is None:
            return
        new = changes.added
        rows = {m: torch.from_numpy(np.stack([it.features[m] for it in new])) for m in self._feats} if new else {}
        miss = {m: torch.tensor([it.missing[m] for it in new], dtype=torch.bool) for m in self._feats} if new else {}
        with self._lock.write():
            if new:
                if not self.content:
                    raise MismatchError("the catalogue holds added items but the served model cannot score them")
                feats = {m: torch.cat([self._feats[m], rows[m].to(self._feats[m].device)]) for m in rows}
                missing = {m: torch.cat([self._missing[m], miss[m].to(self._missing[m].device)]) for m in rows}
                self.model.set_item_features({m: f.to(self.device) for m, f in feats.items()},
                                             {m: f.to(self.device) for m, f in missing.items()})
                for ages in self.model.modules():  # freshness priors and history-age inputs age items from their add
                    if isinstance(ages, LaunchAges):
                        ages.append_items([int(it.added_at) for it in new])
                self._feats, self._missing = feats, missing
                first = len(self.catalogue)
                self.catalogue.append(new)
                self._columns = {}
                if self._emb is not None:
                    new_emb = self._embed(torch.arange(first, len(self.catalogue)))  # [k, d]
                    self._emb = torch.cat([self._emb, new_emb])
                    if self._index is not None:
                        self._index.add(new_emb)
                    if self._sim_index is not None:
                        self._sim_index.add(new_emb)
            if changes.removed:
                self.catalogue.removed[torch.tensor([i for i, _ in changes.removed], dtype=torch.long)] = True
        self._cursor = changes.cursor

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.embed_items(idx.to(self.device)).detach().float()  # [k, d]

    def _check_records(self, records: Any) -> dict[str, dict[str, Any]]:
        if isinstance(records, Mapping):
            records = [{"id": rid, **dict(rec)} for rid, rec in records.items()]
        if not records:
            raise DataError("no items given", field="items")
        fields, out = set(self.catalogue.fields), {}
        for n, rec in enumerate(records):
            if rec.get("id") is None or rec.get("id") == "":
                raise DataError(f"item #{n} has no id", field="id")
            rid = normalise_id(rec["id"])
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
        clash = [r for r in out if self.catalogue.live(r)]  # checked again inside the commit
        if clash:
            raise DuplicateIdError(f"item id(s) already exist: {clash[:20]}", field="id")
        return out


def _masked_topk(scores: torch.Tensor, allowed: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [n + 1], allowed [n + 1] -> (top scores [k'], indices [k']) over allowed items only."""
    s = scores.masked_fill(~allowed, float("-inf"))
    k = min(k, int(allowed.sum()))
    top_s, top_i = torch.topk(s, k)  # [k]
    return top_s, top_i

"""The live catalogue: items added to and removed from a served artifact, in a transactional database.

An exported artifact never changes; everything that happens to its catalogue afterwards lives in a
database beside it (SQLite in WAL mode by default, `catalogue.sqlite` in the artifact directory; or a
PostgreSQL server given by a `postgresql://` URL, for servers on several machines). One transaction
holds one add or one removal completely — the new items' ids, indices, fields, image paths, add times
and feature vectors, or the removal flags — so a crash leaves either all of it or none of it.

Tables (the same in both databases):
    meta(key, value)                   schema version, the artifact hash, base item count, feature layout
    items(idx, id, record, added_at,   one row per added item; idx continues the artifact's vocabulary
          features, missing)           (n_base + 1, ...); record = JSON {fields, image}; features = the
                                       float32 vectors of every modality, concatenated in layout order;
                                       missing = bit m set when modality m had no usable content
    removed(seq, idx, removed_at)      one row per removed item index (exported or added)

Rows are only ever appended, and writers are serialised (SQLite `BEGIN IMMEDIATE`, PostgreSQL an
advisory lock held to commit), so indices and removal sequence numbers grow in commit order: a reader
catches up with `WHERE idx > last` / `WHERE seq > last`. SQLite readers skip even that query while
`PRAGMA data_version` says no other connection committed. A removed id may be added again: it gets a
new index (the old one stays removed), and the id then names the new item.

This module imports no torch, so small tools (and the crash test's child) start fast.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.data.vocab import Vocabulary
from modalrec.errors import ConfigError, DataError, MismatchError, UnknownIdError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_FILE = "catalogue.sqlite"
MAX_ID_CHARS = 256


class DuplicateIdError(DataError):
    """An item id that already exists (or appears twice in one request)."""


def normalise_id(raw: object, what: str = "item id") -> str:
    """An id in NFC form, or a DataError: ids are 1-256 printable characters without surrounding spaces."""
    if not isinstance(raw, str):
        raise DataError(f"{what} must be a string, got {type(raw).__name__}", field="id")
    rid = unicodedata.normalize("NFC", raw)
    if not rid:
        raise DataError(f"{what} is empty", field="id")
    if len(rid) > MAX_ID_CHARS:
        raise DataError(f"{what} {rid[:40]!r}... is longer than {MAX_ID_CHARS} characters", field="id")
    if not rid.isprintable():  # control, format (direction overrides), surrogate and unassigned characters
        bad = next(c for c in rid if not c.isprintable())
        raise DataError(f"{what} {rid[:40]!r} contains the non-printable character U+{ord(bad):04X}", field="id")
    if rid != rid.strip():
        raise DataError(f"{what} {rid[:40]!r} starts or ends with whitespace", field="id")
    return rid


@dataclass(frozen=True)
class Layout:
    """Feature modalities and their widths, in the order rows are packed."""

    dims: tuple[tuple[str, int], ...]

    @property
    def width(self) -> int:
        return sum(d for _, d in self.dims)

    def pack(self, features: Mapping[str, np.ndarray], missing: Mapping[str, bool]) -> tuple[bytes, int]:
        parts, mask = [], 0
        for bit, (m, d) in enumerate(self.dims):
            row = np.asarray(features[m], dtype="<f4").reshape(-1)
            if row.shape != (d,):
                raise DataError(f"feature row has {row.shape[0]} values, the catalogue stores {d}", field=m)
            if not np.isfinite(row).all():
                raise DataError("feature row has NaN / inf values", field=m)
            parts.append(row)
            mask |= int(bool(missing.get(m, False))) << bit
        return (np.concatenate(parts).tobytes() if parts else b""), mask

    def unpack(self, blob: bytes, mask: int, idx: int) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
        if len(blob) != 4 * self.width:
            raise MismatchError(f"catalogue row {idx} holds {len(blob)} feature bytes, expected {4 * self.width}")
        flat = np.frombuffer(blob, dtype="<f4")
        out, miss, lo = {}, {}, 0
        for bit, (m, d) in enumerate(self.dims):
            out[m], miss[m], lo = flat[lo : lo + d], bool((mask >> bit) & 1), lo + d
        return out, miss

    def to_json(self) -> str:
        return json.dumps([list(x) for x in self.dims])


@dataclass(frozen=True)
class NewItem:
    """An item to add: its (normalised) id, text fields, image path and encoded features."""

    id: str
    fields: dict[str, str]
    image: str | None
    features: dict[str, np.ndarray]
    missing: dict[str, bool]


@dataclass(frozen=True)
class AddedItem:
    idx: int
    id: str
    fields: dict[str, str]
    image: str | None
    added_at: float  # unix seconds of the commit
    features: dict[str, np.ndarray]
    missing: dict[str, bool]


@dataclass
class Changes:
    """Committed changes after a cursor: added items in index order, removals in commit order."""

    added: list[AddedItem] = field(default_factory=list)
    removed: list[tuple[int, float]] = field(default_factory=list)  # (item index, unix seconds)
    cursor: tuple[int, int] = (0, 0)  # (last item index, last removal seq)


class CatalogueStore:
    """Shared logic of the SQLite and PostgreSQL stores. Methods are thread-safe (one connection, a lock)."""

    placeholder = "?"
    blob_type = "BLOB"

    def __init__(self, location: str, base_ids: Sequence[str], artifact_hash: str, layout: Layout,
                 read_only: bool = False) -> None:
        self.location, self.artifact_hash, self.layout, self.read_only = location, artifact_hash, layout, read_only
        self.n_base = len(base_ids)
        self._base = {rid: i + 1 for i, rid in enumerate(base_ids)}
        self._lock = threading.Lock()
        self._conn = self._connect()
        with self._lock:
            self._init_schema()

    # ---- subclass hooks ------------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin_write(self, cur: Any) -> None:
        raise NotImplementedError

    def _unchanged(self) -> bool:
        """Cheap check that nothing was committed since the last `changes()` (False when unsure)."""
        return False

    # ---- helpers -------------------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    def _run(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._q(sql), tuple(params))
        return cur

    def _tables(self, cur: Any) -> set[str]:
        raise NotImplementedError

    def _init_schema(self) -> None:
        cur = self._conn.cursor()
        try:
            if not self.read_only and not {"meta", "items", "removed"} <= self._tables(cur):
                self._begin_write(cur)  # created in one transaction: a crash leaves no half schema
                if not {"meta", "items", "removed"} <= self._tables(cur):
                    seq = "BIGSERIAL" if self.placeholder == "%s" else "INTEGER"
                    self._run(cur, "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    self._run(cur, f"CREATE TABLE IF NOT EXISTS items (idx BIGINT PRIMARY KEY, id TEXT NOT NULL, "
                                   f"record TEXT NOT NULL, added_at DOUBLE PRECISION NOT NULL, "
                                   f"features {self.blob_type} NOT NULL, missing INTEGER NOT NULL)")
                    self._run(cur, "CREATE INDEX IF NOT EXISTS items_by_id ON items (id)")
                    self._run(cur, f"CREATE TABLE IF NOT EXISTS removed (seq {seq} PRIMARY KEY, "
                                   "idx BIGINT NOT NULL UNIQUE, removed_at DOUBLE PRECISION NOT NULL)")
                    for key, value in self._expected_meta().items():
                        self._run(cur, "INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
                self._conn.commit()
            elif not {"meta", "items", "removed"} <= self._tables(cur):
                raise DataError("the catalogue has no tables (never written); open it writable once",
                                path=self.location)
            have = dict(self._run(cur, "SELECT key, value FROM meta").fetchall())
            self._conn.commit()
        except BaseException:
            self._rollback()
            raise
        want = self._expected_meta()
        if int(have.get("schema_version", 0)) > SCHEMA_VERSION:
            raise DataError(f"catalogue schema {have['schema_version']} is newer than this modalrec "
                            f"({SCHEMA_VERSION}); upgrade modalrec", path=self.location)
        for key in ("artifact_hash", "n_base", "layout"):
            if have.get(key) != want[key]:
                raise MismatchError(f"catalogue {self.location} belongs to another artifact ({key}: "
                                    f"{have.get(key)!r}, this artifact: {want[key]!r}); give this artifact its own "
                                    "catalogue (a new file, or another PostgreSQL database / schema)")

    def _expected_meta(self) -> dict[str, str]:
        return {"schema_version": str(SCHEMA_VERSION), "artifact_hash": self.artifact_hash,
                "n_base": str(self.n_base), "layout": self.layout.to_json()}

    def _rollback(self) -> None:
        try:
            self._conn.rollback()
        except Exception as exc:  # noqa: BLE001 - the connection may be gone; the transaction is dead either way
            log.debug("rollback failed: %s", exc)

    def _live(self, cur: Any, ids: Sequence[str]) -> dict[str, int]:
        """id -> its current item index (the newest index of that id), for ids that exist at all."""
        out: dict[str, int] = {}
        for lo in range(0, len(ids), 500):
            chunk = list(ids[lo : lo + 500])
            marks = ",".join("?" * len(chunk))
            for rid, idx in self._run(cur, f"SELECT id, MAX(idx) FROM items WHERE id IN ({marks}) GROUP BY id",
                                      chunk).fetchall():
                out[rid] = int(idx)
        for rid in ids:
            if rid not in out and rid in self._base:
                out[rid] = self._base[rid]
        return out

    def _removed_among(self, cur: Any, idxs: Sequence[int]) -> set[int]:
        out: set[int] = set()
        for lo in range(0, len(idxs), 500):
            chunk = [int(i) for i in idxs[lo : lo + 500]]
            marks = ",".join("?" * len(chunk))
            out |= {int(r[0]) for r in self._run(cur, f"SELECT idx FROM removed WHERE idx IN ({marks})",
                                                 chunk).fetchall()}
        return out

    def _commit(self) -> None:
        self._conn.commit()

    # ---- the interface -------------------------------------------------------------------------
    def add(self, items: Sequence[NewItem], now: float | None = None) -> list[int]:
        """Add items in one transaction; returns their indices. DuplicateIdError when an id is live."""
        if self.read_only:
            raise ConfigError(f"catalogue {self.location} is open read-only")
        ids = [it.id for it in items]
        if len(set(ids)) != len(ids):
            dup = next(r for r in ids if ids.count(r) > 1)
            raise DuplicateIdError(f"item id {dup!r} appears twice in the request", field="id")
        rows = [self.layout.pack(it.features, it.missing) for it in items]  # validate before locking
        with self._lock:
            cur = self._conn.cursor()
            try:
                self._begin_write(cur)
                live = self._live(cur, ids)
                dead = self._removed_among(cur, list(live.values()))
                clash = [r for r in ids if r in live and live[r] not in dead]
                if clash:
                    shown = ", ".join(repr(r) for r in clash[:20]) + (" ..." if len(clash) > 20 else "")
                    raise DuplicateIdError(f"item id(s) already exist: {shown}", field="id")
                top = self._run(cur, "SELECT MAX(idx) FROM items").fetchone()[0]
                first = int(top) + 1 if top is not None else self.n_base + 1
                at = time.time() if now is None else float(now)
                for j, (it, (blob, mask)) in enumerate(zip(items, rows)):
                    record = json.dumps({"fields": it.fields, "image": it.image}, ensure_ascii=False)
                    self._run(cur, "INSERT INTO items (idx, id, record, added_at, features, missing) "
                                   "VALUES (?, ?, ?, ?, ?, ?)", (first + j, it.id, record, at, blob, mask))
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return list(range(first, first + len(items)))

    def remove(self, ids: Sequence[str], now: float | None = None) -> list[int]:
        """Mark the current items of these ids removed in one transaction (already removed: no change).
        Returns their indices; UnknownIdError (listing every unknown id) when an id never existed."""
        if self.read_only:
            raise ConfigError(f"catalogue {self.location} is open read-only")
        with self._lock:
            cur = self._conn.cursor()
            try:
                self._begin_write(cur)
                live = self._live(cur, list(ids))
                unknown = [r for r in ids if r not in live]
                if unknown:
                    err = UnknownIdError("unknown item id(s): " + ", ".join(repr(r) for r in unknown[:20]))
                    err.ids = list(unknown)  # type: ignore[attr-defined]
                    raise err
                idxs = sorted({live[r] for r in ids})
                todo = [i for i in idxs if i not in self._removed_among(cur, idxs)]
                at = time.time() if now is None else float(now)
                for i in todo:
                    self._run(cur, "INSERT INTO removed (idx, removed_at) VALUES (?, ?)", (i, at))
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return [live[r] for r in ids]

    def changes(self, cursor: tuple[int, int] = (0, 0)) -> Changes | None:
        """Everything committed after `cursor` (None when nothing was)."""
        with self._lock:
            if cursor != (0, 0) and self._unchanged():
                return None
            cur = self._conn.cursor()
            try:
                last_idx = max(int(cursor[0]), self.n_base)
                # Removals first: every item a removal names was committed before it, so the items read
                # next include it even without one snapshot over both queries.
                removed = self._run(cur, "SELECT seq, idx, removed_at FROM removed WHERE seq > ? ORDER BY seq",
                                    (int(cursor[1]),)).fetchall()
                added = self._run(cur, "SELECT idx, id, record, added_at, features, missing FROM items "
                                       "WHERE idx > ? ORDER BY idx", (last_idx,)).fetchall()
                self._conn.commit()  # end the read transaction (PostgreSQL opens one implicitly)
            except BaseException:
                self._rollback()
                raise
        if not added and not removed:
            return None
        out = Changes(cursor=(int(added[-1][0]) if added else last_idx,
                              int(removed[-1][0]) if removed else int(cursor[1])))
        expect = last_idx + 1
        for idx, rid, record, at, blob, mask in added:
            if int(idx) != expect:
                raise MismatchError(f"catalogue {self.location}: item index {idx} follows {expect - 1} (a gap; "
                                    "the catalogue was edited outside modalrec)")
            rec = json.loads(record)
            feats, miss = self.layout.unpack(bytes(blob), int(mask), int(idx))
            out.added.append(AddedItem(int(idx), rid, dict(rec["fields"]), rec.get("image"), float(at), feats, miss))
            expect += 1
        for _, idx, at in removed:
            if not 0 < int(idx) < expect:
                raise MismatchError(f"catalogue {self.location}: removal of item index {idx}, which does not exist")
        out.removed = [(int(idx), float(at)) for _, idx, at in removed]
        return out

    def check(self) -> dict[str, Any]:
        """Integrity report ({"items": added, "removed": n, ...}); raises on anything inconsistent."""
        report: dict[str, Any] = {"location": self.location}
        ch = self.changes((0, 0)) or Changes(cursor=(self.n_base, 0))
        seen: dict[str, int] = {}
        dead = {i for i, _ in ch.removed}
        for it in ch.added:
            if normalise_id(it.id) != it.id:
                raise MismatchError(f"catalogue row {it.idx}: id {it.id!r} is not in normal form")
            prev = seen.get(it.id, self._base.get(it.id))
            if prev is not None and prev not in dead:
                raise MismatchError(f"catalogue row {it.idx}: id {it.id!r} is also live at index {prev}")
            seen[it.id] = it.idx
        report.update(items_added=len(ch.added), items_removed=len(ch.removed), last_index=ch.cursor[0])
        return report

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SqliteCatalogue(CatalogueStore):
    """SQLite in WAL mode: several processes on one machine share one catalogue file."""

    def __init__(self, path: str | Path, *args: Any, **kwargs: Any) -> None:
        self.path = Path(path)
        self._data_version = -1
        super().__init__(str(self.path), *args, **kwargs)

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            if not self.path.is_file():
                raise DataError("no catalogue file", path=self.path)
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        else:
            conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        try:
            if not self.read_only:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise DataError(f"could not switch the catalogue to WAL mode (got {mode})", path=self.path)
            conn.execute("PRAGMA synchronous=FULL")  # an acknowledged add survives a power cut, not only a crash
            conn.execute("PRAGMA busy_timeout=30000")
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise DataError(f"the catalogue database is corrupt ({ok}); restore it from a backup",
                                path=self.path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            hint = ("" if self.read_only or os.access(self.path.parent, os.W_OK) else
                    "; its directory is not writable: serve with --read-only, or give --catalogue a writable path")
            raise DataError(f"not a usable SQLite catalogue ({exc}){hint}", path=self.path) from None
        return conn

    def _begin_write(self, cur: Any) -> None:
        cur.execute("BEGIN IMMEDIATE")  # takes the write lock now: writers queue instead of failing later

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _tables(self, cur: Any) -> set[str]:
        return {r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}

    def _unchanged(self) -> bool:
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        same, self._data_version = version == self._data_version, version
        return same and not self._own_write

    _own_write = True

    def add(self, items: Sequence[NewItem], now: float | None = None) -> list[int]:
        self._own_write = True  # our own commits do not move data_version
        return super().add(items, now)

    def remove(self, ids: Sequence[str], now: float | None = None) -> list[int]:
        self._own_write = True
        return super().remove(ids, now)

    def changes(self, cursor: tuple[int, int] = (0, 0)) -> Changes | None:
        try:
            out = super().changes(cursor)
        except BaseException:
            self._data_version = -1  # not "seen": the next call reads (and fails) again instead of skipping
            raise
        self._own_write = False
        return out


class PostgresCatalogue(CatalogueStore):
    """PostgreSQL (psycopg 3): servers on several machines share one catalogue."""

    placeholder = "%s"
    blob_type = "BYTEA"
    LOCK_KEY = 0x6D6F64616C726563  # "modalrec": the advisory lock that serialises writers

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError("a PostgreSQL catalogue needs psycopg: pip install 'modalrec[postgres]'") from exc
        try:
            return psycopg.connect(self.location, connect_timeout=10)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot connect to the PostgreSQL catalogue: {str(exc).strip()[:300]}") from None

    def _begin_write(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (self.LOCK_KEY,))

    def _tables(self, cur: Any) -> set[str]:
        rows = cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
        return {r[0] for r in rows.fetchall()}


def is_postgres_url(location: str) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


def open_catalogue(location: str | Path, base_ids: Sequence[str] | Vocabulary, artifact_hash: str, layout: Layout,
                   read_only: bool = False) -> CatalogueStore:
    """A SQLite file path or a PostgreSQL URL -> the store (created when absent, unless read_only)."""
    ids = base_ids.raw_ids if isinstance(base_ids, Vocabulary) else list(base_ids)
    if is_postgres_url(str(location)):
        return PostgresCatalogue(str(location), ids, artifact_hash, layout, read_only)
    return SqliteCatalogue(location, ids, artifact_hash, layout, read_only)

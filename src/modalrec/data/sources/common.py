"""Shared helpers for the data sources: reading delimited text with line numbers, validating
numbers, vocabularies in order of first appearance, and assembling a `Dataset` with its summary.

Conventions every source follows:
- Line numbers in errors are 1-based physical lines of the file (a header is line 1).
- `row` of an event is its 0-based position in the source's interaction order (file order), so
  ties in time keep file order and every event can be traced back to its line.
- Sources without a clock ("time": "order" in the summary) use the event's 0-based position in its
  user's sequence as timestamp.
- Vocabularies list ids in order of first appearance in the interactions (after any rating
  threshold); catalogue items never interacted with are dropped unless `keep_unused_items`.
"""

from __future__ import annotations

import gzip
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.interactions import Interactions
from modalrec.data.items import ItemTable
from modalrec.data.vocab import Vocabulary
from modalrec.errors import DataError

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def open_text(path: str | Path, encoding: str = "utf-8") -> IO[str]:
    """Open a text file, transparently decompressing `.gz`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def read_rows(
    path: str | Path,
    sep: str,
    n_cols: int | None = None,
    *,
    encoding: str = "utf-8",
    header: bool = False,
    min_cols: int | None = None,
) -> tuple[list[str] | None, list[list[str]], np.ndarray]:
    """Split a delimited text file into rows of fields.

    Returns (header fields or None, rows, line numbers [R] of each row). Blank lines are skipped.
    Every row must have exactly `n_cols` fields (or the header's count when `n_cols` is None and
    `header`); with `min_cols`, rows may have more (the extra fields are kept). Raises DataError
    naming the file and line for an empty file or a wrong field count.
    """
    with open_text(path, encoding) as fh:
        text = fh.read()
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    line_no = np.arange(1, len(lines) + 1, dtype=np.int64)
    keep = [bool(line.strip()) for line in lines]
    if not all(keep):
        lines = [line for line, k in zip(lines, keep) if k]
        line_no = line_no[np.asarray(keep, dtype=bool)]
    if not lines:
        raise DataError("file is empty", path=path)
    head: list[str] | None = None
    if header:
        head = lines[0].split(sep)
        lines, line_no = lines[1:], line_no[1:]
        if n_cols is None and min_cols is None:
            n_cols = len(head)
    if not lines:
        raise DataError("file has no data rows", path=path)
    rows = [line.split(sep) for line in lines]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    bad = (lengths < min_cols) if min_cols is not None else (lengths != n_cols) if n_cols is not None else None
    if bad is not None and bad.any():
        i = int(np.argmax(bad))
        want = f"at least {min_cols}" if min_cols is not None else str(n_cols)
        raise DataError(
            f"expected {want} {sep!r}-separated fields, found {lengths[i]}: {lines[i][:120]!r}",
            path=path, line=int(line_no[i]), field=_field_at(head, int(lengths[i])),
        )
    return head, rows, line_no


def _field_at(head: list[str] | None, n_found: int) -> str | None:
    """The first header field that a short row is missing (None without a header)."""
    if head is None or n_found >= len(head):
        return None
    return head[n_found].split(":")[0]


def parse_int(values: Sequence[str], path: str | Path, lines: np.ndarray, field: str) -> np.ndarray:
    """[N] int64 from strings. Integral floats ("881250949.0") are accepted; anything else raises
    DataError naming the first offending line."""
    try:
        return np.fromiter(map(int, values), dtype=np.int64, count=len(values))
    except (ValueError, OverflowError, TypeError):
        pass
    for i, v in enumerate(values):  # slow path only on failure: find the first bad value
        try:
            f = float(v)
        except ValueError:
            raise DataError(f"expected an integer, got {v!r}", path=path, line=int(lines[i]), field=field) from None
        if not np.isfinite(f) or f != int(f) or abs(f) > 2**53:
            raise DataError(f"expected an integer, got {v!r}", path=path, line=int(lines[i]), field=field)
    return np.fromiter(map(float, values), dtype=np.float64, count=len(values)).astype(np.int64)


def parse_float(values: Sequence[str], path: str | Path, lines: np.ndarray, field: str) -> np.ndarray:
    """[N] float64 from strings; non-numeric or non-finite values raise DataError with the line."""
    try:
        out = np.fromiter(map(float, values), dtype=np.float64, count=len(values))
    except (ValueError, TypeError):
        out = None
    if out is not None and np.isfinite(out).all():
        return out
    for i, v in enumerate(values):
        try:
            f = float(v)
        except ValueError:
            f = float("nan")
        if not np.isfinite(f):
            raise DataError(f"expected a number, got {v!r}", path=path, line=int(lines[i]), field=field)
    raise AssertionError("unreachable")


def factorize(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Dense 1-based codes [N] and the unique values in order of first appearance (vectorised)."""
    values = np.asarray(values)
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64), []
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq), dtype=np.int64)
    return rank[inverse.reshape(-1)] + 1, [str(u) for u in uniq[order]]


def check_known(
    ids: np.ndarray, known: Sequence[str] | set[str], path: str | Path, lines: np.ndarray, field: str, what: str
) -> np.ndarray:
    """[N] bool mask of ids present in `known`; raises DataError at the first unknown id."""
    mask = np.isin(np.asarray(ids, dtype=str), np.asarray(list(known), dtype=str))
    if not mask.all():
        i = int(np.argmin(mask))
        raise DataError(
            f"{field} {str(ids[i])!r} is not in the {what} ({int((~mask).sum())} unknown occurrence(s) in all)",
            path=path, line=int(lines[i]), field=field,
        )
    return mask


def clean_text(value: object, strip_tags: bool = False) -> str:
    """Unescape HTML entities, collapse whitespace, and (with `strip_tags`) drop <tags>.
    Lists are joined with ', '."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = ", ".join(clean_text(v, strip_tags) for v in value if v)
    text = html.unescape(str(value))
    if strip_tags and "<" in text:
        text = _TAG.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


@dataclass
class RawEvents:
    """Events as read from a source, before vocabularies: parallel arrays in file order."""

    users: np.ndarray  # [E] str raw user ids
    items: np.ndarray  # [E] str raw item ids
    ts: np.ndarray | None = None  # [E] int64; None = order only (position in file)
    ratings: np.ndarray | None = None  # [E] float64 or None
    rows: np.ndarray | None = None  # [E] int64 original row numbers; None = arange
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.users)
        if self.rows is None:
            self.rows = np.arange(n, dtype=np.int64)
        if n == 0:
            raise DataError("no interactions found")


def counts_of(inter: Interactions) -> dict[str, int]:
    """Users / items that occur and number of events."""
    return {
        "users": int((inter.seq_lengths()[1:] > 0).sum()),
        "items": int((inter.item_counts()[1:] > 0).sum()),
        "interactions": len(inter),
    }


def raw_counts(users: np.ndarray, items: np.ndarray) -> dict[str, int]:
    return {"users": len(np.unique(users)), "items": len(np.unique(items)), "interactions": len(users)}


def rating_filter(
    users: np.ndarray, items: np.ndarray, ratings: np.ndarray | None, min_rating: float, source: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """Mask of events with rating >= min_rating and the record that goes into summary["filters"]."""
    if ratings is None:
        raise DataError(f"min_rating={min_rating} needs ratings, but {source} has none")
    keep = ratings >= float(min_rating)
    record = {"filter": "rating", "min_rating": float(min_rating), "before": raw_counts(users, items),
              "after": raw_counts(users[keep], items[keep])}
    return keep, record


def build_dataset(
    name: str,
    source: str,
    events: RawEvents,
    *,
    files: Mapping[str, str | Path],
    records: Mapping[str, Mapping[str, object]] | None = None,
    text_fields: Sequence[str] = (),
    image_field: str | None = None,
    image_root: str | Path | None = None,
    launch_field: str | None = None,
    catalogue: Sequence[str] | None = None,
    keep_unused_items: bool = False,
    min_rating: float | None = None,
    user_order: Sequence[str] | None = None,
    item_order: Sequence[str] | None = None,
    presplit: dict[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    prefilters: Sequence[Mapping[str, Any]] = (),
) -> Dataset:
    """Vocabularies, Interactions, ItemTable and summary from raw events + item records.

    `catalogue` lists every item the source knows (in file order); with `keep_unused_items` the ones
    never interacted with are appended to the item vocabulary (still rankable, e.g. as new items).
    `user_order` / `item_order` override first-appearance order (e.g. a shipped index file).
    `launch_field` names the record key with the item's launch time (int unix seconds, or None).
    """
    filters: list[dict[str, Any]] = [dict(f) for f in prefilters]  # applied by the source while reading
    users, items, ts, rows = events.users, events.items, events.ts, events.rows
    n_raw = len(users)
    if min_rating is not None:
        keep, rec = rating_filter(users, items, events.ratings, min_rating, source)
        users, items, rows = users[keep], items[keep], rows[keep]
        ts = ts[keep] if ts is not None else None
        filters.append(rec)
        if not len(users):
            raise DataError(f"no interactions left after min_rating={min_rating}")
    u_codes, u_ids = _codes(users, user_order, "user")
    i_codes, i_ids = _codes(items, item_order, "item")
    n_used_items = len(i_ids)
    if keep_unused_items and catalogue is not None:
        seen = set(i_ids)
        i_ids = i_ids + [c for c in catalogue if c not in seen]
    user_vocab = Vocabulary(u_ids, name="user")
    item_vocab = Vocabulary(i_ids, name="item")
    time_kind = "order" if ts is None else "unix_seconds"
    if ts is None:
        ts = _position_in_user(u_codes, rows)  # order only: position in the user's sequence is the clock
    inter = Interactions.from_arrays(u_codes, i_codes, ts, rows, n_users=user_vocab.size, n_items=item_vocab.size)
    table = ItemTable.from_records(
        item_vocab, records or {}, list(text_fields), image_field, None if image_root is None else str(image_root),
        launch_field,
    )
    summary: dict[str, Any] = {
        "source": source,
        "files": {k: str(v) for k, v in files.items()},
        "time": time_kind,
        "raw_interactions": n_raw,
        "counts": {**counts_of(inter), "vocab_items": item_vocab.size},
        "filters": filters,
        "text_fields": list(text_fields),
        "items_with_text": int(sum(any(table.fields[f][i] for f in text_fields) for i in range(1, len(item_vocab)))),
        "image_source": image_field is not None,
        "items_with_image": int(sum(p is not None for p in table.image_paths)),
        "items_with_launch_time": int(sum(t is not None for t in table.launch_ts)),
        "notes": list(events.notes),
    }
    if catalogue is not None:
        summary["catalogue_items"] = len(catalogue)
        summary["unused_catalogue_items"] = len(set(catalogue)) - len(set(catalogue) & set(i_ids[:n_used_items]))
        summary["unused_items_kept"] = bool(keep_unused_items)
    if extra:
        summary.update(extra)
    return Dataset(name, inter, table, user_vocab, summary, presplit)


def _position_in_user(user: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[E] 0-based position of each event among its user's events in row order (vectorised)."""
    order = np.lexsort((rows, user))
    sorted_user = user[order]
    first = np.searchsorted(sorted_user, sorted_user, side="left")
    pos = np.empty(len(user), dtype=np.int64)
    pos[order] = np.arange(len(user), dtype=np.int64) - first
    return pos


def _codes(raw: np.ndarray, order: Sequence[str] | None, what: str) -> tuple[np.ndarray, list[str]]:
    """Codes by first appearance, or by a given order restricted to the ids that occur."""
    codes, ids = factorize(raw)
    if order is None:
        return codes, ids
    present = set(ids)
    ordered = [o for o in order if o in present]
    if len(ordered) != len(ids):
        missing = sorted(present - set(ordered))[:5]
        raise DataError(f"{what} ids missing from the index file: {missing}")
    remap = np.zeros(len(ids) + 1, dtype=np.int64)
    pos = {o: i + 1 for i, o in enumerate(ordered)}
    remap[1:] = [pos[i] for i in ids]
    return remap[codes], ordered

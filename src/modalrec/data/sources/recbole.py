"""RecBole atomic files: `{name}.inter` (+ optional `{name}.item`, `{name}.text`), and the pre-split
UniSRec form `{name}.{train,valid,test}.inter` with `{name}.text`, `{name}.item2index`, `{name}.user2index`.

Atomic files are tab-separated with a header of `field:type` columns; columns are found by name.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.sources.common import (
    RawEvents,
    build_dataset,
    check_known,
    clean_text,
    parse_float,
    parse_int,
    read_rows,
)
from modalrec.errors import DataError

TEXT_TYPES = ("token", "token_seq")


class AtomicFile:
    """One atomic file as columns of strings, addressed by field name (the part before ':')."""

    def __init__(self, path: Path, encoding: str = "utf-8"):
        head, rows, lines = read_rows(path, "\t", header=True, encoding=encoding)
        assert head is not None
        self.path, self.lines = path, lines
        self.names = [h.split(":")[0].strip() for h in head]
        self.types = {n: (h.split(":")[1].strip() if ":" in h else "token") for n, h in zip(self.names, head)}
        cols = list(zip(*rows))
        self.columns = {n: list(c) for n, c in zip(self.names, cols)}

    def has(self, name: str) -> bool:
        return name in self.columns

    def column(self, name: str) -> list[str]:
        if name not in self.columns:
            raise DataError(f"missing required column {name!r}; header has {self.names}", path=self.path, line=1,
                            field=name)
        return self.columns[name]


def load_recbole(
    directory: str | Path,
    name: str,
    *,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str | None = "timestamp",
    rating_field: str | None = "rating",
    text_fields: list[str] | None = None,
    min_rating: float | None = None,
    strict: bool = True,
    keep_unused_items: bool = False,
    presplit: bool | None = None,
    encoding: str = "utf-8",
) -> Dataset:
    """Load RecBole atomic files `{directory}/{name}.*`.

    `presplit=None` picks the pre-split UniSRec form when `{name}.train.inter` exists and `{name}.inter`
    does not. For the plain form: the time column is optional (absent = file order); `min_rating`
    needs the rating column; `text_fields` picks `.item` columns (default: every token / token_seq
    column except the id); `.text` adds a `text` field. With `strict`, an item in `.inter` that
    `.item` does not list is an error.
    """
    root = Path(directory)
    inter_path = root / f"{name}.inter"
    if presplit is None:
        presplit = not inter_path.is_file() and (root / f"{name}.train.inter").is_file()
    if presplit:
        if min_rating is not None:
            raise DataError("min_rating cannot be applied to pre-split files (they carry no ratings)")
        return _load_presplit(root, name, user_field=user_field, item_field=item_field,
                             keep_unused_items=keep_unused_items, encoding=encoding)
    inter = AtomicFile(inter_path, encoding)
    users = np.asarray(inter.column(user_field), dtype=str)
    items = np.asarray(inter.column(item_field), dtype=str)
    ts = None
    if time_field is not None and inter.has(time_field):
        ts = parse_int(inter.column(time_field), inter_path, inter.lines, time_field)
    ratings = None
    if rating_field is not None and inter.has(rating_field):
        ratings = parse_float(inter.column(rating_field), inter_path, inter.lines, rating_field)
    files: dict[str, str | Path] = {"interactions": inter_path}
    records: dict[str, dict[str, object]] = {}
    catalogue: list[str] | None = None
    fields: list[str] = []
    item_path = root / f"{name}.item"
    if item_path.is_file():
        files["items"] = item_path
        table = AtomicFile(item_path, encoding)
        ids = table.column(item_field)
        fields = list(text_fields) if text_fields is not None else [
            n for n in table.names if n != item_field and table.types[n] in TEXT_TYPES
        ]
        cols = [table.column(f) for f in fields]
        for i, (iid, line) in enumerate(zip(ids, table.lines)):
            if iid in records:
                raise DataError(f"duplicate item id {iid!r}", path=item_path, line=int(line), field=item_field)
            records[iid] = {f: clean_text(c[i]) for f, c in zip(fields, cols)}
        catalogue = list(records)
        if strict:
            check_known(items, records.keys(), inter_path, inter.lines, item_field, f"item file {item_path.name}")
    elif text_fields:
        raise DataError(f"text_fields={text_fields} given but {item_path} does not exist", path=item_path)
    text_path = root / f"{name}.text"
    if text_path.is_file():
        files["text"] = text_path
        for iid, text in read_text_file(text_path, item_field, encoding).items():
            records.setdefault(iid, {})["text"] = text
        fields.append("text")
    events = RawEvents(users, items, ts=ts, ratings=ratings)
    return build_dataset(
        name, "recbole", events, files=files, records=records, text_fields=fields, catalogue=catalogue,
        keep_unused_items=keep_unused_items, min_rating=min_rating,
    )


def read_text_file(path: Path, item_field: str = "item_id", encoding: str = "utf-8") -> dict[str, str]:
    """{item_id: text} from a `.text` atomic file (`item_id:token  text:token_seq`); first row per id wins."""
    table = AtomicFile(path, encoding)
    ids = table.column(item_field)
    text_col = next((n for n in table.names if n != item_field), None)
    if text_col is None:
        raise DataError("no text column next to the item id", path=path, line=1, field="text")
    out: dict[str, str] = {}
    for iid, text in zip(ids, table.column(text_col)):
        out.setdefault(iid, clean_text(text))
    return out


# ---------------------------------------------------------------------------------------------
# Pre-split UniSRec form: each row is (user, history, target); histories are the last <= M items.
# ---------------------------------------------------------------------------------------------

PARTS = ("train", "valid", "test")


@dataclass
class _Row:
    hist: list[str]
    target: str
    part: str
    path: Path
    line: int


def _read_index(path: Path, encoding: str) -> dict[str, str] | None:
    """{index token: raw id} from an `*2index` file (`raw TAB index`), or None when absent."""
    if not path.is_file():
        return None
    _, rows, lines = read_rows(path, "\t", 2, encoding=encoding)
    out: dict[str, str] = {}
    for (raw, idx), line in zip(rows, lines):
        if idx in out:
            raise DataError(f"index {idx!r} already used by {out[idx]!r}", path=path, line=int(line), field="index")
        out[idx] = raw
    return out


def _load_presplit(
    root: Path, name: str, *, user_field: str, item_field: str, keep_unused_items: bool, encoding: str
) -> Dataset:
    """Rebuild each user's full chronological sequence from the three row files.

    Rows whose history is shorter than the longest history seen (M, the truncation length) sit at
    position len(history); rows with M items are chained: the next one is the row whose history equals
    the last M items rebuilt so far. Every row is checked against the rebuilt sequence, so a missing,
    duplicated or inconsistent row raises DataError naming its file and line.
    """
    item_map = _read_index(root / f"{name}.item2index", encoding)
    user_map = _read_index(root / f"{name}.user2index", encoding)
    hist_field = f"{item_field}_list"
    per_user: dict[str, list[_Row]] = {}
    files: dict[str, str | Path] = {}
    for part in PARTS:
        path = root / f"{name}.{part}.inter"
        files[part] = path
        table = AtomicFile(path, encoding)
        users, hists, targets = table.column(user_field), table.column(hist_field), table.column(item_field)
        for u, h, t, line in zip(users, hists, targets, table.lines):
            hist = h.split()
            if item_map is not None and (t not in item_map or not item_map.keys() >= set(hist)):
                for tok, fld in ((t, item_field), *((x, hist_field) for x in hist)):
                    if tok not in item_map:
                        raise DataError(f"item index {tok!r} is not in {name}.item2index", path=path,
                                        line=int(line), field=fld)
            if user_map is not None and u not in user_map:
                raise DataError(f"user index {u!r} is not in {name}.user2index", path=path, line=int(line),
                                field=user_field)
            per_user.setdefault(u, []).append(_Row(hist, t, part, path, int(line)))
    max_hist = max(len(r.hist) for rows in per_user.values() for r in rows)
    ev_users: list[str] = []
    ev_items: list[str] = []
    ev_part: list[str] = []
    for u, rows in per_user.items():
        seq, origin = _chain(rows, max_hist, hist_field)
        ev_users.extend([u] * len(seq))
        ev_items.extend(seq)
        ev_part.extend(origin)
    if item_map is not None:
        ev_items = [item_map[i] for i in ev_items]
        files["item2index"] = root / f"{name}.item2index"
    if user_map is not None:
        ev_users = [user_map[u] for u in ev_users]
        files["user2index"] = root / f"{name}.user2index"
    part = np.asarray(ev_part, dtype=str)
    presplit = {"valid_rows": np.flatnonzero(part == "valid"), "test_rows": np.flatnonzero(part == "test")}
    records: dict[str, dict[str, object]] = {}
    fields: list[str] = []
    text_path = root / f"{name}.text"
    if text_path.is_file():
        files["text"] = text_path
        records = {iid: {"text": text} for iid, text in read_text_file(text_path, item_field, encoding).items()}
        fields = ["text"]
    events = RawEvents(np.asarray(ev_users, dtype=str), np.asarray(ev_items, dtype=str), ts=None)
    catalogue = _by_index(item_map) if item_map is not None else None
    return build_dataset(
        name, "recbole_presplit", events, files=files, records=records, text_fields=fields,
        catalogue=catalogue, keep_unused_items=keep_unused_items,
        user_order=_by_index(user_map) if user_map is not None else None, item_order=catalogue, presplit=presplit,
        extra={"presplit_rows": {p: int((part == p).sum()) for p in PARTS}, "history_truncation": max_hist},
    )


def _by_index(index: dict[str, str]) -> list[str]:
    """Raw ids in the order of their (numeric) index tokens."""
    def key(tok: str) -> tuple[int, int | str]:
        return (0, int(tok)) if tok.lstrip("-").isdigit() else (1, tok)

    return [index[k] for k in sorted(index, key=key)]


def _chain(rows: list[_Row], max_hist: int, hist_field: str) -> tuple[list[str], list[str]]:
    """One user's full sequence and, per event, the part whose target it is ("" = history only)."""
    rows = sorted(rows, key=lambda r: len(r.hist))  # stable: file order among equal lengths
    seq = list(rows[0].hist)
    origin = [""] * len(seq)
    pending: dict[tuple[str, ...], deque[_Row]] = {}
    n_pending = 0
    for r in rows:
        if len(r.hist) < max_hist:
            if r.hist != seq:
                raise DataError(
                    f"history of {len(r.hist)} items does not continue the user's sequence rebuilt so far "
                    f"({len(seq)} items): a row is missing, repeated or out of place",
                    path=r.path, line=r.line, field=hist_field,
                )
            seq.append(r.target)
            origin.append(r.part)
        else:
            pending.setdefault(tuple(r.hist), deque()).append(r)
            n_pending += 1
    while n_pending:
        queue = pending.get(tuple(seq[-max_hist:]))
        if not queue:
            r = min((r for q in pending.values() for r in q), key=lambda r: (PARTS.index(r.part), r.line))
            raise DataError(
                f"history matches no position in the user's sequence rebuilt so far ({len(seq)} items): "
                "a row is missing, repeated or out of place", path=r.path, line=r.line, field=hist_field,
            )
        r = queue.popleft()
        seq.append(r.target)
        origin.append(r.part)
        n_pending -= 1
    return seq, origin

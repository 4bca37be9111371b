"""The Amazon TSVs used by the IISAN papers.

users file: `user_id TAB item_id item_id ...` (one line per user, items in chronological order)
items file: `item_id TAB title` (titles may contain HTML entities such as `&amp;`; they are unescaped)

There is no clock: an event's timestamp is its position in the users file (order only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.sources.common import RawEvents, build_dataset, check_known, clean_text, read_rows
from modalrec.errors import DataError


def load_amazon_iisan(
    users_tsv: str | Path,
    items_tsv: str | Path,
    *,
    strict: bool = True,
    keep_unused_items: bool = False,
    name: str | None = None,
) -> Dataset:
    """Load an IISAN users/items TSV pair.

    With `strict`, an item id in the users file that the items file does not list is an error
    (otherwise that item gets an empty title). Items listed but never interacted with are dropped
    unless `keep_unused_items` (the published item counts are of items that occur).
    """
    users_tsv, items_tsv = Path(users_tsv), Path(items_tsv)
    titles = _read_titles(items_tsv)
    _, rows, lines = read_rows(users_tsv, "\t", 2)
    user_ids: list[str] = []
    seqs: list[list[str]] = []
    seen: dict[str, int] = {}
    for (uid, items), line in zip(rows, lines):
        uid = uid.strip()
        if not uid:
            raise DataError("empty user id", path=users_tsv, line=int(line), field="user_id")
        if uid in seen:
            raise DataError(f"user {uid!r} already listed on line {seen[uid]}", path=users_tsv, line=int(line),
                            field="user_id")
        seen[uid] = int(line)
        seq = items.split()
        if not seq:
            raise DataError("user has no items", path=users_tsv, line=int(line), field="item_ids")
        user_ids.append(uid)
        seqs.append(seq)
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    users = np.repeat(np.asarray(user_ids, dtype=str), lengths)
    items = np.asarray([i for s in seqs for i in s], dtype=str)
    ev_lines = np.repeat(lines, lengths)
    if strict:
        check_known(items, titles.keys(), users_tsv, ev_lines, "item_ids", f"items file {items_tsv.name}")
    events = RawEvents(users, items, ts=None)
    records = {iid: {"title": t} for iid, t in titles.items()}
    if name is None:
        name = items_tsv.stem.removesuffix("_items")
    return build_dataset(
        name, "amazon_iisan", events, files={"users": users_tsv, "items": items_tsv}, records=records,
        text_fields=("title",), catalogue=list(titles), keep_unused_items=keep_unused_items,
    )


def _read_titles(path: Path) -> dict[str, str]:
    """{item_id: title} in file order; a repeated item id is an error."""
    _, rows, lines = read_rows(path, "\t", 2)
    titles: dict[str, str] = {}
    where: dict[str, int] = {}
    for (iid, title), line in zip(rows, lines):
        iid = iid.strip()
        if not iid:
            raise DataError("empty item id", path=path, line=int(line), field="item_id")
        if iid in titles:
            raise DataError(f"item {iid!r} already listed on line {where[iid]}", path=path, line=int(line),
                            field="item_id")
        titles[iid] = clean_text(title)
        where[iid] = int(line)
    return titles

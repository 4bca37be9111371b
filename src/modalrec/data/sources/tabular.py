"""Generic CSV / TSV / Parquet interactions (+ optional item table) with an explicit column mapping.

Needs pandas (extra `tabular`; pyarrow for Parquet), imported lazily. Ids are read as strings, so
"007" and "7" stay distinct. For text files, error line numbers count the header as line 1
(quoted fields spanning several lines would shift them); for Parquet they are 1-based data rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.sources.common import (
    RawEvents,
    build_dataset,
    check_known,
    clean_text,
    parse_float,
    parse_int,
)
from modalrec.errors import DataError

PARQUET = (".parquet", ".pq")


def load_table(
    path: str | Path,
    user_col: str,
    item_col: str,
    time_col: str | None = None,
    rating_col: str | None = None,
    *,
    items_path: str | Path | None = None,
    item_id_col: str | None = None,
    text_cols: Sequence[str] = (),
    image_col: str | None = None,
    image_root: str | Path | None = None,
    launch_col: str | None = None,
    sep: str | None = None,
    parse_dates: bool = False,
    min_rating: float | None = None,
    strict: bool = True,
    keep_unused_items: bool = False,
    name: str | None = None,
) -> Dataset:
    """Load interactions from a table; columns are named explicitly.

    `time_col` holds integer unix seconds (or, with `parse_dates`, date/time strings converted to unix
    seconds); without it, file order is the clock. `sep` defaults to tab for .tsv and comma otherwise.
    `items_path` (same formats) gives item content: `item_id_col` (default `item_col`), `text_cols`,
    and `image_col` (paths, relative to `image_root` unless absolute), and `launch_col`, the item's launch
    time (like `time_col`: integer unix seconds, or date strings with `parse_dates`; blank = unknown). With
    `strict`, an interaction whose item the item table does not list is an error.
    """
    path = Path(path)
    cols = [c for c in (user_col, item_col, time_col, rating_col) if c is not None]
    frame = _read(path, cols, sep)
    lines = _line_numbers(path, len(frame))
    users = _ids(frame[user_col], path, lines, user_col)
    items = _ids(frame[item_col], path, lines, item_col)
    ts = None
    if time_col is not None:
        ts = _times(frame[time_col], path, lines, time_col, parse_dates)
    ratings = None
    if rating_col is not None:
        ratings = parse_float(_strings(frame[rating_col]), path, lines, rating_col)
    files: dict[str, str | Path] = {"interactions": path}
    records: dict[str, dict[str, object]] = {}
    catalogue: list[str] | None = None
    if items_path is not None:
        items_path = Path(items_path)
        files["items"] = items_path
        id_col = item_id_col or item_col
        want = [id_col, *text_cols, *([image_col] if image_col else []), *([launch_col] if launch_col else [])]
        table = _read(items_path, want, sep)
        t_lines = _line_numbers(items_path, len(table))
        ids = _ids(table[id_col], items_path, t_lines, id_col)
        texts = {c: _strings(table[c]) for c in text_cols}
        images = _strings(table[image_col]) if image_col else None
        launch = _launch_times(table[launch_col], items_path, t_lines, launch_col, parse_dates) if launch_col else None
        for i, iid in enumerate(ids):
            if iid in records:
                raise DataError(f"duplicate item id {iid!r}", path=items_path, line=int(t_lines[i]), field=id_col)
            rec: dict[str, object] = {c: clean_text(texts[c][i]) for c in text_cols}
            if images is not None and images[i]:
                rec["image"] = images[i]
            if launch is not None:
                rec["launch_ts"] = launch[i]
            records[iid] = rec
        catalogue = list(records)
        if strict:
            check_known(items, records.keys(), path, lines, item_col, f"item table {items_path.name}")
    elif text_cols or image_col or launch_col:
        raise DataError("text_cols / image_col / launch_col need items_path")
    events = RawEvents(users, items, ts=ts, ratings=ratings)
    return build_dataset(
        name or path.stem, "table", events, files=files, records=records, text_fields=list(text_cols),
        image_field="image" if image_col else None, image_root=image_root,
        launch_field="launch_ts" if launch_col else None, catalogue=catalogue,
        keep_unused_items=keep_unused_items, min_rating=min_rating,
        extra={"columns": {"user": user_col, "item": item_col, "time": time_col, "rating": rating_col}},
    )


def _read(path: Path, cols: list[str], sep: str | None) -> Any:
    """A DataFrame with the requested columns; missing columns raise DataError naming them."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("load_table needs pandas: pip install 'modalrec[tabular]'") from exc
    if not path.is_file():
        raise DataError("file not found", path=path)
    if path.suffix.lower() in PARQUET:
        frame = pd.read_parquet(path)
    else:
        if sep is None:
            sep = "\t" if path.suffix.lower() in (".tsv", ".tab") or path.name.endswith(".tsv.gz") else ","
        try:
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False)
        except pd.errors.EmptyDataError:
            raise DataError("file is empty", path=path) from None
        except pd.errors.ParserError as exc:
            found = re.search(r"line (\d+)", str(exc))
            line = int(found.group(1)) if found else None
            raise DataError(f"malformed table: {str(exc).strip()}", path=path, line=line) from None
    for c in cols:
        if c not in frame.columns:
            raise DataError(f"missing required column {c!r}; have {list(frame.columns)}", path=path, line=1, field=c)
    if len(frame) == 0:
        raise DataError("file has no data rows", path=path)
    return frame


def _line_numbers(path: Path, n: int) -> np.ndarray:
    start = 1 if path.suffix.lower() in PARQUET else 2  # text: header is line 1
    return np.arange(start, start + n, dtype=np.int64)


def _strings(col: Any) -> list[str]:
    """Column values as strings; missing values (NaN / None) become ""."""
    values = col.tolist()
    return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values]


def _ids(col: Any, path: Path, lines: np.ndarray, field: str) -> np.ndarray:
    values = _strings(col)
    arr = np.asarray([v.strip() for v in values], dtype=str)
    empty = arr == ""
    if empty.any():
        i = int(np.argmax(empty))
        raise DataError("missing id", path=path, line=int(lines[i]), field=field)
    return arr


def _launch_times(col: Any, path: Path, lines: np.ndarray, field: str, parse_dates: bool) -> list[int | None]:
    """Launch time per row (unix seconds); blank cells are unknown (None), anything else must parse."""
    blank = np.asarray([not v.strip() for v in _strings(col)], dtype=bool)
    out: list[int | None] = [None] * len(col)
    if (~blank).any():
        parsed = _times(col[~blank], path, lines[~blank], field, parse_dates)
        for i, t in zip(np.flatnonzero(~blank), parsed):
            out[int(i)] = int(t)
    return out


def _times(col: Any, path: Path, lines: np.ndarray, field: str, parse_dates: bool) -> np.ndarray:
    if not parse_dates:
        return parse_int(_strings(col), path, lines, field)
    import pandas as pd

    parsed = pd.to_datetime(col, errors="coerce", utc=True)
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"cannot parse date/time {col.iloc[i]!r}", path=path, line=int(lines[i]), field=field)
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)

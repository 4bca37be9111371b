"""Generic CSV / TSV / Parquet interactions (+ optional item table) with an explicit column mapping.

Needs pandas (extra `tabular`; pyarrow for Parquet), imported lazily. Ids are read as strings, so
"007" and "7" stay distinct. For text files, error line numbers count the header as line 1 (a file
without header, whose column names come from the config, starts at line 1; quoted fields spanning
several lines would shift them); for Parquet they are 1-based data rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
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
from modalrec.errors import ConfigError, DataError

PARQUET = (".parquet", ".pq")


def load_table(
    path: str | Path | None = None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = None,
    rating_col: str | None = None,
    *,
    train_path: str | Path | None = None,
    valid_path: str | Path | None = None,
    test_path: str | Path | None = None,
    columns: Sequence[str] | None = None,
    items_path: str | Path | None = None,
    item_columns: Sequence[str] | None = None,
    item_id_col: str | None = None,
    text_cols: Sequence[str] = (),
    image_col: str | None = None,
    image_template: str | None = None,
    image_root: str | Path | None = None,
    launch_col: str | None = None,
    item_map_path: str | Path | None = None,
    item_map_columns: Sequence[str] | None = None,
    item_map_from: str | None = None,
    item_map_to: str | None = None,
    sep: str | None = None,
    parse_dates: bool = False,
    date_format: str | None = None,
    min_rating: float | None = None,
    strict: bool = True,
    keep_unused_items: bool = False,
    name: str | None = None,
) -> Dataset:
    """Load interactions from one table (`path`) or a shipped split (`train_path`, `valid_path`,
    `test_path`: the same columns in each; use split.kind=presplit); columns are named explicitly.

    `columns` names the columns of header-less interaction files (likewise `item_columns`,
    `item_map_columns`). `time_col` holds integer unix seconds, or with `parse_dates` date / time strings
    (`date_format`, e.g. "%Y-%m-%d", else inferred); without it, file order (train, valid, test) is the
    clock. `sep` defaults to tab for .tsv and comma otherwise.

    Item content: `items_path` (same formats) with `item_id_col` (default `item_col`), `text_cols`,
    `image_col` (paths) or `image_template` (a str.format pattern over `id` and the item columns, e.g.
    "{id:.3}/{id}.jpg"; only files that exist count), both relative to `image_root`, and `launch_col`, the
    launch time (like `time_col`; blank = unknown). When the item table uses other ids than the
    interactions, `item_map_path` maps them: column `item_map_from` (default `item_id_col`) holds the item
    table's id and `item_map_to` (default `item_col`) the interactions' id. With `strict`, an interaction
    whose item the item table (or map) does not list is an error.
    """
    check_options(path=path, train_path=train_path, valid_path=valid_path, test_path=test_path,
                  items_path=items_path, text_cols=text_cols, image_col=image_col, image_template=image_template,
                  launch_col=launch_col, item_map_path=item_map_path)
    files: dict[str, str | Path] = {}
    parts = {"interactions": path} if path is not None else {"train": train_path, "valid": valid_path,
                                                                "test": test_path}
    events, sizes = [], {}
    for part, file in parts.items():
        file = Path(file)  # type: ignore[arg-type]
        files[part] = file
        events.append(_read_events(file, user_col, item_col, time_col, rating_col, columns, sep, parse_dates,
                                   date_format))
        sizes[part] = len(events[-1][0])
    users, items = (np.concatenate([e[k] for e in events]) for k in (0, 1))
    ts = None if time_col is None else np.concatenate([e[2] for e in events])
    ratings = None if rating_col is None else np.concatenate([e[3] for e in events])
    presplit = None
    if path is None:
        bounds = np.cumsum([0, *sizes.values()])
        presplit = {"valid_rows": np.arange(bounds[1], bounds[2]), "test_rows": np.arange(bounds[2], bounds[3])}

    id_map = None
    if item_map_path is not None:
        files["item_map"] = Path(item_map_path)
        id_map = _read_map(Path(item_map_path), item_map_from or item_id_col or item_col, item_map_to or item_col,
                           item_map_columns, sep)
    records: dict[str, dict[str, object]] = {}
    catalogue: list[str] | None = None
    notes: list[str] = []
    if items_path is not None:
        files["items"] = Path(items_path)
        records, notes = _read_items(Path(items_path), item_id_col or item_col, item_columns, text_cols, image_col,
                                     launch_col, id_map, sep, parse_dates, date_format)
        catalogue = list(id_map.values()) if id_map is not None else list(records)
    elif id_map is not None:
        catalogue = list(id_map.values())
    if image_template is not None:
        raw_ids = {v: k for k, v in id_map.items()} if id_map is not None else {}
        notes += _template_images(records, catalogue or list(dict.fromkeys(items.tolist())), raw_ids,
                                  image_template, image_root)
    if strict and catalogue is not None:
        listing = files["item_map"] if id_map is not None else files["items"]
        for part, (_, p_items, *_rest, p_lines) in zip(parts, events):
            check_known(p_items, set(catalogue), files[part], p_lines, item_col, f"item listing {Path(listing).name}")
    raw = RawEvents(users, items, ts=ts, ratings=ratings, notes=notes)
    has_image = image_col is not None or image_template is not None
    if name is None:  # a shipped split is named after its folder
        name = Path(path).stem if path is not None else Path(train_path).resolve().parent.name  # type: ignore[arg-type]
    return build_dataset(
        name, "table", raw, files=files, records=records,
        text_fields=list(text_cols), image_field="image" if has_image else None, image_root=image_root,
        launch_field="launch_ts" if launch_col else None, catalogue=catalogue,
        keep_unused_items=keep_unused_items, min_rating=min_rating, presplit=presplit,
        extra={"columns": {"user": user_col, "item": item_col, "time": time_col, "rating": rating_col},
               **({"presplit_rows": sizes} if presplit is not None else {})},
    )


def check_options(*, path: Any = None, train_path: Any = None, valid_path: Any = None, test_path: Any = None,
                  items_path: Any = None, text_cols: Sequence[str] = (), image_col: Any = None,
                  image_template: Any = None, launch_col: Any = None, item_map_path: Any = None,
                  **_other: Any) -> None:
    """Option combinations that cannot work, decided without reading any file."""
    split = [train_path, valid_path, test_path]
    if path is not None and any(p is not None for p in split):
        raise ConfigError("data.options: give either path (one table) or train_path / valid_path / test_path")
    if path is None and not all(p is not None for p in split):
        missing = [n for n, p in zip(("train_path", "valid_path", "test_path"), split) if p is None]
        raise ConfigError(f"data.options: give path, or all of train_path / valid_path / test_path (missing {missing})")
    if items_path is None and (text_cols or image_col or launch_col):
        raise ConfigError("data.options: text_cols / image_col / launch_col need items_path")
    if image_col is not None and image_template is not None:
        raise ConfigError("data.options: give image_col or image_template, not both")
    if isinstance(text_cols, str):
        raise ConfigError(f"data.options.text_cols must be a list of column names, got {text_cols!r}")
    if image_template is not None:
        try:
            str(image_template).format(id="0123456789")
        except (KeyError, IndexError, ValueError) as exc:
            if not isinstance(exc, KeyError):  # KeyError: an item column, known only once the table is read
                raise ConfigError(f"data.options.image_template {image_template!r}: {exc}") from None


def ships_split(options: Mapping[str, Any]) -> bool:
    """Whether these options read a shipped train / valid / test split."""
    return options.get("train_path") is not None


def _read_events(path: Path, user_col: str, item_col: str, time_col: str | None, rating_col: str | None,
                 columns: Sequence[str] | None, sep: str | None, parse_dates: bool, date_format: str | None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """(users, items, ts, ratings, line numbers) of one interactions file."""
    cols = [c for c in (user_col, item_col, time_col, rating_col) if c is not None]
    frame = _read(path, cols, sep, columns)
    lines = _line_numbers(path, len(frame), header=columns is None)
    users = _ids(frame[user_col], path, lines, user_col)
    items = _ids(frame[item_col], path, lines, item_col)
    ts = _times(frame[time_col], path, lines, time_col, parse_dates, date_format) if time_col else None
    ratings = parse_float(_strings(frame[rating_col]), path, lines, rating_col) if rating_col else None
    return users, items, ts, ratings, lines


def _read_map(path: Path, from_col: str, to_col: str, columns: Sequence[str] | None, sep: str | None,
              ) -> dict[str, str]:
    """{item table id: interactions id}; each side must be unique."""
    frame = _read(path, [from_col, to_col], sep, columns)
    lines = _line_numbers(path, len(frame), header=columns is None)
    src, dst = _ids(frame[from_col], path, lines, from_col), _ids(frame[to_col], path, lines, to_col)
    out: dict[str, str] = {}
    seen: set[str] = set()
    for i, (a, b) in enumerate(zip(src.tolist(), dst.tolist())):
        if a in out or b in seen:
            field, value = (from_col, a) if a in out else (to_col, b)
            raise DataError(f"{value!r} is mapped twice", path=path, line=int(lines[i]), field=field)
        out[a] = b
        seen.add(b)
    return out


def _read_items(path: Path, id_col: str, columns: Sequence[str] | None, text_cols: Sequence[str],
                image_col: str | None, launch_col: str | None, id_map: dict[str, str] | None, sep: str | None,
                parse_dates: bool, date_format: str | None) -> tuple[dict[str, dict[str, object]], list[str]]:
    """({interactions id: record}, notes). Rows the map does not list are left out (and counted)."""
    want = [id_col, *text_cols, *([image_col] if image_col else []), *([launch_col] if launch_col else [])]
    table = _read(path, want, sep, columns)
    lines = _line_numbers(path, len(table), header=columns is None)
    ids = _ids(table[id_col], path, lines, id_col)
    texts = {c: _strings(table[c]) for c in text_cols}
    images = _strings(table[image_col]) if image_col else None
    launch = (_launch_times(table[launch_col], path, lines, launch_col, parse_dates, date_format)
              if launch_col else None)
    records: dict[str, dict[str, object]] = {}
    unmapped = 0
    for i, raw in enumerate(ids.tolist()):
        iid = raw if id_map is None else id_map.get(raw)
        if iid is None:
            unmapped += 1
            continue
        if iid in records:
            raise DataError(f"duplicate item id {raw!r}", path=path, line=int(lines[i]), field=id_col)
        rec: dict[str, object] = {c: clean_text(texts[c][i]) for c in text_cols}
        if images is not None and images[i]:
            rec["image"] = images[i]
        if launch is not None:
            rec["launch_ts"] = launch[i]
        records[iid] = rec
    notes = [f"{unmapped} row(s) of {path.name} are not in the item map and were left out"] if unmapped else []
    return records, notes


def _template_images(records: dict[str, dict[str, object]], catalogue: Sequence[str], raw_ids: dict[str, str],
                     template: str, image_root: str | Path | None) -> list[str]:
    """Fill record["image"] from the template for every catalogue item whose file exists; note the others."""
    root = Path(image_root) if image_root is not None else Path()
    missing = 0
    for iid in catalogue:
        rec = records.setdefault(iid, {})
        try:
            rel = template.format(**{k: v for k, v in rec.items() if isinstance(v, str)}, id=raw_ids.get(iid, iid))
        except KeyError as exc:
            raise ConfigError(f"data.options.image_template {template!r} names {exc.args[0]!r}, which is "
                              "neither 'id' nor an item text column") from None
        if (root / rel).is_file():
            rec["image"] = rel
        else:
            missing += 1
    return [f"{missing} of {len(catalogue)} item(s) have no image file at {root}/{template}"] if missing else []


def _read(path: Path, cols: list[str], sep: str | None, names: Sequence[str] | None = None) -> Any:
    """A DataFrame with the requested columns; missing columns raise DataError naming them. `names`: the
    columns of a header-less text file (every row must have exactly that many fields)."""
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
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                                header=0 if names is None else None)
        except pd.errors.EmptyDataError:
            raise DataError("file is empty", path=path) from None
        except pd.errors.ParserError as exc:
            found = re.search(r"line (\d+)", str(exc))
            line = int(found.group(1)) if found else None
            raise DataError(f"malformed table: {str(exc).strip()}", path=path, line=line) from None
    if names is not None:
        if frame.shape[1] != len(names):
            raise DataError(f"{frame.shape[1]} fields per row, but the config names {len(names)} columns "
                            f"{list(names)}", path=path, line=1)
        frame.columns = list(names)
    for c in cols:
        if c not in frame.columns:
            raise DataError(f"missing required column {c!r}; have {list(frame.columns)}", path=path, line=1, field=c)
    if len(frame) == 0:
        raise DataError("file has no data rows", path=path)
    return frame


def _line_numbers(path: Path, n: int, header: bool = True) -> np.ndarray:
    start = 2 if header and path.suffix.lower() not in PARQUET else 1  # text: a header is line 1
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


def _launch_times(col: Any, path: Path, lines: np.ndarray, field: str, parse_dates: bool,
                  date_format: str | None = None) -> list[int | None]:
    """Launch time per row (unix seconds); blank cells are unknown (None), anything else must parse."""
    blank = np.asarray([not v.strip() for v in _strings(col)], dtype=bool)
    out: list[int | None] = [None] * len(col)
    if (~blank).any():
        parsed = _times(col[~blank], path, lines[~blank], field, parse_dates, date_format)
        for i, t in zip(np.flatnonzero(~blank), parsed):
            out[int(i)] = int(t)
    return out


def _times(col: Any, path: Path, lines: np.ndarray, field: str, parse_dates: bool,
           date_format: str | None = None) -> np.ndarray:
    if not parse_dates and date_format is None:
        return parse_int(_strings(col), path, lines, field)
    import pandas as pd

    parsed = pd.to_datetime(col, errors="coerce", utc=True, format=date_format)
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"cannot parse date/time {col.iloc[i]!r}", path=path, line=int(lines[i]), field=field)
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)

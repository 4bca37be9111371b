"""MovieLens 100K: `u.data` (user, item, rating, unix ts), `u.item` (title, release date, 19 genre flags),
`u.genre`, plus optional TMDB plots (`tmdb_items.csv`) and posters (`posters/<movie_id>.jpg`).

Item text fields: title, genres (comma-separated names; the "unknown" genre is left out), plot.
Item launch time: the u.item release date (midnight UTC of that day), None where it is blank.
"""

from __future__ import annotations

import calendar
import csv
import logging
import os
from datetime import datetime
from pathlib import Path

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.sources.common import (
    RawEvents,
    build_dataset,
    check_known,
    clean_text,
    open_text,
    parse_float,
    parse_int,
    read_rows,
)
from modalrec.errors import DataError

log = logging.getLogger(__name__)

N_GENRES = 19
TEXT_FIELDS = ("title", "genres", "plot")


def load_movielens(
    directory: str | Path,
    *,
    plots: bool = True,
    posters: bool = True,
    min_rating: float | None = None,
    strict: bool = True,
    name: str = "ml-100k",
) -> Dataset:
    """Load MovieLens 100K from `directory`.

    `plots` / `posters` use `tmdb_items.csv` and `posters/` when present (absent files are noted in the
    summary, not an error). `min_rating` keeps events rated >= it. With `strict`, a movie id in u.data
    that u.item does not list is an error.
    """
    root = Path(directory)
    data_path, item_path, genre_path = root / "u.data", root / "u.item", root / "u.genre"
    _, rows, lines = read_rows(data_path, "\t", 4)
    cols = list(zip(*rows))
    users = np.asarray(cols[0], dtype=str)
    items = np.asarray(cols[1], dtype=str)
    parse_int(cols[0], data_path, lines, "user_id")
    parse_int(cols[1], data_path, lines, "item_id")
    ratings = parse_float(cols[2], data_path, lines, "rating")
    ts = parse_int(cols[3], data_path, lines, "timestamp")

    genre_names = _read_genres(genre_path)
    records, catalogue = _read_items(item_path, genre_names)
    if strict:
        check_known(items, catalogue, data_path, lines, "item_id", f"movie list {item_path.name}")
    files: dict[str, str | Path] = {"interactions": data_path, "items": item_path, "genres": genre_path}
    notes: list[str] = []
    extra: dict[str, object] = {}
    if plots:
        tmdb = root / "tmdb_items.csv"
        if tmdb.is_file():
            files["plots"] = tmdb
            n_dup, n_plots = _add_plots(tmdb, records)
            extra["tmdb_duplicate_rows_ignored"] = n_dup
            extra["items_with_plot"] = n_plots
            if n_dup:
                notes.append(f"{tmdb.name}: {n_dup} repeated movie_id rows ignored (first row per movie_id kept)")
        else:
            notes.append(f"plots requested but {tmdb} not found")
    image_root = None
    if posters:
        pdir = root / "posters"
        if pdir.is_dir():
            files["posters"] = pdir
            image_root = pdir
            present = set(os.listdir(pdir))  # one listing instead of 1,682 stat calls
            for mid, rec in records.items():
                if f"{mid}.jpg" in present:
                    rec["image"] = f"{mid}.jpg"
        else:
            notes.append(f"posters requested but {pdir} not found")
    events = RawEvents(users, items, ts=ts, ratings=ratings, notes=notes)
    return build_dataset(
        name, "movielens", events, files=files, records=records, text_fields=TEXT_FIELDS,
        image_field="image" if image_root else None, image_root=image_root, launch_field="launch_ts",
        catalogue=catalogue, min_rating=min_rating, extra=extra,
    )


def _read_genres(path: Path) -> list[str]:
    """Genre names by flag position from u.genre (`name|index`)."""
    _, rows, lines = read_rows(path, "|", 2, encoding="latin-1")
    names = [""] * len(rows)
    for (name, idx), line in zip(rows, lines):
        try:
            i = int(idx)
        except ValueError:
            raise DataError(f"expected a genre index, got {idx!r}", path=path, line=int(line), field="index") from None
        if not 0 <= i < len(rows):
            raise DataError(f"genre index {i} out of range", path=path, line=int(line), field="index")
        names[i] = name
    if len(names) != N_GENRES:
        log.warning("%s lists %d genres, expected %d", path, len(names), N_GENRES)
    return names


def _read_items(path: Path, genre_names: list[str]) -> tuple[dict[str, dict[str, object]], list[str]]:
    """{movie_id: {"title", "genres"}} and movie ids in file order from u.item (latin-1, '|'-separated)."""
    n_cols = 5 + len(genre_names)
    _, rows, lines = read_rows(path, "|", n_cols, encoding="latin-1")
    records: dict[str, dict[str, object]] = {}
    for row, line in zip(rows, lines):
        mid = row[0]
        if mid in records:
            raise DataError(f"duplicate movie id {mid!r}", path=path, line=int(line), field="movie_id")
        flags = row[5:]
        if any(f not in ("0", "1") for f in flags):
            bad = next(i for i, f in enumerate(flags) if f not in ("0", "1"))
            raise DataError(f"genre flag must be 0 or 1, got {flags[bad]!r}", path=path, line=int(line),
                            field=genre_names[bad] or f"genre{bad}")
        genres = [g for g, f in zip(genre_names, flags) if f == "1" and g != "unknown"]
        records[mid] = {"title": clean_text(row[1]), "genres": ", ".join(genres),
                        "launch_ts": _release_ts(row[2], path, int(line))}
    return records, list(records)


def _release_ts(date: str, path: Path, line: int) -> int | None:
    """Unix seconds of a u.item release date such as "01-Jan-1995" (midnight UTC); None when blank."""
    if not date.strip():
        return None
    try:
        return calendar.timegm(datetime.strptime(date.strip(), "%d-%b-%Y").timetuple())
    except ValueError:
        raise DataError(f"expected a release date like 01-Jan-1995, got {date!r}", path=path, line=line,
                        field="release_date") from None


def _add_plots(path: Path, records: dict[str, dict[str, object]]) -> tuple[int, int]:
    """Set records[id]["plot"] from the TMDB `overview` column; keep the first row of a repeated id."""
    seen: set[str] = set()
    n_dup = 0
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        for col in ("movie_id", "overview"):
            if reader.fieldnames is None or col not in reader.fieldnames:
                raise DataError(f"missing column {col!r}; have {reader.fieldnames}", path=path, line=1, field=col)
        try:
            recs = list(reader)
        except csv.Error as exc:
            raise DataError(f"malformed CSV: {exc}", path=path, line=reader.line_num) from None
        for rec in recs:
            mid = (rec.get("movie_id") or "").strip()
            if mid in seen:
                n_dup += 1
                continue
            seen.add(mid)
            if mid in records:
                records[mid]["plot"] = clean_text(rec.get("overview"))
    return n_dup, sum(bool(r.get("plot")) for r in records.values())

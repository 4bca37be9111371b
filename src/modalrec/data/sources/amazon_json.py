"""Amazon review data (2018 release, also 2014): reviews + item metadata, one object per line, plain
or `.gz`.

reviews: reviewerID, asin, unixReviewTime (unix seconds), overall (rating; needed only for min_rating)
meta:    asin, title, brand, category (2018: list of str) or categories (2014: list of lists),
         description (str or list of str), date (2018: "June 15, 2010", the item's launch time when it
         parses). imageURL / imageURLHighRes are remote URLs and are only
         counted; local images come from `image_dir/<asin>.{jpg,jpeg,png,webp}` when present.

Lines are JSON; the 2014 files' Python-literal lines ({'asin': ...}) are read with ast.literal_eval
(safe: literals only). Text fields: title, brand, categories, description (HTML unescaped, tags dropped).
"""

from __future__ import annotations

import ast
import calendar
import json
import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.sources.common import RawEvents, build_dataset, check_known, clean_text, open_text
from modalrec.errors import DataError

TEXT_FIELDS = ("title", "brand", "categories", "description")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']*)["']""")


def load_amazon_json(
    reviews_path: str | Path,
    meta_path: str | Path | None = None,
    image_dir: str | Path | None = None,
    *,
    min_rating: float | None = None,
    dedupe: bool = False,
    strict: bool = False,
    keep_unused_items: bool = False,
    name: str | None = None,
) -> Dataset:
    """Load Amazon reviews (+ optional metadata and local images).

    `dedupe` drops exact repeats of (reviewer, asin, time) — the 2018 dumps contain some — keeping the
    first, recorded in summary["filters"]. Metadata is often incomplete: items without it get empty
    text unless `strict`, which makes a reviewed asin missing from `meta_path` an error.
    """
    reviews_path = Path(reviews_path)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    ratings: list[float] = []
    lines: list[int] = []
    seen: set[tuple[str, str, int]] = set()
    n_dupes = 0
    with open_text(reviews_path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            obj = _parse(line, reviews_path, line_no)
            user = _string(obj, "reviewerID", reviews_path, line_no)
            asin = _string(obj, "asin", reviews_path, line_no)
            ts = _int(obj, "unixReviewTime", reviews_path, line_no)
            if dedupe:
                key = (user, asin, ts)
                if key in seen:
                    n_dupes += 1
                    continue
                seen.add(key)
            users.append(user)
            items.append(asin)
            times.append(ts)
            ratings.append(_float(obj, "overall", reviews_path, line_no) if min_rating is not None else 0.0)
            lines.append(line_no)
    if not users:
        raise DataError("no reviews found (file is empty)", path=reviews_path)
    item_arr = np.asarray(items, dtype=str)
    files: dict[str, str | Path] = {"reviews": reviews_path}
    prefilters: list[dict[str, Any]] = []
    if dedupe:
        prefilters.append({"filter": "dedupe", "key": ["user", "item", "time"],
                           "before": {"interactions": len(users) + n_dupes}, "after": {"interactions": len(users)}})
    records: dict[str, dict[str, object]] = {}
    catalogue: list[str] | None = None
    extra: dict[str, Any] = {}
    notes: list[str] = []
    if meta_path is not None:
        meta_path = Path(meta_path)
        files["meta"] = meta_path
        wanted = None if keep_unused_items else set(items)
        records, n_dup_meta, n_urls = _read_meta(meta_path, wanted)
        catalogue = list(records)
        extra.update(meta_duplicate_rows_ignored=n_dup_meta, items_with_image_url=n_urls)
        if n_dup_meta:
            notes.append(f"{meta_path.name}: {n_dup_meta} repeated asin rows ignored (first kept)")
        if strict:
            check_known(item_arr, records.keys(), reviews_path, np.asarray(lines), "asin", f"metadata {meta_path.name}")
        missing = len(set(items) - records.keys())
        extra["reviewed_items_without_meta"] = missing
    image_root = None
    if image_dir is not None:
        image_root = Path(image_dir)
        if not image_root.is_dir():
            raise DataError("image directory not found", path=image_root)
        files["images"] = image_root
        by_stem = {}
        for fname in sorted(os.listdir(image_root)):
            stem, ext = os.path.splitext(fname)
            if ext.lower() in IMAGE_EXTS:
                by_stem.setdefault(stem, fname)
        for asin in set(items) | records.keys():
            if asin in by_stem:
                records.setdefault(asin, {})["image"] = by_stem[asin]
    events = RawEvents(
        np.asarray(users, dtype=str), item_arr, ts=np.asarray(times, dtype=np.int64),
        ratings=np.asarray(ratings, dtype=np.float64) if min_rating is not None else None,
        rows=np.asarray(lines, dtype=np.int64) - 1, notes=notes,
    )
    return build_dataset(
        name or _stem(reviews_path), "amazon_json", events, files=files, records=records, text_fields=TEXT_FIELDS,
        image_field="image" if image_root else None, image_root=image_root, launch_field="launch_ts",
        catalogue=catalogue, keep_unused_items=keep_unused_items, min_rating=min_rating, extra=extra,
        prefilters=prefilters,
    )


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


def _read_meta(path: Path, wanted: set[str] | None) -> tuple[dict[str, dict[str, object]], int, int]:
    """Records {asin: text fields} for the wanted asins (all when None); first line per asin wins."""
    records: dict[str, dict[str, object]] = {}
    n_dup = n_urls = 0
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            found = _ASIN.search(line)  # skip unwanted items without parsing (meta files are large)
            if found and wanted is not None and found.group(1) not in wanted:
                continue
            obj = _parse(line, path, line_no)
            asin = _string(obj, "asin", path, line_no)
            if wanted is not None and asin not in wanted:
                continue
            if asin in records:
                n_dup += 1
                continue
            cats = obj.get("category", obj.get("categories"))
            if cats and isinstance(cats, list) and all(isinstance(c, list) for c in cats):
                cats = [" > ".join(map(str, c)) for c in cats]  # 2014: list of category paths
            records[asin] = {
                "launch_ts": _meta_date(obj.get("date")),
                "title": clean_text(obj.get("title"), strip_tags=True),
                "brand": clean_text(obj.get("brand"), strip_tags=True),
                "categories": clean_text(cats, strip_tags=True),
                "description": clean_text(obj.get("description"), strip_tags=True),
            }
            n_urls += bool(obj.get("imageURLHighRes") or obj.get("imageURL") or obj.get("imUrl"))
    return records, n_dup, n_urls


def _meta_date(value: object) -> int | None:
    """Unix seconds (midnight UTC) of a 2018 metadata `date` such as "June 15, 2010"; None when absent or
    not a date (the field often holds page fragments instead)."""
    if not isinstance(value, str):
        return None
    try:
        return calendar.timegm(datetime.strptime(value.strip(), "%B %d, %Y").timetuple())
    except ValueError:
        return None


def _parse(line: str, path: Path, line_no: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        if not line.lstrip().startswith("{'"):
            raise DataError(f"invalid JSON: {exc.msg} at column {exc.colno}", path=path, line=line_no) from None
        try:  # the 2014 dumps are Python literals
            obj = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError):
            raise DataError(f"invalid JSON: {exc.msg} at column {exc.colno}", path=path, line=line_no) from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=line_no)
    return obj


def _string(obj: dict[str, Any], key: str, path: Path, line_no: int) -> str:
    value = obj.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError("missing required field", path=path, line=line_no, field=key)
    if not isinstance(value, (str, int)):
        raise DataError(f"expected a string, got {type(value).__name__}", path=path, line=line_no, field=key)
    return str(value).strip()


def _int(obj: dict[str, Any], key: str, path: Path, line_no: int) -> int:
    value = obj.get(key)
    if value is None:
        raise DataError("missing required field", path=path, line=line_no, field=key)
    try:
        f = float(value)
        if f != int(f):
            raise ValueError
        return int(f)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"expected an integer, got {value!r}", path=path, line=line_no, field=key) from None


def _float(obj: dict[str, Any], key: str, path: Path, line_no: int) -> float:
    value = obj.get(key)
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"expected a number, got {value!r}", path=path, line=line_no, field=key) from None
    if math.isnan(f):
        raise DataError("rating is NaN", path=path, line=line_no, field=key)
    return f

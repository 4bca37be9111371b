"""What a dataset and its split look like before anything is trained or encoded: counts, time span, events per
user and item, cold-start shares of VALID and TEST, and items without text or image."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.splits import Split


def inspect_dataset(ds: Dataset, split: Split) -> dict[str, Any]:
    """A JSON-able summary (see `format_inspection` for the printed form)."""
    inter = ds.interactions
    per_user = inter.seq_lengths()[1:]
    per_item = inter.item_counts()[1:]
    out: dict[str, Any] = {
        "name": ds.name,
        "source": ds.summary.get("source"),
        "counts": {"users": int((per_user > 0).sum()), "items": int((per_item > 0).sum()),
                   "interactions": len(inter), "catalogue_items": ds.n_items},
        "time": _time_span(inter.ts, ds.summary.get("time", "unix_seconds")),
        "events_per_user": _spread(per_user[per_user > 0]),
        "events_per_item": _spread(per_item[per_item > 0]),
        "split": {"name": split.name, "train_events": len(split.train)},
        "content": _content(ds, split),
        "filters": ds.summary.get("filters", []),
        "notes": ds.summary.get("notes", []),
    }
    for part, es in (("valid", split.valid), ("test", split.test)):
        n = len(es)
        out["split"][part] = {
            "events": n,
            "cold_item": int(es.cold_item.sum()), "cold_user": int(es.cold_user.sum()),
            "cold_item_share": float(es.cold_item.mean()) if n else None,
            "cold_user_share": float(es.cold_user.mean()) if n else None,
        }
    return out


def format_inspection(info: dict[str, Any]) -> str:
    """The summary as aligned text lines."""
    c, t = info["counts"], info["time"]
    lines = [(f"dataset  {info['name']} ({info['source']}): {c['users']:,} users, {c['items']:,} items with events "
             f"({c['catalogue_items']:,} in the vocabulary), {c['interactions']:,} interactions")]
    if t["kind"] == "unix_seconds":
        lines.append(f"time     {t['first']} .. {t['last']} ({t['days']:,.1f} days)")
    else:
        lines.append("time     file order only (no timestamps)")
    for key, label in (("events_per_user", "per user"), ("events_per_item", "per item")):
        s = info[key]
        lines.append(f"{label:<9}min {s['min']}, median {s['median']:g}, mean {s['mean']:.2f}, max {s['max']} events")
    sp = info["split"]
    lines.append(f"split    {sp['name']}: {sp['train_events']:,} train events")
    lines.append(f"         {'':<6}{'events':>9}{'cold item':>18}{'cold user':>18}")
    for part in ("valid", "test"):
        p = sp[part]
        cells = [f"{p[g]:,} ({_pct(p[g + '_share'])})" for g in ("cold_item", "cold_user")]
        lines.append(f"         {part.upper():<6}{p['events']:>9,}{cells[0]:>18}{cells[1]:>18}")
    ct = info["content"]
    n = ct["items"]
    for kind in ("text", "image"):
        if ct[f"with_{kind}"] is None:
            lines.append(f"{kind:<9}no {kind} source configured")
        else:
            without = n - ct[f"with_{kind}"]
            lines.append(f"{kind:<9}{without:,} of {n:,} items without {kind} ({_pct(without / n if n else None)}); "
                         f"{ct[f'cold_test_without_{kind}']:,} of the cold-item TEST targets")
    lines += [f"filter   {f.get('filter')}: {_filter_text(f)}" for f in info["filters"]]
    lines += [f"note     {note}" for note in info["notes"]]
    return "\n".join(lines)


def _time_span(ts: np.ndarray, kind: str) -> dict[str, Any]:
    if kind != "unix_seconds" or not len(ts):
        return {"kind": "order"}
    lo, hi = int(ts.min()), int(ts.max())
    iso = lambda s: datetime.fromtimestamp(s, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
    return {"kind": kind, "first": iso(lo), "last": iso(hi), "days": (hi - lo) / 86400}


def _spread(counts: np.ndarray) -> dict[str, Any]:
    if not len(counts):
        return {"min": 0, "median": 0.0, "mean": 0.0, "max": 0}
    return {"min": int(counts.min()), "median": float(np.median(counts)), "mean": float(counts.mean()),
            "max": int(counts.max())}


def _content(ds: Dataset, split: Split) -> dict[str, Any]:
    """Items (vocabulary rows) with non-empty text / an image; None where the source gives no such field."""
    table = ds.items
    n = ds.n_items
    has_text = np.zeros(n + 1, dtype=bool)
    for values in table.fields.values():
        has_text |= np.asarray([bool(v.strip()) for v in values], dtype=bool)
    has_image = np.asarray([p is not None for p in table.image_paths], dtype=bool)
    image_source = ds.summary.get("image_source", bool(ds.summary.get("items_with_image")))
    cold = split.test.target[split.test.cold_item]
    return {
        "items": n,
        "with_text": int(has_text[1:].sum()) if table.fields else None,
        "with_image": int(has_image[1:].sum()) if image_source else None,
        "cold_test_without_text": int((~has_text[cold]).sum()),
        "cold_test_without_image": int((~has_image[cold]).sum()),
    }


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}%"


def _filter_text(f: dict[str, Any]) -> str:
    before, after = f.get("before", {}), f.get("after", {})
    if before and after:
        return f"{before.get('interactions', '?'):,} -> {after.get('interactions', '?'):,} interactions"
    return ", ".join(f"{k}={v}" for k, v in f.items() if k != "filter")

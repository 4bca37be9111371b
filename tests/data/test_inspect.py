"""`inspect_dataset` on a hand-made log: every number checked against a count by hand."""

from __future__ import annotations

from pathlib import Path

from modalrec.data.inspect import format_inspection, inspect_dataset
from modalrec.data.sources import load_table
from modalrec.data.splits import leave_one_out


def test_counts_span_cold_shares_and_missing_content(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("u,i,t\n" + "".join(
        f"{u},{i},{t}\n" for u, i, t in [("a", "x", 0), ("a", "y", 86400), ("a", "z", 2 * 86400),
                                          ("b", "x", 0), ("b", "y", 3600), ("b", "x", 7200), ("c", "y", 10)]))
    (tmp_path / "items.csv").write_text("i,title\nx,Ex\ny,\nz,Zed\n")
    ds = load_table(tmp_path / "log.csv", "u", "i", "t", items_path=tmp_path / "items.csv", text_cols=["title"])
    info = inspect_dataset(ds, leave_one_out(ds.interactions))
    assert info["counts"] == {"users": 3, "items": 3, "interactions": 7, "catalogue_items": 3}
    assert info["time"]["first"] == "1970-01-01 00:00" and info["time"]["days"] == 2.0
    assert info["events_per_user"] == {"min": 1, "median": 3.0, "mean": 7 / 3, "max": 3}
    assert info["events_per_item"] == {"min": 1, "median": 3.0, "mean": 7 / 3, "max": 3}
    # leave-one-out: a's test target z never trained (cold item); c has one event and is not evaluated
    assert info["split"]["test"] == {"events": 2, "cold_item": 1, "cold_user": 0, "cold_item_share": 0.5,
                                     "cold_user_share": 0.0}
    assert info["content"] == {"items": 3, "with_text": 2, "with_image": None, "cold_test_without_text": 0,
                               "cold_test_without_image": 1}
    text = format_inspection(info)
    assert "1 of 3 items without text (33.3%)" in text and "no image source configured" in text

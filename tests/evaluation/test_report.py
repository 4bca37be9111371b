"""Report serialisation, markdown tables and charts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modalrec.evaluation.report import Report, bar_chart, compare_table


def make_report(scale: float = 1.0, cold_user: int = 0) -> Report:
    metrics = {"hr@10": 0.5 * scale, "recall@10": 0.5 * scale, "ndcg@10": 0.25 * scale, "mrr": 0.2 * scale}
    empty = {k: None for k in metrics}
    return Report(
        overall=dict(metrics),
        groups={
            "warm": {k: v * 1.2 for k, v in metrics.items()},
            "cold_item": {k: v * 0.5 for k, v in metrics.items()},
            "cold_user": empty if cold_user == 0 else dict(metrics),
        },
        counts={"overall": 100, "warm": 80, "cold_item": 20, "cold_user": cold_user},
        meta={"ks": [10], "name": "test"},
        ranks=np.arange(1, 101, dtype=np.int64),
    )


def test_json_roundtrip_is_atomic_and_excludes_ranks_by_default(tmp_path: Path) -> None:
    rep = make_report()
    path = tmp_path / "sub" / "report.json"
    rep.to_json(path)
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left behind
    data = json.loads(path.read_text())
    assert "ranks" not in data and data["groups"]["cold_user"]["ndcg@10"] is None
    back = Report.from_json(path)
    assert back.overall == rep.overall and back.groups == rep.groups and back.counts == rep.counts
    assert back.ranks is None
    rep.to_json(path, include_ranks=True)
    np.testing.assert_array_equal(Report.from_json(path).ranks, rep.ranks)
    with pytest.raises(ValueError, match="counts"):
        Report.from_dict({"overall": {}, "groups": {}})


def test_metric_lookup() -> None:
    rep = make_report()
    assert rep.metric("ndcg@10") == 0.25 and rep.metric("ndcg@10", "overall") == 0.25
    assert rep.metric("ndcg@10", "warm") == pytest.approx(0.3)
    assert rep.metric("mrr", "cold_user") is None
    with pytest.raises(KeyError, match="unknown metric"):
        rep.metric("ndcg@7")
    with pytest.raises(KeyError, match="unknown group"):
        rep.metric("ndcg@10", "lukewarm")


def test_markdown_table_rows_columns_and_counts() -> None:
    lines = make_report().to_markdown().splitlines()
    assert lines[0] == "| group | hr@10 | ndcg@10 | mrr | count |"
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["overall", "warm", "cold_item", "cold_user"]
    assert lines[3] == "| warm | 0.6000 | 0.3000 | 0.2400 | 80 |"
    assert lines[5] == "| cold_user | n/a | n/a | n/a | 0 |"
    rep = make_report()
    rep.meta["candidates"] = "exclude_seen: a repeat target stays rankable"
    assert rep.to_markdown().splitlines()[-1] == "Candidates: exclude_seen: a repeat target stays rankable."


def test_compare_table() -> None:
    table = compare_table(
        {"id": make_report(), "content": make_report(2.0)}, metrics=["ndcg@10"], groups=["warm", "cold_item"]
    )
    lines = table.splitlines()
    assert lines[0] == "| run | ndcg@10 warm (n=80) | ndcg@10 cold_item (n=20) |"
    assert lines[2] == "| id | 0.3000 | 0.1250 |" and lines[3] == "| content | 0.6000 | 0.2500 |"


def test_bar_chart_writes_png(tmp_path: Path) -> None:
    path = bar_chart(
        {"id": make_report(), "content": make_report(2.0, cold_user=5)},
        "ndcg@10",
        ["warm", "cold_item", "cold_user"],
        tmp_path / "ndcg.png",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000

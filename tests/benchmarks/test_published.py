"""Published comparisons restate a run under the paper's candidate rule: novel targets, and history masked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _published


def test_history_masked_counts_repeat_targets_as_misses() -> None:
    # 10 events: 8 novel (2 hits at rank 1), 2 repeats (both hit at rank 1 when kept rankable)
    groups = {"overall": {"n": 10, "hr@10": 0.4, "ndcg@10": 0.4}, "novel": {"n": 8, "hr@10": 0.25, "ndcg@10": 0.25}}
    views = _published.restate(groups)
    assert views["all_targets"] == {"n": 10, "hr@10": 40.0, "ndcg@10": 40.0}
    assert views["novel_targets"] == {"n": 8, "hr@10": 25.0, "ndcg@10": 25.0}
    assert views["history_masked"] == {"n": 10, "hr@10": 20.0, "ndcg@10": 20.0}  # the 2 novel hits over 10 events


def test_restate_needs_the_novel_group() -> None:
    with pytest.raises(KeyError, match="novel"):
        _published.restate({"overall": {"n": 3, "hr@10": 0.0, "ndcg@10": 0.0}})


def test_every_published_block_names_the_protocol() -> None:
    block = _published.comparison("iisan_scientific", {})
    assert "masked" in block["protocol"] and block["masks_history"] is True
    assert block["published_pct"]["IISAN-VA"] == {"hr@10": 7.29, "ndcg@10": 4.41}

"""How every benchmark reports: the JSON on stdout, and the same JSON written atomically to --out."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modalrec.io import write_json_atomic


def groups_of(report: Any, metrics: Sequence[str] = ("ndcg@10", "hr@10")) -> dict[str, Any]:
    """Events and `metrics` overall and per evaluator group of a Report (modalrec.evaluation.report.GROUP_ROWS:
    warm / cold_item / cold_user, repeat / novel, history buckets); a metric is None where its group has no events."""
    from modalrec.evaluation.report import GROUP_ROWS

    return {g: {"n": report.counts.get(g, 0), **{m: report.metric(m, g) for m in metrics}}
            for g in GROUP_ROWS if g == "overall" or g in report.groups}


def emit_json(result: dict[str, Any], out: str | Path | None) -> None:
    """Print `result` as indented JSON (values JSON cannot hold become strings) and write it to `out` if given.

    On a machine with a CUDA GPU the GPU's name is added (`cuda_device`), so a result says where it ran."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        result = {**result, "cuda_device": torch.cuda.get_device_name(0)}
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if out:
        write_json_atomic(out, json.loads(text))


def start_run(threads: int) -> None:
    """What a benchmark's main does first: no model-hub lookups, its torch thread count, timestamped log lines."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")


def earlier_json(out: Path | None) -> dict[str, Any]:
    """The JSON a previous run left at `out` ({} if none): a rerun adds to its results instead of starting over."""
    return json.loads(out.read_text()) if out and out.is_file() else {}


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation over seeds (None with one seed) of a non-empty list."""
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return mean, sd

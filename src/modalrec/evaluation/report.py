"""Evaluation report: overall and per-group metrics, event counts, metadata -> JSON, markdown, charts."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.data.splits import GROUPS
from modalrec.io import write_bytes_atomic, write_json_atomic

GROUP_ROWS = ("overall", *GROUPS)
SUMMARY_GROUPS = ("overall", "warm", "cold_item", "cold_user", "novel")  # the columns of comparison tables


@dataclass
class Report:
    """Metrics of one evaluation run.

    overall: metric -> value over all events; groups: group -> metric -> value (None when the group
    has no events, never NaN); counts: "overall" and each group -> number of events; meta: protocol,
    definitions, timing; ranks: optional [E] int64 per-event pessimistic ranks (not in JSON by default).
    """

    overall: dict[str, float | None]
    groups: dict[str, dict[str, float | None]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    ranks: np.ndarray | None = None

    def metric(self, name: str, group: str | None = None) -> float | None:
        """Value of `name` ("ndcg@10", "hr@10", "mrr", ...) overall or for `group`; None if the group is empty."""
        if group in (None, "overall"):
            table = self.overall
        elif group in self.groups:
            table = self.groups[group]
        else:
            raise KeyError(f"unknown group {group!r}; available: overall, {', '.join(self.groups)}")
        if name not in table:
            raise KeyError(f"unknown metric {name!r}; available: {', '.join(table)}")
        return table[name]

    def to_dict(self, include_ranks: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "overall": dict(self.overall),
            "groups": {g: dict(m) for g, m in self.groups.items()},
            "counts": dict(self.counts),
            "meta": dict(self.meta),
        }
        if include_ranks and self.ranks is not None:
            out["ranks"] = np.asarray(self.ranks, dtype=np.int64).tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        missing = [k for k in ("overall", "groups", "counts") if k not in data]
        if missing:
            raise ValueError(f"not a Report: missing field(s) {', '.join(missing)}")
        ranks = data.get("ranks")
        return cls(
            overall={k: _opt_float(v) for k, v in data["overall"].items()},
            groups={g: {k: _opt_float(v) for k, v in m.items()} for g, m in data["groups"].items()},
            counts={k: int(v) for k, v in data["counts"].items()},
            meta=dict(data.get("meta", {})),
            ranks=None if ranks is None else np.asarray(ranks, dtype=np.int64),
        )

    def to_json(self, path: str | Path, include_ranks: bool = False) -> None:
        """Write atomically (a crash never leaves a half-written report)."""
        write_json_atomic(path, self.to_dict(include_ranks))

    @classmethod
    def from_json(cls, path: str | Path) -> Report:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def default_metrics(self) -> list[str]:
        """HR@K and NDCG@K for each K in meta["ks"] (or found in the keys), then MRR."""
        ks = self.meta.get("ks") or sorted(
            {int(k.split("@")[1]) for k in self.overall if k.startswith("ndcg@")}
        )
        names = [m for k in ks for m in (f"hr@{k}", f"ndcg@{k}")] + ["mrr"]
        return [n for n in names if n in self.overall]

    def to_markdown(self, metrics: Sequence[str] | None = None) -> str:
        """Table: rows overall and every group, columns the metrics and the event count; then the candidate
        rule (exclude_seen and its treatment of repeat targets) when the report records it."""
        metrics = list(metrics) if metrics is not None else self.default_metrics()
        lines = ["| group | " + " | ".join(metrics) + " | count |", "|---|" + "---:|" * (len(metrics) + 1)]
        for g in [r for r in GROUP_ROWS if r == "overall" or r in self.groups]:
            values = [_fmt(self.metric(m, g)) for m in metrics]
            lines.append(f"| {g} | " + " | ".join(values) + f" | {self.counts.get(g, 0)} |")
        if self.meta.get("candidates"):  # how repeats were treated decides what the repeat row means
            lines += ["", f"Candidates: {self.meta['candidates']}."]
        return "\n".join(lines)


def compare_table(
    reports: Mapping[str, Report],
    metrics: Sequence[str] = ("ndcg@10", "hr@10"),
    groups: Sequence[str] = SUMMARY_GROUPS,
) -> str:
    """Markdown table, one row per run, one column per (metric, group); event counts in the header."""
    names = list(reports)
    header = []
    for g in groups:
        counts = {r.counts.get(g) for r in reports.values()}
        suffix = f" (n={counts.pop()})" if len(counts) == 1 else ""
        header += [f"{m} {g}{suffix}" for m in metrics]
    lines = ["| run | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for name in names:
        rep = reports[name]
        cells = [_fmt(metric_or_none(rep, m, g)) for g in groups for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(
    reports: Mapping[str, Report],
    metric: str = "ndcg@10",
    groups: Sequence[str] = ("warm", "cold_item", "cold_user"),
    path: str | Path = "chart.png",
    title: str | None = None,
) -> Path:
    """Grouped bar chart (x: groups, one bar per run) written atomically as PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(groups) + 0.4 * len(reports)), 3.6))
    try:
        draw_group_bars(ax, reports, metric, groups)
        ax.set_ylabel(metric)
        ax.set_title(title or f"{metric} by group")
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)


def draw_group_bars(ax: Any, reports: Mapping[str, Report], metric: str, groups: Sequence[str]) -> None:
    """On a matplotlib axis: x = groups (labelled with their event counts), one annotated bar per run; run i
    is drawn in colour Ci so another panel of the same figure can match it."""
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(reports))
    for i, (name, rep) in enumerate(reports.items()):
        values = [metric_or_none(rep, metric, g) for g in groups]
        drawn = ax.bar(x + (i - (len(reports) - 1) / 2) * width, [0.0 if v is None else v for v in values], width,
                       label=name, color=f"C{i}")
        for rect, v in zip(drawn, values):
            ax.annotate("n/a" if v is None else f"{v:.3f}", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                        ha="center", va="bottom", fontsize=7)
    counts = [next((r.counts.get(g) for r in reports.values() if g in r.counts), None) for g in groups]
    ax.set_xticks(x, [g if c is None else f"{g}\n(n={c})" for g, c in zip(groups, counts)])


def metric_or_none(rep: Report, metric: str, group: str) -> float | None:
    """Metric value, or None when the run lacks that group/metric (so tables of mixed runs still render)."""
    try:
        return rep.metric(metric, group)
    except KeyError:
        return None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)

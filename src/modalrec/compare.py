"""Compare trained runs: the group tables (overall / warm / cold-item / cold-user; repeat / novel targets and the
users' history buckets) and one PNG with the TEST metric by group as bars next to each run's VALID curve over the
epochs."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modalrec.data.splits import COLD_GROUPS, HISTORY_BUCKETS, REPEAT_GROUPS
from modalrec.errors import ConfigError
from modalrec.evaluation.report import Report, compare_table, draw_group_bars, metric_or_none
from modalrec.io import write_bytes_atomic

BAR_GROUPS = COLD_GROUPS
TABLE_GROUPS = ("overall", *COLD_GROUPS)  # always shown, every metric
# shown where some run has events in them, the first metric only (the table stays readable): how much of a score
# is re-recommending the user's own items, and how it varies with the length of the user's history
DETAIL_GROUPS = (*REPEAT_GROUPS, *(name for name, _, _ in HISTORY_BUCKETS))


@dataclass
class RunSummary:
    name: str
    test: Report
    monitor: str | None  # the VALID metric selection used, None for models that are not trained
    valid_curve: list[tuple[int, float]]  # (epoch, VALID monitor value) of every validated epoch


def load_run(run_dir: str | Path) -> RunSummary:
    """TEST report and VALID history of a directory written by `modalrec train`."""
    run_dir = Path(run_dir)
    if not (run_dir / "report.json").is_file() or not (run_dir / "manifest.json").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (needs report.json and manifest.json)")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    history = manifest.get("history") or {}
    monitor = history.get("monitor")
    curve = [(e + 1, float(v[monitor])) for e, v in enumerate(history.get("valid") or [])
             if v and isinstance(v.get(monitor), (int, float))]
    return RunSummary(manifest.get("name", run_dir.name), Report.from_json(run_dir / "report.json"),
                      monitor if curve else None, curve)


def detail_groups(runs: Sequence[RunSummary]) -> tuple[str, ...]:
    """The DETAIL_GROUPS some run's TEST report has events in."""
    return tuple(g for g in DETAIL_GROUPS if any(r.test.counts.get(g) for r in runs))


def candidate_rules(runs: Sequence[RunSummary]) -> list[str]:
    """The candidate rules the runs' TEST reports were ranked under (exclude_seen, repeat targets), each once."""
    return list(dict.fromkeys(str(r.test.meta["candidates"]) for r in runs if r.test.meta.get("candidates")))


def group_table(runs: Sequence[RunSummary], metrics: Sequence[str] = ("ndcg@10", "hr@10")) -> str:
    """Markdown: one row per run, TEST `metrics` for overall / warm / cold_item / cold_user (with event counts);
    then, where the runs have such events, the first metric on repeat / novel targets and per history bucket; then
    the candidate rule, which decides what a repeat target can score."""
    reports = {r.name: r.test for r in runs}
    parts = [compare_table(reports, metrics=metrics, groups=TABLE_GROUPS)]
    if detail := detail_groups(runs):
        parts.append(compare_table(reports, metrics=metrics[:1], groups=detail))
    parts += [f"Candidates: {rule}." for rule in candidate_rules(runs)]
    return "\n\n".join(parts)


def table_data(runs: Sequence[RunSummary], metrics: Sequence[str] = ("ndcg@10", "hr@10")) -> dict:
    """The group tables as data: {run: {"groups": {group: {metric: value}}, "counts": {group: events}}}, every
    metric on every group of `group_table`."""
    groups = (*TABLE_GROUPS, *detail_groups(runs))
    return {r.name: {"groups": {g: {m: metric_or_none(r.test, m, g) for m in metrics} for g in groups},
                     "counts": {g: r.test.counts.get(g) for g in groups}} for r in runs}


def figure(runs: Sequence[RunSummary], path: str | Path, metric: str = "ndcg@10", title: str | None = None) -> Path:
    """PNG, written atomically: left, TEST `metric` per group (one bar per run); right, VALID curves."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    reports = {r.name: r.test for r in runs}
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    try:
        draw_group_bars(bars, reports, metric, BAR_GROUPS)
        bars.set_ylabel(f"TEST {metric}")
        bars.set_title(f"TEST {metric} by group")
        bars.legend(fontsize=8)
        monitors = sorted({r.monitor for r in runs if r.monitor})
        for i, run in enumerate(runs):
            if run.valid_curve:
                epochs, values = zip(*run.valid_curve)
                curves.plot(epochs, values, marker=".", label=run.name, color=f"C{i}")
        curves.xaxis.set_major_locator(MaxNLocator(integer=True))
        curves.set_xlabel("epoch")
        curves.set_ylabel(f"VALID {' / '.join(monitors) or metric}")
        curves.set_title("VALID during training" if monitors else "no trained runs (no VALID curves)")
        if monitors:
            curves.legend(fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)


def summaries(run_dirs: Sequence[str | Path]) -> list[RunSummary]:
    """Every run directory loaded; names are made unique (the table and the figure are keyed by name)."""
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):  # runs in different output dirs may share a name: use the paths
        for r, d in zip(runs, run_dirs):
            r.name = str(d)
    return runs

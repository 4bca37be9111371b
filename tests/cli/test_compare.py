"""`modalrec compare`: the group table holds each run's TEST numbers and the PNG is a real image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from modalrec.cli.main import main
from modalrec.compare import load_run
from modalrec.config import from_dict
from modalrec.experiment import ExperimentConfig
from modalrec.pipeline import run_experiment


def test_table_and_figure_of_two_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = {"output_dir": str(tmp_path / "runs"), "eval": {"ks": [10]},
            "data": {"source": "synthetic", "options": {"n_users": 60, "n_items": 40, "avg_seq_len": 8}},
            "split": {"kind": "global_temporal"}, "train": {"epochs": 3, "progress": False}}
    results = {}
    for name, model in (("pop", {"name": "pop"}), ("sasrec", {"name": "sasrec", "params": {"dim": 16, "max_len": 8}})):
        results[name] = run_experiment(from_dict(ExperimentConfig, {**base, "name": name, "model": model}))
    runs = [str(tmp_path / "runs" / n) for n in results]
    assert main(["compare", *runs, "--md", str(tmp_path / "table.md"), "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    rows: dict[str, str] = {}  # the first table's row of each run
    for line in (line for line in out.splitlines() if line.startswith("| ")):
        rows.setdefault(line.split("|")[1].strip(), line)
    for name, result in results.items():
        want = f"{result.test.metric('ndcg@10', 'cold_item'):.4f}" if result.test.counts["cold_item"] else "n/a"
        assert want in rows[name]
    # repeat / novel targets and history buckets: the first metric in a second table, every metric in the JSON
    detail = [g for g in ("repeat", "novel", "hist_0", "hist_1", "hist_2-4", "hist_5-19", "hist_20+")
              if any(r.test.counts.get(g) for r in results.values())]
    assert "novel" in detail and any(g.startswith("hist_") for g in detail)
    headers = [line for line in out.splitlines() if line.startswith("| run |")]
    assert len(headers) == 2 and all(f"ndcg@10 {g} " in headers[1] for g in detail)
    assert "hr@10" not in headers[1]
    detail_rows = [line for line in out.splitlines() if line.startswith("| sasrec |")]
    want = f"{results['sasrec'].test.metric('ndcg@10', 'novel'):.4f}"
    assert len(detail_rows) == 2 and want in detail_rows[1]
    assert f"Candidates: {results['sasrec'].test.meta['candidates']}." in out
    written = json.loads((tmp_path / "t.json").read_text())
    numbers = written["runs"]
    assert numbers["sasrec"]["groups"]["warm"]["hr@10"] == results["sasrec"].test.metric("hr@10", "warm")
    assert numbers["pop"]["counts"]["overall"] == results["pop"].test.counts["overall"]
    for g in detail:
        assert numbers["sasrec"]["groups"][g]["hr@10"] == results["sasrec"].test.metric("hr@10", g)
        assert numbers["pop"]["counts"][g] == results["pop"].test.counts.get(g)
    assert written["candidates"] == [results["pop"].test.meta["candidates"]]
    png = tmp_path / "runs" / "compare.png"
    assert f"figure written to {png}" in out
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 600
    assert load_run(runs[1]).valid_curve == [
        (e + 1, v["ndcg@10"]) for e, v in enumerate(results["sasrec"].history.valid)]
    assert load_run(runs[0]).valid_curve == []  # pop is counted, not trained


def test_demo_writes_report_and_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--users", "50", "--items", "40", "--epochs", "1",
                 "--text", "hashing:32", "--image", "stats"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed and f"figure: {out / 'demo.png'}" in printed
    report = (out / "report.md").read_text()
    assert "| sasrec-hybrid |" in report and "![TEST ndcg@10 by group and VALID curves](demo.png)" in report
    assert "ndcg@10 novel" in report and "Candidates: exclude_seen" in report and "hist_A-B" in report
    with Image.open(out / "demo.png") as img:
        assert img.format == "PNG"

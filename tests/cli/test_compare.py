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
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for name, result in results.items():
        want = f"{result.test.metric('ndcg@10', 'cold_item'):.4f}" if result.test.counts["cold_item"] else "n/a"
        assert want in rows[name]
    numbers = json.loads((tmp_path / "t.json").read_text())["runs"]
    assert numbers["sasrec"]["groups"]["warm"]["hr@10"] == results["sasrec"].test.metric("hr@10", "warm")
    assert numbers["pop"]["counts"]["overall"] == results["pop"].test.counts["overall"]
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
    with Image.open(out / "demo.png") as img:
        assert img.format == "PNG"

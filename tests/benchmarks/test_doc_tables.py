"""Result tables in docs/ are generated from benchmarks/results/*.json: every table matches its JSON, and the
check notices a table or a JSON that changed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import doc_tables


def test_every_docs_table_matches_its_json() -> None:
    used = set()
    for path in doc_tables.doc_files():
        text = path.read_text()
        _, stale = doc_tables.render(text, where=path.name)
        assert not stale, f"run `python benchmarks/doc_tables.py`: {stale}"
        used |= {m.group("name") for m in doc_tables.BLOCK.finditer(text)}
    assert used == set(doc_tables.TABLES), "every generated table appears in the README or docs/"


def test_check_fails_when_a_number_or_its_json_changes(tmp_path: Path) -> None:
    doc = tmp_path / "b.md"
    doc.write_text("intro\n<!-- table: baselines_ml100k -->\n<!-- /table -->\noutro\n")
    assert doc_tables.main([str(doc)]) == 0 and doc_tables.main(["--check", str(doc)]) == 0
    text = doc.read_text()
    assert "| LightGCN | 0.2108 | 0.0855 |" in text and text.startswith("intro\n") and text.endswith("outro\n")
    doc.write_text(text.replace("| LightGCN | 0.2108", "| LightGCN | 0.2109"))  # a hand edit
    assert doc_tables.main(["--check", str(doc)]) == 1
    results = tmp_path / "results"
    shutil.copytree(doc_tables.RESULTS, results, ignore=shutil.ignore_patterns("*.png", "recbole_seeds"))
    data = json.loads((results / "baselines_ml100k_cpu.json").read_text())
    data["temporal"]["lightgcn"]["test"]["overall"]["recall@20"] = 0.3
    (results / "baselines_ml100k_cpu.json").write_text(json.dumps(data))
    _, stale = doc_tables.render(text, results)  # the table as committed no longer matches the JSON
    assert stale == ["baselines_ml100k"]


def test_claims_table_shows_a_missed_target_and_why(tmp_path: Path) -> None:
    claim = {"system": "X", "claim": "beats Y", "protocol": "P", "ours": {"ndcg@10": 0.12345, "vs Y": "0.2"},
             "target_met": False, "why": "Z falls short", "command": "python benchmarks/x.py"}
    met = {**claim, "system": "W", "target_met": True, "why": "each check met"}
    (tmp_path / "x.json").write_text(json.dumps({"claims": [claim, met, {**met, "system": "V", "why": ""}]}))
    (tmp_path / "y.json").write_text(json.dumps({"results": {}}))  # no claims: no row
    table = doc_tables.claims(tmp_path)
    assert "| X | beats Y | P | ndcg@10 0.1235; vs Y 0.2 | **not met**: Z falls short |" in table
    assert "| W | beats Y | P | ndcg@10 0.1235; vs Y 0.2 | met: each check met |" in table  # a met row says why too
    assert "| V | beats Y | P | ndcg@10 0.1235; vs Y 0.2 | met |" in table and table.count("\n") == 5


def test_a_run_cited_as_an_earlier_budget_gives_no_claims_row_but_keeps_its_lineage(tmp_path: Path) -> None:
    def run(name: str, cites: list[str], steps: int) -> None:
        budgets = [{"source": c, "pretrain_steps": 0, "finetune_steps": 1, "zero_shot_test_ndcg@10": 0.1,
                    "finetuned_test_ndcg@10": 0.2} for c in cites] + [{"source": "this run"}]
        claims = {"system": "S", "claim": "c", "protocol": "p", "ours": {"steps": steps}, "target_met": False,
                  "command": f"run {name}"}
        (tmp_path / name).write_text(json.dumps({"claims": claims, "ablation": {"budgets": budgets}}))

    run("first.json", [], 1)
    run("second.json", ["first.json"], 2)
    run("third.json", ["second.json", "first.json"], 3)
    rows = [r for r in doc_tables.claims(tmp_path).splitlines() if r.startswith("| S |")]
    assert len(rows) == 1 and "third.json" in rows[0]  # first and second are superseded
    lineage = doc_tables._earlier_budgets(tmp_path, json.loads((tmp_path / "third.json").read_text()))
    assert [r["source"] for r in lineage] == ["second.json", "first.json"]  # each once, though cited twice

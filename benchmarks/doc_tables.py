"""Result tables of the docs, generated from benchmarks/results/*.json.

A table lives in a markdown file between `<!-- table: NAME -->` and `<!-- /table -->`; NAME is a key of
TABLES, whose function reads the JSON and returns the table. The text between the markers is owned by this
script: `python benchmarks/doc_tables.py` rewrites it, `--check` exits 1 naming every table that differs
from its JSON (a test runs the check), so no number in a table is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from _output import mean_sd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"


def doc_files() -> list[Path]:
    """Every markdown file that may hold generated tables: the README and docs/."""
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)


def _load(results: Path, name: str) -> Any:
    return json.loads((results / name).read_text())


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "l") -> str:
    """Markdown; the first `len(align)` columns are left-aligned, the rest right-aligned."""
    rule = ["---" if i < len(align) else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _f(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _params(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:.2f} M"


GroupRow = tuple[Sequence[str], Mapping[str, float | None], Mapping[str, int]]  # (labels, value / group, events / group)


def _group_table(head: Sequence[str], rows: Sequence[GroupRow], digits: int = 4) -> str:
    """One cell "value (events)" per evaluator group (modalrec.data.splits.GROUPS) that some row has events in;
    "" when the stored runs predate the repeat / history-bucket groups (their tables stay as they were)."""
    from modalrec.data.splits import GROUPS

    groups = [g for g in GROUPS if any(counts.get(g) for _, _, counts in rows)]
    if not any(g.startswith("hist_") for g in groups):
        return ""

    def cell(values: Mapping[str, float | None], counts: Mapping[str, int], group: str) -> str:
        n, value = counts.get(group, 0), values.get(group)
        return f"{_f(value, digits)} ({n})" if n and value is not None else ""

    return _table([*head, *groups], [[*labels, *(cell(v, c, g) for g in groups)] for labels, v, c in rows],
                  "l" * len(head))


def _with_groups(table: str, head: Sequence[str], rows: Sequence[GroupRow], digits: int = 4) -> str:
    """`table`, then the `_group_table` of `rows` below it when the stored runs have the groups."""
    groups = _group_table(head, rows, digits)
    return table + ("\n" + groups if groups else "")


def demo(results: Path) -> str:
    """`make demo` on the built-in dataset (`modalrec compare runs/demo/... --json benchmarks/results/demo_cpu.json`)."""
    from modalrec.compare import TABLE_GROUPS

    data = _load(results, "demo_cpu.json")
    first = next(iter(data["runs"].values()))
    tables = []
    # as `modalrec compare` prints them: every metric on the cold-start groups, the first on the others it stored
    for groups, metrics in ((TABLE_GROUPS, data["metrics"]),
                            ([g for g in first["groups"] if g not in TABLE_GROUPS], data["metrics"][:1])):
        if groups:
            header = ["run"] + [f"{m} {g} (n={first['counts'][g]})" for g in groups for m in metrics]
            tables.append(_table(header, [[name] + [_f(run["groups"][g][m]) for g in groups for m in metrics]
                                          for name, run in data["runs"].items()]))
    parts = [t.rstrip("\n") for t in tables] + [f"Candidates: {rule}." for rule in data.get("candidates", [])]
    return "\n\n".join(parts) + "\n"


def quality_amazon(results: Path) -> str:
    """Text / hybrid vs ID SASRec on the Amazon sets (metrics in %)."""
    data = _load(results, "quality_amazon_cpu.json")["results"]
    labels = {"scientific": "IISAN Scientific", "instruments": "IISAN Instruments", "unisrec": "UniSRec Scientific"}
    rows: list[list[str]] = []
    by_group: list[GroupRow] = []
    for key, label in labels.items():
        r = data[key]
        best = (r.get("best_content") or {}).get("variant")
        runs = [("SASRec, ID", r["id_sasrec"])] + [
            (f"SASRec, {name}" + (" (best content variant on VALID)" if name == best else ""), run)
            for name, run in r["content_variants"].items() if "test_pct" in run]  # others: not run
        rows += [[label, name, _f(run["test_pct"]["hr@10"], 2), _f(run["test_pct"]["ndcg@10"], 2),
                  _params(run["trainable_params"])] for name, run in runs]
        by_group += [([label, name], {g: v["ndcg@10"] for g, v in run.get("test_groups_pct", {}).items()},
                      {g: v["n"] for g, v in run.get("test_groups_pct", {}).items()}) for name, run in runs]
    table = _table(["data", "model", "HR@10", "NDCG@10", "trainable params"], rows, "ll")
    return _with_groups(table, ["data", "model (TEST NDCG@10 %, events)"], by_group, 2)


def iisan_scientific(results: Path) -> str:
    """IISAN and the frozen-backbone baseline on IISAN Scientific (metrics in %)."""
    data = _load(results, "iisan_scientific_cpu.json")["results"]
    names = {"iisan": "IISAN, text-only intra-modal SAN over cached MiniLM layers",
             "frozen": "frozen backbone (cached last layer + linear)"}
    rows = [[names.get(k, k), _f(r["test"]["hr@10"], 2), _f(r["test"]["ndcg@10"], 2),
             _params(r["efficiency"]["trainable_parameters"]), _f(r["efficiency"]["seconds_per_epoch"], 1)]
            for k, r in data.items()]
    table = _table(["model", "HR@10", "NDCG@10", "trainable params", "s / epoch"], rows)
    return _with_groups(table, ["model (TEST NDCG@10 %, events)"], [
        ([names.get(k, k)], r["groups_test_ndcg@10"], r["groups_test_events"]) for k, r in data.items()], 2)


def iisan_efficiency(results: Path) -> str:
    """Training cost of IISAN vs frozen / LoRA / full fine-tuning on the same batches."""
    data = _load(results, "iisan_efficiency_cpu.json")["results"]
    base = data["iisan"]["seconds_per_epoch"]
    names = {"iisan": "IISAN (cached hidden states)", "frozen": "frozen backbone (cached features)",
             "lora": "LoRA on the encoder", "fft": "full fine-tuning of the encoder"}
    rows = [[names.get(k, k), f"{r['trainable_parameters'] / 1e6:.2f} M", _f(r["seconds_per_epoch"], 1),
             f"{r['peak_memory_mb']:,.0f} MB", f"{r['seconds_per_epoch'] / base:.2f}×"] for k, r in data.items()]
    return _table(["method", "trainable params", "s / epoch (extrapolated)", "peak RSS", "time vs IISAN"], rows)


def age_ml100k(results: Path) -> str:
    """Item-age priors and age-aware baselines on ML-100K: NDCG@10 per group, epoch chosen on VALID."""
    runs = _load(results, "age_ml100k_cpu.json")["results"]

    def label(run: dict[str, Any]) -> str:
        name, params = run["config"]["name"], run["config"]["params"]
        if name != "sasrec":
            return name + (" (launch tie-break)" if params.get("launch_tie_break") else "")
        start = params.get("age_start", "rates")
        personal = ", per-user age vectors" if params.get("age_personal") else ""
        return (f"SASRec {params['tower']['kind']}, age {params['age']} from {start}{personal}, "
                f"`loss_catalogue={params['loss_catalogue']}`, cap {run['options']['epochs']}")

    groups = ("overall", "warm", "cold_item")
    rows = [[label(r), r["best_epoch"] if r["best_epoch"] is not None else "—",
             *(_f(r[part][g]["ndcg@10"]) for part in ("valid", "test") for g in groups)]
            for r in sorted(runs, key=lambda r: r["best_epoch"] is not None)]  # untrained rankers first
    header = ["model", "best epoch"] + [f"{part.upper()} {g.replace('_', ' ')} (n={runs[0][part][g]['n']})"
                                        for part in ("valid", "test") for g in groups]
    return _with_groups(_table(header, rows), ["model (TEST NDCG@10, events)"], [
        ([label(r)], {g: v["ndcg@10"] for g, v in r["test"].items()}, {g: v["n"] for g, v in r["test"].items()})
        for r in sorted(runs, key=lambda r: r["best_epoch"] is not None)])


def cold_erosion_ml100k(results: Path) -> str:
    """VALID NDCG@10 (%) overall / cold-item per epoch and, at the last epoch, the score's parts, per variant."""
    runs = _load(results, "cold_erosion_ml100k_cpu.json")["results"]
    epochs = max(len(r["valid_curve"]) for r in runs)

    def pair(c: dict[str, Any]) -> str:
        return f"{100 * c['overall']:.2f} / {100 * c['cold_item']:.2f}"

    rows = []
    for r in runs:
        curve = [pair(c) for c in r["valid_curve"]] + [""] * (epochs - len(r["valid_curve"]))
        at = r["at_best_epoch"]
        rows.append([r["variant"], r["seed"], r["epochs"], *curve, pair(at["dot_only"]), pair(at["prior_only"])])
    table = _table(["variant", "seed", "epochs", *(f"epoch {e}" for e in range(epochs)),
                    "last epoch: dot product only", "last epoch: prior only"], rows, align="ll")
    return _with_groups(table, ["variant", "seed", "epochs (VALID NDCG@10 % at the best epoch, events)"], [
        ([r["variant"], str(r["seed"]), str(r["epochs"])], {g: 100 * v for g, v in r["at_best_epoch"]["score"].items()
                                                          if v is not None}, r.get("valid_counts", {})) for r in runs], 2)


def ablation_ml100k(results: Path) -> str:
    """Item towers on ML-100K (global temporal split): VALID (the selection) next to TEST where the run stored it,
    the VALID winner marked."""
    data = _load(results, "ablation_ml100k.json")
    cols = [(m, g) for g in data["groups"] for m in data["metrics"]]
    ran = [p for p in data["points"] if p.get("status") == "ran"]
    with_valid = any(p.get("valid_report") for p in ran)

    def values(rep: dict[str, Any] | None) -> list[str]:
        return [_f((rep["overall"] if g == "overall" else rep["groups"][g]).get(m)) if rep else "" for m, g in cols]

    rows = []
    for p in ran:
        label = f"**{p['label']}** (best on VALID)" if p["label"] == data.get("winner_on_valid") else p["label"]
        rows.append([label] + (values(p.get("valid_report")) if with_valid else []) + values(p["report"]))
    head = [f"{m} {g}" for m, g in cols]
    table = _table(["item tower"] + ([f"VALID {h}" for h in head] + [f"TEST {h}" for h in head] if with_valid else head),
                   rows)
    return _with_groups(table, ["item tower (TEST NDCG@10, events)"], [
        ([p["label"]], {g: v.get("ndcg@10") for g, v in p["report"]["groups"].items()}, p["report"]["counts"])
        for p in ran])


def baselines_ml100k(results: Path) -> str:
    """Sequential, graph and multimodal baselines on ML-100K under three splits."""
    data = _load(results, "baselines_ml100k_cpu.json")
    runs = [("random 8:1:1", "random", "lightgcn", "LightGCN"), ("leave-one-out", "loo", "sasrec", "SASRec (ID)"),
            ("leave-one-out", "loo", "bert4rec", "BERT4Rec (ID)"), ("temporal", "temporal", "pop", "Pop"),
            ("temporal", "temporal", "lightgcn", "LightGCN"),
            ("temporal", "temporal", "vbpr", "VBPR (MiniLM + EfficientNet)"),
            ("temporal", "temporal", "mmgcn", "MMGCN (MiniLM + EfficientNet)")]
    rows = []
    for split, part, key, label in runs:
        run = data[part][key]
        t = run["test"]
        # random and leave-one-out splits leave a handful of cold-item events (11 in random): no number
        cold = t["cold_item"]["recall@20"] if run["test_counts"].get("cold_item", 0) >= 100 else None
        rows.append([split, label] + [_f(t["overall"][m]) for m in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")]
                    + [_f(cold) if cold is not None else "—"])
        if "test_per_user" in run:  # the LightGCN paper averages over users
            u = run["test_per_user"]
            rows.append([split, f"{label}, per-user metrics (LightGCN paper's definition)", _f(u["recall@20"]),
                         _f(u["ndcg@20"]), "", "", ""])
    table = _table(["split", "model", "Recall@20", "NDCG@20", "Recall@10", "NDCG@10", "cold-item Recall@20"], rows,
                   "ll")
    return _with_groups(table, ["split", "model (TEST NDCG@10, events)"], [
        ([split, label], {g: v.get("ndcg@10") for g, v in data[part][key]["test"].items()},
         data[part][key]["test_counts"]) for split, part, key, label in runs])


def _earlier_budgets(results: Path, d: dict[str, Any]) -> list[dict[str, Any]]:
    """The other budgets / recipes a Recformer run cites (the last of its list is the run itself), then those its
    cited runs cite in turn, each once: a run extended from an earlier one keeps that one's lineage in the table."""
    out: list[dict[str, Any]] = []
    todo = list(d.get("ablation", {}).get("budgets", [])[:-1])
    while todo:
        r = todo.pop(0)
        if any(o["source"] == r["source"] for o in out):
            continue
        out.append(r)
        if (results / r["source"]).exists():
            todo += _load(results, r["source"]).get("ablation", {}).get("budgets", [])[:-1]
    return out


def recformer_transfer(results: Path) -> str:
    """Recformer pretrained on both IISAN corpora, zero-shot and finetuned on UniSRec Scientific (every TEST
    event), next to the baselines it is compared with on the same split."""
    d = _load(results, "recformer_transfer_minilm_cpu.json")
    label = "Recformer (6 × 384 from MiniLM, full attention, 64 tokens)"
    steps = f"{d['pretrain']['steps']} pretraining steps" + (f", {r}" if (r := d["budgets"].get("pretrain_recipe")) else "")
    ft_steps = sum(e["steps"] for e in d["finetune_history"])  # steps of every finetuning epoch, both stages
    rows = [[f"{label}, zero-shot ({steps})", _f(d["zero_shot_test"]["ndcg@10"]), _f(d["zero_shot_test"]["hr@10"])],
            [f"{label}, finetuned ({steps} + {ft_steps} finetuning steps)", _f(d["finetuned_test"]["ndcg@10"]),
             _f(d["finetuned_test"]["hr@10"])]]
    for r in _earlier_budgets(results, d):
        pre = f"{r['pretrain_steps']} pretraining steps"
        src = (f"{r['pretrain_recipe']}; " if r.get("pretrain_recipe") else "") + f"`{r['source']}`"
        rows += [[f"{label}, zero-shot ({pre}; {src})", _f(r["zero_shot_test_ndcg@10"]), ""],
                 [f"{label}, finetuned ({pre} + {r['finetune_steps']} finetuning steps; {src})",
                  _f(r["finetuned_test_ndcg@10"]), ""]]
    untrained = "recformer_transfer_minilm_cpu_p0.json"  # the same run without pretraining or finetuning
    if (results / untrained).exists():
        zero = _load(results, untrained)["zero_shot_test"]
        rows.append([f"{label}, zero-shot (MiniLM as initialised, no pretraining; `{untrained}`)", _f(zero["ndcg@10"]),
                     _f(zero["hr@10"])])
    names = {"content_knn": "content-kNN (MiniLM, no training)", "pop": "Pop", "sasrec_text": "text SASRec"}
    rows += [[label_, _f(d["reference"][key]["ndcg@10"]), _f(d["reference"][key]["hr@10"])]
             for key, label_ in names.items()]
    table = _table(["model (UniSRec Scientific, all 8,442 TEST events)", "NDCG@10", "HR@10"], rows)
    counts = d["split"]["test"]
    return _with_groups(table, ["Recformer (TEST NDCG@10, events)"], [
        ([run], {g: m.get("ndcg@10") for g, m in d[f"{key}_test_groups"].items()}, counts)
        for run, key in ((f"zero-shot ({steps})", "zero_shot"), (f"finetuned ({steps} + {ft_steps} finetuning steps)",
                                                                 "finetuned")) if f"{key}_test_groups" in d])


def tgn_ml100k(results: Path) -> str:
    """MM-TGN next to SASRec and Pop on ML-100K (global temporal split, 25-epoch cap)."""
    data = _load(results, "tgn_ml100k_e25_cpu.json")
    rows = []
    for name, t in data["table"].items():
        o, tr, ind = t["overall"], t["transductive"], t["inductive"]
        rows.append([name, _f(o.get("ap_random"), 3), _f(o.get("auc_random"), 3), _f(o.get("ap_historical"), 3),
                     _f(o["ndcg@10"]), _f(o["mrr"]), _f(tr["ndcg@10"]), _f(ind["ndcg@10"])])
    table = _table(["model", "AP (random neg.)", "AUC (random neg.)", "AP (historical neg.)", "NDCG@10 overall",
                    "MRR overall", "NDCG@10 transductive", "NDCG@10 inductive"], rows)
    return _with_groups(table, ["model (TEST NDCG@10, events)"], _tgn_group_rows([], data))


def _tgn_group_rows(labels: Sequence[str], data: dict[str, Any]) -> list[GroupRow]:
    """Per-group rows of a tgn_ml100k.py / tgn_amazon.py result: every MM-TGN variant, SASRec and Pop."""
    tests = {**{f"MM-TGN {k}": r["test"] for k, r in data["tgn"].items()},
             **{f"SASRec {k}": r["test"] for k, r in data["sasrec"].items() if "test" in r}, "Pop": data["pop"]["test"]}
    return [([*labels, key], {g: v.get("ndcg@10") for g, v in t.items()}, {g: v["count"] for g, v in t.items()})
            for key, t in tests.items()]


def tgn_softmax(results: Path) -> str:
    """MM-TGN trained with the sampled softmax, content vs random item features, next to ID SASRec and Pop on
    the same TEST events: ML-100K (real clock) and Amazon Scientific (relative clock)."""
    rows: list[list[str]] = []
    by_group: list[GroupRow] = []
    for label, name in (("ML-100K", "tgn_ml100k_softmax_cpu.json"), ("Amazon Scientific", "tgn_amazon_scientific_cpu.json")):
        if not (results / name).exists():
            continue
        data = _load(results, name)
        for key, t in data["table"].items():
            run = data["tgn"].get(key.removeprefix("MM-TGN "), {})
            coarse = {bs: r["overall"]["ndcg@10"] for bs, r in run.get("test_by_eval_batch_size", {}).items()}
            o, tr, ind = t["overall"], t["transductive"], t["inductive"]
            rows.append([label, key + (" (chosen on VALID)" if key == f"MM-TGN {data.get('selection', {}).get('chosen')}"
                                       else ""),
                         _f(run["valid"]["overall"]["ndcg@10"] if run else None), _f(o.get("ap_random"), 3), _f(o["ndcg@10"]),
                         _f(tr["ndcg@10"]), _f(ind["ndcg@10"]),
                         " / ".join(f"{_f(v)} (batch {bs})" for bs, v in coarse.items())])
        by_group += _tgn_group_rows([label], data)
    table = _table(["data", "model", "VALID NDCG@10", "AP (random neg.)", "NDCG@10 overall", "NDCG@10 transductive",
                    "NDCG@10 inductive", "same weights, other eval batch"], rows, "ll")
    return _with_groups(table, ["data", "model (TEST NDCG@10, events)"], by_group)


def tgn_ablation(results: Path) -> str:
    """MM-TGN on Amazon Scientific with one part of the design changed at a time (content/mlp is the full design)."""
    full = _load(results, "tgn_amazon_scientific_cpu.json")
    rows: list[list[str]] = []
    by_group: list[GroupRow] = []

    def row(label: str, run: dict[str, Any]) -> None:
        t = run["test"]
        rows.append([label, _f(run["valid"]["overall"]["ndcg@10"]), _f(t["overall"]["ndcg@10"]),
                     _f(t["transductive"]["ndcg@10"]), _f(t["inductive"]["ndcg@10"]), _f(t["overall"]["ap_random"], 3)])
        by_group.append(([label], {g: v.get("ndcg@10") for g, v in t.items()}, {g: v["count"] for g, v in t.items()}))

    for key, run in full["tgn"].items():
        row({"content/mlp": "full design (sampled softmax, content memory init, MLP fusion)",
             "random": "random item features instead of content"}.get(key, f"fusion {key.split('/')[-1]}"), run)
    for name, label in (("bpr", "BPR with 4 negatives per event instead of the sampled softmax"),
                        ("zero_init", "new item memory starts at zero instead of from content")):
        path = results / f"tgn_amazon_scientific_{name}_cpu.json"
        if path.exists():
            row(label, _load(results, path.name)["tgn"]["content/mlp"])
    table = _table(["MM-TGN variant", "VALID NDCG@10", "TEST NDCG@10", "transductive", "inductive (new items)",
                    "AP (random neg.)"], rows)
    return _with_groups(table, ["MM-TGN variant (TEST NDCG@10, events)"], by_group)


def recbole_side_by_side(results: Path) -> str:
    """modalrec vs RecBole 1.2.1, ID SASRec on ML-100K, seed 0, one run each."""
    s = _load(results, "recbole_side_by_side.json")["summary"]
    keys = ("seconds_per_epoch_mean", "seconds_per_valid_eval_mean", "seconds_to_best")
    rows = [[label, _f(s[lib]["test_ndcg@10"]), _f(s[lib]["test_hr@10"]), _f(s[lib][keys[0]], 2),
             _f(s[lib][keys[1]], 2), f"{s[lib][keys[2]]:,.0f}"]
            for lib, label in (("modalrec", "modalrec (seed 0)"), ("recbole", "RecBole 1.2.1 (seed 0)"))]
    ratio = s["ratios_recbole_over_modalrec"]
    rows.append(["ratio RecBole / modalrec", "", ""] + [f"{ratio[k]:.3g}×" for k in keys])
    table = _table(["", "TEST NDCG@10", "TEST HR@10", "s / epoch", "s / full evaluation (VALID)",
                    "s to best-VALID checkpoint"], rows)
    # both libraries' TEST scores ranked by modalrec's evaluator, per group, under each history protocol
    protocols = {"no_history_mask": "no history mask (RecBole's)", "history_masked": "history excluded (modalrec's)"}
    by_group: list[GroupRow] = [
        ([label, protocols[protocol]], {g: row[lib] for g, row in groups.items()},
         {g: row["n"] for g, row in groups.items()})
        for protocol, groups in s.get("test_ndcg@10_by_group", {}).items()
        for lib, label in (("modalrec", "modalrec"), ("recbole", "RecBole 1.2.1"))]
    return _with_groups(table, ["library (seed 0, TEST NDCG@10, events)", "protocol"], by_group)


# (summary file, label, timing shown): seed summaries of `recbole_seeds_summary.py`. Timing is left out where
# the runs shared the two cores with more jobs than one, so their seconds say nothing.
SEED_RECIPES = (
    ("recbole_seeds_stride50.json", "modalrec, stride 50 (library default windows, RecBole's recipe)", True),
    ("recbole_seeds_stride50_clip1.json", "modalrec, stride 50 + gradient clipping 1.0", True),
    ("recbole_seeds_stride10.json", "modalrec, stride 10", True),
    ("recbole_seeds_stride1.json", "modalrec, stride 1 (RecBole's samples)", True),
    ("recbole_seeds_stride50_ls03.json", "modalrec, stride 50 + label smoothing 0.3", True),
    ("recbole_seeds_stride10_ls03.json", "modalrec, stride 10 + label smoothing 0.3", True),
    ("recbole_seeds_stride1_ls03.json", "modalrec, stride 1 + label smoothing 0.3", True),
    ("recbole_seeds_stride10_ls05.json", "modalrec, stride 10 + label smoothing 0.5", True),
    ("recbole_seeds_stride10_ls07.json", "modalrec, stride 10 + label smoothing 0.7", False),
    ("recbole_seeds_stride10_ls05_ema998.json", "modalrec, stride 10 + label smoothing 0.5 + weight average 0.998 (SASRec's default at lr 1e-3)",
     False),
    ("recbole_seeds_stride1_ls05.json", "modalrec, stride 1 + label smoothing 0.5 (best on VALID)", True),
    ("recbole_seeds_defaults.json", "modalrec, stride 50 + positions from start + smoothing 0.5 + clipping 1.0",
     False),
)
FRESH_RECIPES = (
    ("recbole_seeds_stride50_fresh.json", "modalrec, stride 50 (library default windows, RecBole's recipe)"),
    ("recbole_seeds_stride1_ls05_fresh.json", "modalrec, stride 1 + label smoothing 0.5"),
    ("recbole_seeds_stride10_ls05_ema998_fresh.json", "modalrec, stride 10 + label smoothing 0.5 + weight average 0.998 (SASRec's default at lr 1e-3)"),
)


def _median_epoch_s(summary: dict[str, Any], lib: str) -> float:
    values = sorted(p[lib]["seconds_per_epoch_mean"] for p in summary["per_seed"])
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _diff(d: dict[str, Any], n: int) -> str:
    return f"{d['mean']:+.4f} ({d['paired_t']:.1f}, {d['seeds_modalrec_ahead']} / {n})".replace("-", "−")


def recbole_seeds(results: Path) -> str:
    """ID SASRec recipes vs RecBole over seeds 0-7 (means; differences with paired t and seeds ahead)."""
    first = _load(results, SEED_RECIPES[0][0])
    rb, n = first["recbole"], len(first["seeds"])
    rows = [["RecBole 1.2.1", _f(rb["valid_ndcg@10"]["mean"]), "",
             f"{rb['ndcg@10']['mean']:.4f} ± {rb['ndcg@10']['sd']:.4f}", _f(rb["hr@10"]["mean"]), "",
             _f(_median_epoch_s(first, "recbole"), 1)]]
    for file, label, timing in SEED_RECIPES:
        d = _load(results, file)
        if d["seeds"] != first["seeds"]:
            raise ValueError(f"{file}: seeds {d['seeds']} differ from {first['seeds']}")
        m = d["modalrec"]
        rows.append([label, _f(m["valid_ndcg@10"]["mean"]), _diff(d["valid_ndcg10_modalrec_minus_recbole"], n),
                     f"{m['ndcg@10']['mean']:.4f} ± {m['ndcg@10']['sd']:.4f}", _f(m["hr@10"]["mean"]),
                     _diff(d["ndcg10_modalrec_minus_recbole"], n),
                     _f(_median_epoch_s(d, "modalrec"), 1) if timing else "—"])
    return _table([f"seeds {first['seeds'][0]}-{first['seeds'][-1]} (mean)", "VALID NDCG@10",
                   "VALID: modalrec − RecBole (paired t, seeds ahead)", "TEST NDCG@10 ± sd", "TEST HR@10",
                   "TEST: modalrec − RecBole (paired t, seeds ahead)", "s / epoch (median)"], rows)


def recbole_fresh_seeds(results: Path) -> str:
    """The same comparison on seeds run after the recipe was chosen."""
    first = _load(results, FRESH_RECIPES[0][0])
    rb, n = first["recbole"], len(first["seeds"])
    rows = [["RecBole 1.2.1", _f(rb["valid_ndcg@10"]["mean"]), f"{rb['ndcg@10']['mean']:.4f} ± {rb['ndcg@10']['sd']:.4f}",
             _f(rb["hr@10"]["mean"]), ""]]
    for file, label in FRESH_RECIPES:
        d = _load(results, file)
        m = d["modalrec"]
        rows.append([label, _f(m["valid_ndcg@10"]["mean"]), f"{m['ndcg@10']['mean']:.4f} ± {m['ndcg@10']['sd']:.4f}",
                     _f(m["hr@10"]["mean"]), _diff(d["ndcg10_modalrec_minus_recbole"], n)])
    seeds = ", ".join(map(str, first["seeds"]))
    return _table([f"fresh seeds {seeds} (mean)", "VALID NDCG@10", "TEST NDCG@10 ± sd", "TEST HR@10",
                   "TEST: modalrec − RecBole (paired t, seeds ahead)"], rows)


def _machine(d: dict[str, Any]) -> str:
    load = d["loadavg_1_5_15_start"][0]
    return f"{d['cpu_count']} shared CPU cores, {d['torch_threads']} torch thread, load {load:.0f}, {d['device']}"


# (seed summary, recipe): ratios of time to the best checkpoint in the README's speed table.
SPEED_RECIPES = (
    ("recbole_seeds_defaults.json", "stride-50 recipe with smoothing"),
    ("recbole_seeds_stride10_ls05_ema998.json", "stride-10 recipe (smoothing 0.5, weight average 0.998) at lr 1e-3"),
    ("recbole_seeds_stride10_ls05_ema998_fresh.json", "stride-10 recipe (smoothing 0.5, weight average 0.998) at lr 1e-3"),
    ("recbole_seeds_sasrec_defaults_lr1e3.json", "stride-10 recipe at lr 1e-3 run as `--modalrec-defaults`"),
    ("recbole_seeds_sasrec_defaults.json", "default recipe (stride 10, smoothing 0.5, weight average 0.998, lr 3e-3)"),
    ("recbole_seeds_sasrec_defaults_loaded.json",
     "default recipe (lr 3e-3) with seeds 0-4 taken from their first runs, made at load 3-6"),
    ("recbole_seeds_sasrec_defaults_same_run.json", "default recipe (lr 3e-3), both libraries rerun side by side"),
)


def _seed_list(seeds: Sequence[int]) -> str:
    """'0-7' for a run of consecutive seeds, else '8, 9, 12'."""
    if list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


# (result file, commit): the evaluator benchmark run in the same hour with the ranking code of that commit.
EVALUATOR_PREVIOUS = ("evaluator_speed_cpu_previous_code.json", "cf82c7c")


def _median_overheads(c: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(CPU, wall) overheads over the model alone of one catalogue of `evaluator_speed.py`, from the medians of
    its interleaved repeats: steadier than the best run when a single model run is lucky."""
    def over(runs: dict[str, list[float]]) -> dict[str, float]:
        med = {k: statistics.median(v) for k, v in runs.items()}
        return {k: (v - med["model_only"]) / med["model_only"] for k, v in med.items() if k != "model_only"}
    return over(c["runs_cpu_s"]), over(c["runs_s"])


def speed(results: Path) -> str:
    """Evaluator and trainer overheads (`evaluator_speed.py`, `loop_overhead.py`): ratios from one run each
    (the evaluator's: medians of its interleaved repeats)."""
    ev = _load(results, "evaluator_speed_cpu.json")
    rows = []
    for c in ev["catalogues"]:
        c = {**c, **dict(zip(("overhead_over_model_cpu", "overhead_over_model"), _median_overheads(c)))}
        rss = (c["peak_rss_bytes"] - c["peak_rss_bytes_before"]) / 2**20
        for prefix, model in (("", "a model known by its `score`"), ("dot_product,", "a dot-product model")):
            if f"{prefix}exclude_seen=True" not in c["overhead_over_model_cpu"]:
                continue  # measured before the dot-product path existed
            what = (f"evaluation over the model's own scoring, {model}, {c['items']:,} items, {c['users']:,} events "
                    "(history excluded / included)")
            cell = lambda o, p=prefix: " / ".join(f"{100 * o[f'{p}exclude_seen={x}']:+.1f} %" for x in (True, False))
            calls = c.get("score_call_bytes", c["score_block_bytes"])
            block = (f"score block {calls / 2**20:.0f} MiB" if not prefix else "no score block: 2 MiB chunks")
            rows.append([what, _machine(ev), cell(c["overhead_over_model_cpu"]), cell(c["overhead_over_model"]),
                         f"peak RSS of all runs +{rss:.0f} MiB ({block})"])
        if "model_and_one_read" in c["overhead_over_model_cpu"]:  # the floor of ranking a returned score block
            what = (f"the same, {c['items']:,} items: the model plus one read of each score block it returns "
                    "(the least that ranking the block can add)")
            floor = lambda o: f"{100 * o['model_and_one_read']:+.1f} %"
            rows.append([what, _machine(ev), floor(c["overhead_over_model_cpu"]), floor(c["overhead_over_model"]), ""])
        if c.get("score_rows", c["batch_size"]) < c["batch_size"]:  # whole blocks per call, as before score_rows
            whole = f"whole {c['score_block_bytes'] / 2**20:.0f} MiB blocks ({c['batch_size']} events)"
            what = (f"the same, {c['items']:,} items: the model alone called on {whole}, over the model alone in "
                    f"the evaluator's {c['score_rows']}-event calls")
            full = lambda o: f"{100 * o['model_only_full_block']:+.1f} %"
            rows.append([what, _machine(ev), full(c["overhead_over_model_cpu"]), full(c["overhead_over_model"]), ""])
            what = (f"the same, {c['items']:,} items: the evaluator calling the model on {whole} as before, over "
                    f"the model alone in {c['score_rows']}-event calls (history excluded / included)")
            cell = lambda o: " / ".join(f"{100 * o[f'whole_blocks,exclude_seen={x}']:+.1f} %" for x in (True, False))
            rows.append([what, _machine(ev), cell(c["overhead_over_model_cpu"]), cell(c["overhead_over_model"]), ""])
    prev = _load(results, EVALUATOR_PREVIOUS[0])  # the code before score_rows, run the same hour
    for c in prev["catalogues"]:
        c = {**c, **dict(zip(("overhead_over_model_cpu", "overhead_over_model"), _median_overheads(c)))}
        what = (f"the same, a model known by its `score`, {c['items']:,} items: previous evaluator code "
                f"(commit {EVALUATOR_PREVIOUS[1]}, whole blocks per call) over the model alone in whole blocks, "
                "run in the same hour")
        cell = lambda o: " / ".join(f"{100 * o[f'exclude_seen={x}']:+.1f} %" for x in (True, False))
        rows.append([what, _machine(prev), cell(c["overhead_over_model_cpu"]), cell(c["overhead_over_model"]), ""])
    lo = _load(results, "loop_overhead_cpu.json")
    what = f"`fit` samples/s over a bare PyTorch loop, ML-100K SASRec, {lo['steps_per_run']} steps"
    rows.append([what, _machine(lo), f"{lo['fit_over_bare_samples_per_cpu_s']:.3f}",
                 f"{lo['fit_over_bare_samples_per_s']:.3f}", ""])
    for file, recipe in SPEED_RECIPES:
        sd = _load(results, file)
        ratio, seeds = sd["ratios_recbole_over_modalrec_of_means"], sd["seeds"]
        test = f"TEST NDCG@10 {sd['modalrec']['ndcg@10']['mean']:.4f} vs {sd['recbole']['ndcg@10']['mean']:.4f}"
        same_run = all(r["modalrec_file"] == r["recbole_file"] for r in sd["per_seed"])
        origin = "both sides from the same run" if same_run else "RecBole's runs from earlier days, not the same run"
        what = (f"time to the best-VALID checkpoint, RecBole 1.2.1 over modalrec's {recipe}, ML-100K SASRec, "
                f"seeds {_seed_list(seeds)} ({test}; {origin})")
        loads = [r["load_1min"]["modalrec"] for r in sd["per_seed"]]
        machine = f"2 shared CPU cores, 1 torch thread, load {min(loads):.0f}-{max(loads):.0f} (modalrec), cpu"
        rows.append([what, machine, f"{ratio['cpu_seconds_to_best']:.1f}×", f"{ratio['seconds_to_best']:.1f}×", ""])
    return _table(["measurement", "machine", "CPU time", "wall time", "memory"], rows, align="ll")


def scale(results: Path) -> str:
    """`scale.py`: training step / extrapolated epoch, full-ranking evaluation and peak RSS per catalogue size,
    then the growth between consecutive sizes."""
    data = _load(results, "scale_cpu.json")
    mib = lambda b: f"{b / 2**20:,.0f}"
    rows = []
    for c in data["sizes"]:
        t, e = c["train"], c["eval"]
        rows.append([f"{c['items']:,}", f"{c['events']:,}", f"{t['cpu_s_per_step']:.3f}",
                     f"{t['epoch_cpu_s_extrapolated']:,.0f} ({t['steps_per_epoch']:,} steps)",
                     f"{e['cpu_s']:.1f} ({e['events']:,} users)", mib(c["memory"]["peak_rss_bytes"]),
                     mib(c["memory"]["rss_file_bytes_end"])])
    for g in data["growth"]:
        rows.append([f"growth {g['from_items']:,} → {g['to_items']:,}", f"×{g['items']:.0f}", f"×{g['train_cpu_s_per_step']:.2f}",
                     f"×{g['epoch_cpu_s_extrapolated']:.1f}", f"×{g['eval_cpu_s']:.1f}", f"×{g['peak_rss_bytes']:.2f}", ""])
    return _table(["items", "events", "CPU s / training step", "CPU s / epoch (extrapolated)",
                   "CPU s / full-ranking evaluation", "peak RSS (MiB)",
                   "file-backed RSS at the end: libraries + mapped features (MiB)"],
                  rows)


def _gpu(d: dict[str, Any]) -> str:
    return f"{d.get('cuda_device', 'GPU')}, {d['cpu_count']} CPU cores, {d['torch_threads']} torch thread, {d['device']}"


def speed_cuda(results: Path) -> str:
    """The evaluator and trainer overheads with `--device cuda` (wall time: on a GPU the host's process CPU time
    is not the measure)."""
    ev = _load(results, "evaluator_speed_cuda.json")
    rows = []
    for c in ev["catalogues"]:
        for prefix, model in (("", "a model known by its `score`"), ("dot_product,", "a dot-product model")):
            what = (f"evaluation over the model's own scoring, {model}, {c['items']:,} items, {c['users']:,} events "
                    "(history excluded / included)")
            cell = " / ".join(f"{100 * c['overhead_over_model'][f'{prefix}exclude_seen={x}']:+.1f} %"
                              for x in (True, False))
            model_ms = 1000 * c["best_s"]["model_only"]
            rows.append([what, _gpu(ev), cell, f"{model_ms:.1f} ms"])
    lo = _load(results, "loop_overhead_cuda.json")
    what = f"`fit` samples/s over a bare PyTorch loop, ML-100K SASRec, {lo['steps_per_run']} steps"
    rows.append([what, _gpu(lo), f"{lo['fit_over_bare_samples_per_s']:.3f}",
                 f"{1000 * min(lo['runs_s']['bare_loop']):.0f} ms per epoch"])
    return _table(["measurement", "machine", "wall time", "the model's own time (best run)"], rows, align="ll")


def scale_cuda(results: Path) -> str:
    """`scale.py --device cuda`: wall times, host peak RSS and peak GPU memory per catalogue size, then growth."""
    data = _load(results, "scale_cuda.json")
    mib = lambda b: f"{b / 2**20:,.0f}"
    rows = []
    for c in data["sizes"]:
        t, e, m = c["train"], c["eval"], c["memory"]
        rows.append([f"{c['items']:,}", f"{c['events']:,}", f"{t['s_per_step']:.4f}",
                     f"{t['epoch_s_extrapolated']:,.1f} ({t['steps_per_epoch']:,} steps)",
                     f"{e['wall_s']:.2f} ({e['events']:,} users)", mib(m["peak_rss_bytes"]), mib(m["peak_gpu_bytes"])])
    for g in data["growth"]:
        rows.append([f"growth {g['from_items']:,} → {g['to_items']:,}", f"×{g['items']:.0f}",
                     f"×{g['train_s_per_step']:.2f}", "", f"×{g['eval_wall_s']:.1f}", f"×{g['peak_rss_bytes']:.2f}",
                     f"×{g['peak_gpu_bytes']:.2f}"])
    return _table(["items", "events", "s / training step", "s / epoch (extrapolated)", "s / full-ranking evaluation",
                   "host peak RSS (MiB)", "peak GPU memory (MiB)"], rows)


COLD_START_MODELS = {"pop": "Pop", "recent_pop": "recent pop (launch tie-break)",
                     "newest_first": "newest first (launch time)", "content_knn": "content-kNN (no training)",
                     "content_knn_recent": "content-kNN, recency-weighted history (decay chosen on VALID; no training)",
                     "repeat_history": "repeat history", "sasrec_id": "SASRec, ID", "sasrec_content": "SASRec, content",
                     "sasrec_hybrid": "SASRec, hybrid", "sasrec_content_age": "SASRec, content + age prior",
                     "sasrec_hybrid_age": "SASRec, hybrid + age prior",
                     "sasrec_content_agehist": "SASRec, content + age prior + history ages",
                     "sasrec_hybrid_agehist": "SASRec, hybrid + age prior + history ages",
                     "sasrec_knn_content": "SASRec content residual over content-kNN",
                     "sasrec_knn_hybrid": "SASRec hybrid residual over content-kNN",
                     "sasrec_knnrecent_content": "SASRec content residual over the recency-weighted content-kNN (decay 0.5)",
                     "sasrec_content_agehist_pop": "SASRec, content + age prior + history ages, popularity split",
                     "sasrec_hybrid_agehist_pop": "SASRec, hybrid + age prior + history ages, popularity split",
                     "sasrec_hybrid_agehist_gated": "SASRec, hybrid + age prior + history ages, IDs after first event"}


FUSED_KNN_WORDS = (", fused with the trained SASRec content residual over the recency-weighted content-kNN, learned "
                   "temperature (weight chosen on VALID)")
FUSED_WORDS = ", fused with the trained content SASRec, learned temperature (weight chosen on VALID)"
FUSED_LEX_WORDS = (", fused with the recency-weighted content-kNN over the sentence encoder and exact words (decay 0.5, "
                   "no training; weight chosen on VALID)")


NEW_GATE = "_newgate"  # cold_start.py's suffix: select.new_item_gate
GATE_WORDS = ", per-user new-item gate fitted and chosen on VALID"
COLD_GATE = "_coldgate"  # cold_start.py's suffix: select.new_item_gate with select.gate_tolerance
COLD_GATE_WORDS = ", per-user new-item gate fitted on VALID, chosen for VALID cold items within 1% of overall"


def peel_gate(base: str) -> tuple[str, str]:
    """(`base` without its gate suffix, the gate's words; "" without one)."""
    for suffix, words in ((NEW_GATE, GATE_WORDS), (COLD_GATE, COLD_GATE_WORDS)):
        if base.endswith(suffix):
            return base.removesuffix(suffix), words
    return base, ""


def cold_start_label(model: str) -> str:
    """The docs' name of a `cold_start.py` model: its base model, then the suffixes `_first` (users' first events
    as training targets), `_reach` + `+offset` (the smallest new-item offset whose VALID cold items reach the rule
    baselines'), `+offset` (new-item offset chosen on VALID), `+blend` (scores blended with the untrained
    model's, weight chosen on VALID), `_aux` (the content-only auxiliary loss), `_iddrop` (ID dropout 0.5),
    `_spread` (the offset in units of each user's ID score spread), `_fused` (late fusion with the trained content
    model), `_fusedfirst` (the fusion first, then the offset and bonus; `_fusedfirstknn` / `_fusedfirstlex` with
    the residual over the recency-weighted kNN / that rule over both similarities), `_newgate` (the per-user new-item
    gate, select.new_item_gate; `_coldgate`: chosen for cold items within a tolerance), `_repeat` + a selected row
    (a bonus for the user's history items chosen on VALID) and `@0` (untrained), in words."""
    base = model.removesuffix("@0")
    # the trained hybrid and a content model fused, then the run's other settings (`_fusedfirstknn`: the content
    # model is the residual over the recency-weighted kNN; `_fusedfirstlex`: the untrained rule over both similarities)
    for suffix, words in (("_fusedfirstknn", FUSED_KNN_WORDS), ("_fusedfirstlex", FUSED_LEX_WORDS),
                          ("_fusedfirst", FUSED_WORDS)):
        if base.endswith(suffix):
            base, gate = peel_gate(base.removesuffix(suffix))
            repeat = ", history bonus chosen on VALID" if base.endswith("_repeat") else ""
            return (cold_start_label(base.removesuffix("_repeat").removesuffix("_offset")) + words
                    + ", then new-item offset chosen on VALID" + gate + repeat)
    fused, base = base.endswith("_fused"), base.removesuffix("_fused")
    if fused:  # the hybrid run's selected model (every setting it chose), fused with a trained content model
        selected = "+blend" if "_offset" in base else "+offset"
        return cold_start_label(base + selected) + FUSED_WORDS
    offset, base = base.endswith("+offset"), base.removesuffix("+offset")
    blend, base = base.endswith("+blend"), base.removesuffix("+blend")
    selected, base = offset or blend or base.endswith("+repeat"), base.removesuffix("+repeat")
    base, gate = peel_gate(base)
    repeat, base = base.endswith("_repeat"), base.removesuffix("_repeat")
    reach, base = base.endswith("_reach"), base.removesuffix("_reach")
    first, base = base.endswith("_first"), base.removesuffix("_first")
    offset_first, base = base.endswith("_offset"), base.removesuffix("_offset")
    spread, base = base.endswith("_spread"), base.removesuffix("_spread")
    id_drop, base = base.endswith("_iddrop"), base.removesuffix("_iddrop")
    aux, base = base.endswith("_aux"), base.removesuffix("_aux")
    debias, base = base.endswith("_debias"), base.removesuffix("_debias")
    temp, base = base.endswith("_temp"), base.removesuffix("_temp")
    rule = " reaching the rules" if reach else ""
    # `_offset` runs pick the offset (by `_reach`'s rule where given) and then the blend; their `+blend` row has both
    offset_then_blend = "" if not offset_first else (
        f", new-item offset{rule or ' chosen'} on VALID" if blend
        else f", at offset 0 (the run then picks an offset{rule} and a blend on VALID)")
    return (COLD_START_MODELS.get(base, base) + (", learned temperature" if temp else "")
            + (", content-only auxiliary loss" if aux else "")
            + (", ID dropout 0.5" if id_drop else "")
            + (", offset in units of each user's ID score spread" if spread else "")
            + offset_then_blend
            + (", trained without popularity" if debias else "")
            + (", first events as targets" if first else "")
            + (", new-item offset chosen on VALID" if offset and not reach else "")
            + (", new-item offset reaching the rules on VALID" if offset and reach else
               ", at offset 0 (the run then picks an offset reaching the rules on VALID)" if reach and not offset_first
               else "")
            + (", blended with its untrained self on VALID" if blend else "")
            + (gate if gate and selected else ", without its new-item gate" if gate else "")
            + (", history bonus chosen on VALID" if repeat and selected else
               ", without its history bonus" if repeat else "")
            + (", untrained" if model.endswith("@0") else ""))


def _ndcg_percent(parts: list[dict[str, Any]]) -> tuple[float, float | None] | None:
    """NDCG@10 in % of one group over several seeds' runs: (mean, standard deviation; None with one seed), or
    None when no run scored the group."""
    vals = [100 * p["ndcg@10"] for p in parts if p["ndcg@10"] is not None]
    return mean_sd(vals) if vals else None


def cold_start(dataset: str) -> Callable[[Path], str]:
    """NDCG@10 in % per group for every model `cold_start.py` ran on `dataset`: VALID overall, TEST groups; the
    mean over the seeds run, with the seeds' standard deviation where there are several."""

    def table(results: Path) -> str:
        runs = [r for r in _load(results, "cold_start_cpu.json")["results"] if r["dataset"] == dataset
                and "error" not in r]
        from modalrec.data.splits import GROUPS

        groups = [g for g in GROUPS if runs[0]["test"].get(g, {}).get("n")]  # every group with TEST events

        def cell(parts: list[dict[str, Any]]) -> str:
            stats = _ndcg_percent(parts)
            if stats is None:
                return ""
            mean, sd = stats
            return f"{mean:.2f}" + ("" if sd is None else f" ± {sd:.2f}")

        rows = []
        order = list(dict.fromkeys(r["model"] for r in runs))
        trained = {r["model"] for r in runs if r.get("epoch_cap") is not None}  # SASRecs (@0 too) after the rules
        for model in sorted(order, key=lambda m: (m in trained, order.index(m))):
            seeds = [r for r in runs if r["model"] == model]
            label = cold_start_label(model)
            if seeds[0].get("epoch_cap") and not model.endswith("@0"):  # trained: best-VALID epoch of those run
                label += " (best epoch " + ", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in seeds) + ")"
            rows.append([label, ",".join(str(r["seed"]) for r in seeds), cell([r["valid"]["overall"] for r in seeds]),
                         cell([r["test"]["overall"] for r in seeds])]
                        + [cell([r["test"][g] for r in seeds]) for g in groups])
        test = runs[0]["test"]
        names = {"cold_item": "cold-item", "cold_user": "cold-user"}
        return _table(["model", "seeds", "VALID overall", f"overall (n={test['overall']['n']})"]
                      + [f"{names.get(g, g)} (n={test[g]['n']})" for g in groups], rows)

    return table


def published_iisan(results: Path) -> str:
    """Our IISAN-data runs next to the IISAN papers' numbers (%): all targets, novel targets and history masked
    as the papers mask it (`published` blocks of cold_start_cpu.json and of the iisan_scientific.py runs)."""
    cold = _load(results, "cold_start_cpu.json")
    blocks = [("cold_start.py", cold["published"])]
    masked = "_masked"  # cold_start.py's datasets selected and evaluated under the papers' rule itself
    iisan = _load(results, "iisan_scientific_cpu.json")
    if "published" in iisan:
        blocks.append(("iisan_scientific.py", {f"iisan_{iisan['args']['dataset'].lower()}": iisan["published"]}))
    names = {"iisan": "IISAN, text-only (cached MiniLM layers)", "frozen": "frozen backbone (cached MiniLM + linear)"}
    rows = []
    for dataset, label in (("iisan_scientific", "Scientific"), ("iisan_instruments", "Instruments")):
        # (source, block, the results' dataset name: the masked twin names its own runs)
        pubs = [(src, b[dataset], dataset) for src, b in blocks if dataset in b]
        if not pubs:
            continue
        rows += [[label, f"{model} (titles + images)", pubs[0][1]["paper"], "", "", "", "", _f(m["hr@10"], 2),
                  _f(m["ndcg@10"], 2)]
                 for model, m in pubs[0][1]["published_pct"].items()]
        if dataset + masked in cold["published"]:
            pubs.append(("cold_start.py", cold["published"][dataset + masked], dataset + masked))
        for src, pub, rule in pubs:
            for model, v in pub["ours_pct"].items():
                base = model.removesuffix("@0")
                name = names.get(base) or cold_start_label(base)
                if rule != dataset:  # only what VALID selects differs: rules and untrained models are restated above
                    # (a content model's run gives the trained model and its blend with its untrained self: both)
                    if not model.startswith("sasrec") or model.endswith("@0"):
                        continue
                    name += ", selected and evaluated with history masked"
                runs = [r for r in cold["results"] if src == "cold_start.py" and r["dataset"] == rule
                        and r["model"] == model and "error" not in r]
                if runs and runs[0].get("best_epoch") is not None and not model.endswith("@0"):
                    name += f" (best epoch {runs[0]['best_epoch']} of {runs[0]['epochs_run']})" if len(runs) == 1 \
                        else f" (mean of {len(runs)} seeds)"
                rows.append([label, name + (", untrained" if model.endswith("@0") else ""), f"`{src}`"]
                            + [_f(v[view][m], 2) for view in ("all_targets", "novel_targets", "history_masked")
                               for m in ("hr@10", "ndcg@10")])
    return _table(["data", "model", "from", "HR@10 all", "NDCG@10 all", "HR@10 novel", "NDCG@10 novel",
                   "HR@10 history masked", "NDCG@10 history masked"], rows, "lll")


def _claim_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def claims(results: Path) -> str:
    """One row per design claim: every results JSON may carry a top-level "claims" object (or a list of them)
    with system, claim, protocol, ours {name: number}, target_met, command and why (each check, met or not);
    a run that a later run of the same benchmark cites as an earlier budget gives no row of its own."""
    rows = []
    data = {path: json.loads(path.read_text()) if path.stat().st_size else {} for path in sorted(results.glob("*.json"))}
    # a run another run cites as an earlier budget is superseded by it: its numbers stay in that run's ablation
    cited = {r.get("source") for d in data.values() if isinstance(d.get("ablation"), dict)
             for r in d["ablation"].get("budgets", [])[:-1]}
    for path, d in data.items():
        found = d.get("claims") if path.name not in cited else None
        for c in [found] if isinstance(found, dict) else (found or []):
            ours = "; ".join(f"{k} {_claim_value(v)}" for k, v in c["ours"].items())
            verdict = ("met" if c["target_met"] else "**not met**") + (f": {c['why']}" if c.get("why") else "")
            rows.append([c["system"], c["claim"], c["protocol"], ours, verdict,
                         f"`{c['command']}` → `{path.name}`"])
    return _table(["system", "claim", "protocol", "ours", "target", "reproduce"], rows, "llllll")


def _yes_no(flag: bool | None) -> str:
    return "" if flag is None else "yes" if flag else "**no**"


def cold_start_checks(dataset: str) -> Callable[[Path], str]:
    """`cold_start.py`'s TEST check per group: each trained content model vs its untrained self and content-kNN
    (NDCG@10, means over the seeds run)."""

    def table(results: Path) -> str:
        checks = _load(results, "cold_start_cpu.json")["checks"][dataset]["test"]["content_vs_untrained_and_knn"]
        rows = []
        for model, c in checks.items():
            for g, row in c["groups"].items():
                rows.append([cold_start_label(model), g, row.get("events", ""), row["seeds"], _f(row["trained"]),
                             _f(row.get("untrained")), _f(row.get("content_knn")), "yes" if row["holds"] else "**no**",
                             _f(row.get("content_knn_recent")), _yes_no(row.get("holds_vs_knn_recent"))])
        return _table(["model", "group", "events", "seeds", "trained", "untrained (epoch 0)", "content-kNN",
                       "trained >= both", "recency-weighted kNN", "trained >= it"], rows, "ll")

    return table


def cold_start_hybrid_checks(dataset: str) -> Callable[[Path], str]:
    """`cold_start.py`'s TEST check per group: each hybrid model vs the best of the ID, content and rule models,
    within seed noise (NDCG@10, mean ± seed sd)."""

    def table(results: Path) -> str:
        found = _load(results, "cold_start_cpu.json")["checks"][dataset]
        rows = []
        for model, c in found["test"]["hybrid_vs_best"].items():
            for g, row in c["groups"].items():
                rows.append([cold_start_label(model), g, row.get("events", ""), row["seeds"],
                             f"{_f(row['hybrid'])} ± {_f(row['hybrid_sd'])}", cold_start_label(row["best_other"]),
                             f"{_f(row['best'])} ± {_f(row['best_sd'])}", "yes" if row["holds"] else "**no**",
                             _f(row.get("content_knn_recent")), _yes_no(row.get("holds_vs_knn_recent"))])
            for g in found.get("unreachable_groups", []):
                rows.append([cold_start_label(model), g, "", "", "0 (unreachable)", "every model", "0", "not counted",
                             "0", "not counted"])
        return _table(["model", "group", "events", "seeds", "hybrid", "best other", "best", "hybrid >= best - noise",
                       "recency-weighted kNN", "hybrid >= it - noise"], rows, "ll")

    return table


def cold_start_summary(results: Path) -> str:
    """Per dataset: the trained content models that hold `content_vs_untrained_and_knn` on every group of VALID and
    of TEST and the hybrids that hold `hybrid_vs_best` so, else the models that fail the fewest groups, with those
    groups by part (the checks in cold_start_cpu.json)."""
    found = _load(results, "cold_start_cpu.json")["checks"]

    def failing(checks: dict[str, Any], check: str, flag: str) -> dict[str, list[str]]:
        """{model: its "part group" entries whose `flag` is False}, both parts (they check the same models)."""
        return {m: [f"{part} {g}" for part in ("valid", "test") for g, r in checks[part][check][m]["groups"].items()
                    if r.get(flag) is False] for m in checks["test"][check]}

    def verdict(checks: dict[str, Any], check: str) -> str:
        models = checks["test"][check]
        if not models:
            return "not run"
        failing_groups = failing(checks, check, "holds")
        held = [cold_start_label(m) for m, f in failing_groups.items() if not f]
        if held:
            return "holds: " + "; ".join(held)
        fewest = min(len(f) for f in failing_groups.values())
        closest = "; ".join(f"{cold_start_label(m)} ({', '.join(f)})" for m, f in failing_groups.items()
                            if len(f) == fewest)
        return f"**fails** in all {len(models)} models run; closest: {closest}"

    def versus_recent(checks: dict[str, Any], check: str) -> str:
        """Of the models that hold `check`, those that also hold it against the recency-weighted content-kNN."""
        held = [m for m, f in failing(checks, check, "holds").items() if not f]
        below_rule = {m: f for m, f in failing(checks, check, "holds_vs_knn_recent").items() if m in held}
        if not held or not any("holds_vs_knn_recent" in checks["test"][check][m] for m in held):
            return "not run"
        good = [cold_start_label(m) for m, f in below_rule.items() if not f]
        if good:
            return "holds: " + "; ".join(good)
        return "**fails**: " + "; ".join(f"{cold_start_label(m)} ({', '.join(f)})" for m, f in below_rule.items())

    rows = [[name, verdict(c, "content_vs_untrained_and_knn"), verdict(c, "hybrid_vs_best"),
             versus_recent(c, "content_vs_untrained_and_knn"), versus_recent(c, "hybrid_vs_best"),
             ", ".join(c.get("unreachable_groups", [])) or "none"] for name, c in found.items()]
    return _table(["dataset", "trained content >= its untrained self and content-kNN, every group of VALID and TEST",
                   "hybrid >= best of ID, content and rules, every group of VALID and TEST (seed noise)",
                   "of those content models, also >= the recency-weighted content-kNN",
                   "of those hybrids, also >= the recency-weighted content-kNN (seed noise)",
                   "groups not counted"], rows, "llllll")


def cold_start_temp(results: Path) -> str:
    """Per dataset where `cold_start.py` ran the content SASRec with a learned temperature: TEST NDCG@10 in % (means
    over its seeds) of its untrained self, the trained model and what VALID selected -- the blend with the untrained
    self (`sasrec_content_temp`), or a new-item offset and then that blend (`sasrec_content_temp_offset`) --,
    overall and on cold items, next to content-kNN, and the groups where the selected model fails
    `content_vs_untrained_and_knn` (TEST)."""
    found = _load(results, "cold_start_cpu.json")
    rows = []
    for name, c in found["checks"].items():
        runs = [r for r in found["results"] if r["dataset"] == name and "error" not in r]

        def mean(model: str, group: str, part: str = "test", runs: list[dict[str, Any]] = runs) -> str:
            stats = _ndcg_percent([r[part][group] for r in runs if r["model"] == model and group in r[part]])
            return "" if stats is None else f"{stats[0]:.2f}"

        for model, selection in (("sasrec_content_temp", "blend"), ("sasrec_content_temp_offset", "offset + blend")):
            trained = [r for r in runs if r["model"] == model]
            if not trained:
                continue
            selected = c["test"]["content_vs_untrained_and_knn"].get(model + "+blend")
            failing = [g for g, r in selected["groups"].items() if not r["holds"]] if selected else []
            rows.append([name, selection, ",".join(str(r["seed"]) for r in trained),
                         ", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in trained),
                         f"{mean(model + '@0', 'overall', 'valid')} → {mean(model, 'overall', 'valid')}"
                         if model.endswith("temp") else "",
                         *(" / ".join(mean(m, g) for m in ("sasrec_content_temp@0", model, model + "+blend"))
                           for g in ("overall", "cold_item")),
                         mean("content_knn", "cold_item"),
                         "not run" if selected is None else "holds" if not failing else "**fails**: " + ", ".join(failing)])
    return _table(["dataset", "selected on VALID", "seeds", "best epoch / run", "VALID overall: untrained → trained",
                   "TEST overall: untrained / trained / selected", "TEST cold-item: untrained / trained / selected",
                   "content-kNN cold-item", "selected >= untrained and content-kNN, every group"], rows, "llll")


def cold_start_repeat(results: Path) -> str:
    """Per dataset and `_repeat` model of `cold_start.py`: the history bonus VALID chose per seed and TEST NDCG@10
    in % (means over the seeds) on the repeat and novel groups and overall, with the bonus and without it (the same
    model and selection run without `_repeat`), next to repeat-history's repeat group."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in _load(results, "cold_start_cpu.json")["results"]:
        runs.setdefault((r["dataset"], r["model"]), []).append(r)

    def mean(key: tuple[str, str], group: str) -> str:
        stats = _ndcg_percent([x["test"][group] for x in runs.get(key, []) if group in x["test"]])
        return "" if stats is None else f"{stats[0]:.2f}"

    rows = []
    for (name, model), selected in runs.items():
        if "repeat" not in selected[0]:
            continue
        without = (name, model.replace("_repeat", ""))
        rows.append([name, cold_start_label(model), ", ".join(f"{x['repeat']['chosen']:g}" for x in selected),
                     f"{selected[0]['test']['repeat']['n']:,} / {selected[0]['test']['novel']['n']:,}",
                     *(f"{mean(without, g) or 'not run'} → {mean((name, model), g)}" for g in ("repeat", "novel", "overall")),
                     mean((name, "repeat_history"), "repeat")])
    return _table(["dataset", "model (with the bonus)", "bonus per seed (logits)", "TEST repeat / novel events",
                   "repeat: without → with the bonus", "novel: without → with", "overall: without → with",
                   "repeat history: repeat"], rows, "ll")


MODALITY_WORDS = {"text+lexical": "sentence encoder + exact words (TF-IDF n-grams)",
                  "lexical": "exact words alone (TF-IDF n-grams)"}


def cold_gate_bound(results: Path) -> str:
    """`cold_gate_bound.py`: per dataset and model, TEST NDCG@10 in % as trained and with every item without training
    events ranked first (content-kNN, and any trained SASRec run), next to content-kNN's plain cold-item score, and
    with the new-item gate learned on VALID where it ran (--learned-gate)."""
    rows = []
    for name, models in _load(results, "cold_gate_bound_cpu.json")["results"].items():
        knn = models.get("content_knn", {}).get("test", {}).get("plain", {}).get("cold_item")
        for model, r in models.items():
            test = r["test"]
            plain, first = test["plain"], test["new_items_first"]
            label = (f"content-kNN, recency-weighted history (decay {r['decay']:g}; no training)" if "decay" in r else
                     cold_start_label(model.partition("@")[0]) + (f" (seed {r['seed']}, best epoch {r['best_epoch']})"
                                                                  if r.get("seed") is not None else ""))
            if "modalities" in r:
                label += f"; {MODALITY_WORDS.get(r['modalities'], r['modalities'])}"
            rows.append([name, label, f"{r['items_without_training_events']:,} of {r['items']:,}",
                         f"{test['events']['cold_item']:,}", _f(100 * plain["cold_item"], 2),
                         _f(100 * first["cold_item"], 2), f"{first['cold_item'] / knn:.2f}x" if knn else "",
                         _f(100 * plain["overall"], 2), _f(100 * first["overall"], 2),
                         *((_f(100 * test["learned_gate"][g], 2) for g in ("cold_item", "overall"))
                           if "learned_gate" in test else ("", ""))])
    return _table(["dataset", "model", "items without training events", "TEST cold-item events", "cold-item",
                   "new items first: cold-item", "new items first / content-kNN cold-item", "overall",
                   "new items first: overall", "learned gate: cold-item", "learned gate: overall"], rows, "ll")


def recipe_towers_groups(results: Path) -> str:
    """recipe_towers.py on CPU: both arms, every evaluator group, VALID (the choice) then TEST (reference)."""
    data = _load(results, "recipe_towers_cpu.json")
    names = {"builtin": "built-in", "ml100k": "ML-100K"}
    parts = []
    for split in ("valid", "test"):
        rows: list[GroupRow] = []
        for entry in data["summary"]:
            counts = next(r[f"{split}_counts"] for r in data["runs"]
                          if (r["dataset"], r["tower"]) == (entry["dataset"], entry["tower"]))
            for arm in ("recipe", "library"):
                seeds = entry[f"seeds_{arm}"]
                rows.append(([names[entry["dataset"]], entry["tower"], arm, ", ".join(map(str, seeds)),
                              f"{_f(entry[split][arm]['overall'])} ({counts['overall']})"], entry[split][arm], counts))
        head = ["data", "tower", f"arm ({split.upper()} NDCG@10, events)", "seeds", "overall"]
        parts.append(_group_table(head, rows).rstrip("\n"))
    return "\n\n".join(parts) + "\n"


TABLES: dict[str, Callable[[Path], str]] = {
    "claims": claims,
    "demo": demo,
    "quality_amazon": quality_amazon,
    "iisan_scientific": iisan_scientific,
    "published_iisan": published_iisan,
    "iisan_efficiency": iisan_efficiency,
    "cold_start_summary": cold_start_summary,
    "cold_start_temp": cold_start_temp,
    "cold_start_repeat": cold_start_repeat,
    "cold_gate_bound": cold_gate_bound,
    "cold_start_ml100k": cold_start("ml100k"),
    "cold_start_ml100k_checks": cold_start_checks("ml100k"),
    "cold_start_iisan_scientific": cold_start("iisan_scientific"),
    "cold_start_iisan_instruments": cold_start("iisan_instruments"),
    "cold_start_iisan_instruments_checks": cold_start_checks("iisan_instruments"),
    "cold_start_unisrec_scientific": cold_start("unisrec_scientific"),
    "cold_start_unisrec_scientific_checks": cold_start_checks("unisrec_scientific"),
    "cold_start_iisan_scientific_cold10": cold_start("iisan_scientific_cold10"),
    "cold_start_iisan_scientific_masked": cold_start("iisan_scientific_masked"),
    "cold_start_iisan_scientific_masked_checks": cold_start_checks("iisan_scientific_masked"),
    "cold_start_iisan_scientific_masked_hybrid": cold_start_hybrid_checks("iisan_scientific_masked"),
    "cold_start_iisan_instruments_masked": cold_start("iisan_instruments_masked"),
    "cold_start_iisan_instruments_masked_checks": cold_start_checks("iisan_instruments_masked"),
    "cold_start_iisan_instruments_masked_hybrid": cold_start_hybrid_checks("iisan_instruments_masked"),
    "cold_start_unisrec_scientific_masked": cold_start("unisrec_scientific_masked"),
    "cold_start_unisrec_scientific_masked_hybrid": cold_start_hybrid_checks("unisrec_scientific_masked"),
    "ablation_ml100k": ablation_ml100k,
    "age_ml100k": age_ml100k,
    "cold_erosion_ml100k": cold_erosion_ml100k,
    "baselines_ml100k": baselines_ml100k,
    "tgn_ml100k": tgn_ml100k,
    "tgn_softmax": tgn_softmax,
    "tgn_ablation": tgn_ablation,
    "recformer_transfer": recformer_transfer,
    "recbole_side_by_side": recbole_side_by_side,
    "recipe_towers_groups": recipe_towers_groups,
    "recbole_seeds": recbole_seeds,
    "recbole_fresh_seeds": recbole_fresh_seeds,
    "speed": speed,
    "scale": scale,
    "speed_cuda": speed_cuda,
    "scale_cuda": scale_cuda,
}


def render(text: str, results: Path = RESULTS, where: str = "") -> tuple[str, list[str]]:
    """(text with every table block regenerated, names of the blocks that changed)."""
    changed: list[str] = []

    def fill(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise KeyError(f"{where}: unknown table {name!r}; known: {sorted(TABLES)}")
        body = TABLES[name](results)
        if body != m.group("body"):
            changed.append(f"{where}: {name}" if where else name)
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(fill, text), changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if a table differs from its JSON")
    parser.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md, docs/*.md)")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files or doc_files():
        text, changed = render(path.read_text(), where=str(path))
        stale += changed
        if changed and not args.check:
            path.write_text(text)
    for name in stale:
        print(f"{'stale' if args.check else 'rewrote'} table {name}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())

"""Summarise several seeds of `recbole_side_by_side.py`: per-seed rows, mean ± sd and the paired difference.

One seed of RecBole 1.2.1 takes 25-40 minutes on one CPU core, so seeds are run as separate processes
(two at a time on two cores) and combined here. The modalrec side of seed S comes from a --modalrec file
(any run of recbole_side_by_side.py, e.g. with --skip-recbole and a modalrec option such as
--window-stride) and the RecBole side from a --recbole file of the same seed (a full run). The files must
agree on the data and on every shared hyperparameter; modalrec-only options must agree across the
--modalrec files. The script refuses anything else.

    python benchmarks/recbole_seeds_summary.py --modalrec mr_s0.json mr_s1.json ... \
        --recbole full_s0.json full_s1.json ... --out summary.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from _output import emit_json
from recbole_side_by_side import HP_KEYS, modalrec_hparams, parse_args

# Shared by both libraries in every file (the seed is what varies) / modalrec-only, same in every --modalrec file.
SHARED_KEYS = tuple(k for k in HP_KEYS if k != "seed")
# The script's defaults stand in for options that older runs did not record yet.
MODALREC_DEFAULTS = modalrec_hparams(parse_args([]))
MODALREC_KEYS = tuple(MODALREC_DEFAULTS)
# Per-seed values kept from each side's result, besides test NDCG@10 / HR@10; the timings are also averaged.
TIMINGS = ("seconds_per_epoch_mean", "seconds_per_valid_eval_mean", "seconds_to_best")
# Process CPU time, kept when every run recorded it: on a shared machine wall time mostly measures the other jobs.
CPU_TIMINGS = ("cpu_seconds_per_epoch_mean", "cpu_seconds_to_best")


def load(paths: list[Path], side: str) -> dict[int, tuple[Path, dict[str, Any]]]:
    """{seed: (path, run)} of the runs holding a `side` result; refuses duplicates and missing sides."""
    out: dict[int, tuple[Path, dict[str, Any]]] = {}
    for p in paths:
        run = json.loads(p.read_text())
        if not run.get(side):
            raise SystemExit(f"{p}: no {side} result in it")
        seed = run["hparams"]["seed"]
        if seed in out:
            raise SystemExit(f"{p}: seed {seed} given twice for {side} (also {out[seed][0]})")
        out[seed] = (p, run)
    return out


def hparams(run: dict[str, Any]) -> dict[str, Any]:
    """The run's hyperparameters, with the defaults of modalrec options older runs did not record yet."""
    hp = run["hparams"]
    return {**MODALREC_DEFAULTS, "modalrec_window_stride": hp["max_len"], **hp}


def check_same(runs: list[tuple[Path, dict[str, Any]]], keys: tuple[str, ...]) -> None:
    p0, r0 = runs[0]
    for p, run in runs[1:]:
        differ = [k for k in keys if hparams(run).get(k) != hparams(r0).get(k)]
        if differ or run.get("dataset_summary") != r0.get("dataset_summary"):
            raise SystemExit(f"{p}: hyperparameters {differ} or data differ from {p0}")


def side_row(result: dict[str, Any], hr_key: str) -> dict[str, Any]:
    test = result["test"]
    return {"ndcg@10": test["ndcg@10"], "hr@10": test[hr_key], "valid_ndcg@10": result["valid_best"]["ndcg@10"],
            "best_epoch": result["best_epoch"],
            **{k: result[k] for k in TIMINGS}, **{k: result[k] for k in CPU_TIMINGS if result.get(k) is not None}}


def seed_row(seed: int, mr_file: Path, mr_run: dict[str, Any], rb_file: Path, rb_run: dict[str, Any]) -> dict[str, Any]:
    return {"seed": seed, "modalrec_file": str(mr_file), "recbole_file": str(rb_file),
            "load_1min": {lib: run.get("load", {}).get("start", {}).get("loadavg_1_5_15", [None])[0]
                          for lib, run in (("modalrec", mr_run), ("recbole", rb_run))},
            "modalrec": side_row(mr_run["modalrec"], "hr@10"), "recbole": side_row(rb_run["recbole"], "hit@10")}


def spread(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs)}


def paired(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """modalrec - RecBole of `metric` per seed: spread, paired t and the seeds where modalrec is not behind."""
    diff = [r["modalrec"][metric] - r["recbole"][metric] for r in rows]
    d = spread(diff)
    return {**d, "paired_t": d["mean"] / (d["sd"] / len(diff) ** 0.5) if d["sd"] else None,
            "seeds_modalrec_ahead": sum(x >= 0 for x in diff)}


def summarise(modalrec_paths: list[Path], recbole_paths: list[Path], note: str | None = None) -> dict[str, Any]:
    mr, rb = load(modalrec_paths, "modalrec"), load(recbole_paths, "recbole")
    if set(mr) != set(rb):
        raise SystemExit(f"seeds differ: modalrec {sorted(mr)}, RecBole {sorted(rb)}")
    seeds = sorted(mr)
    check_same([mr[s] for s in seeds] + [rb[s] for s in seeds], SHARED_KEYS)
    check_same([mr[s] for s in seeds], MODALREC_KEYS)
    rows = [seed_row(s, *mr[s], *rb[s]) for s in seeds]
    first = hparams(mr[seeds[0]][1])
    timings = TIMINGS + tuple(k for k in CPU_TIMINGS if all(k in r[lib] for r in rows for lib in ("modalrec", "recbole")))
    side = {lib: {m: spread([r[lib][m] for r in rows]) for m in ("ndcg@10", "hr@10", "valid_ndcg@10") + timings}
            for lib in ("modalrec", "recbole")}
    return {
        "benchmark": "recbole_side_by_side over seeds",
        **({"note": note} if note else {}),
        "hparams": {k: first.get(k) for k in SHARED_KEYS + MODALREC_KEYS},
        "dataset_summary": mr[seeds[0]][1].get("dataset_summary"),
        "seeds": seeds,
        "per_seed": rows,
        "modalrec": side["modalrec"],
        "recbole": side["recbole"],
        "ndcg10_modalrec_minus_recbole": paired(rows, "ndcg@10"),
        # VALID picks recipes (TEST is looked at once per recipe), so its gap is reported next to TEST's.
        "valid_ndcg10_modalrec_minus_recbole": paired(rows, "valid_ndcg@10"),
        "ratios_recbole_over_modalrec_of_means": {
            m: side["recbole"][m]["mean"] / side["modalrec"][m]["mean"] for m in timings},
        "acceptance": {"modalrec_mean_test_ndcg10_ge_recbole_mean":
                       side["modalrec"]["ndcg@10"]["mean"] >= side["recbole"]["ndcg@10"]["mean"]},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modalrec", type=Path, nargs="+", required=True, help="runs whose modalrec side to use, one per seed")
    p.add_argument("--recbole", type=Path, nargs="+", required=True, help="runs whose RecBole side to use, one per seed")
    p.add_argument("--note", default=None, help="free text recorded in the JSON (e.g. where each side was run)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = summarise(args.modalrec, args.recbole, args.note)
    emit_json(result, args.out)
    return result


if __name__ == "__main__":
    main()

"""SASRec's training recipe vs the library defaults for content item towers, on VALID NDCG@10.

SASREC_RECIPE (models/sequential/sasrec.py) was chosen on ID SASRec; this checks the content towers
(built-in data as `modalrec demo` sets it up: text, image, text+image, hybrid; ML-100K with text features
and a global temporal split: text, hybrid), overall and per evaluator group (warm / cold_item / cold_user, repeat / novel, history buckets). Both arms
use the same epochs, patience and seeds; the "library" arm sets the recipe's fields to the library
defaults. TEST is recorded for reference only; nothing is chosen on it. Results and commands:
docs/benchmarks.md, "SASRec's recipe on content towers".

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/recipe_towers.py --seeds 0 1 --epochs 30 --jobs 2 \
        --out runs/recipe_towers --result benchmarks/results/recipe_towers.json

Prints the JSON it writes. Encoded features are cached under `--features-dir` (built-in data: the data
seed is fixed at 0, so every training seed reuses one feature cache).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from _pinned import FIXED_ITEM_LENGTH

from modalrec.evaluation.report import GROUP_ROWS

GROUPS = GROUP_ROWS  # overall, then every evaluator group (warm / cold_item / cold_user, repeat / novel, history)
TOWERS = {"builtin": ("text", "image", "text+image", "hybrid"), "ml100k": ("text", "hybrid")}


def library_overrides(max_len: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(train, model params) that restore the library defaults in place of SASRec's recipe."""
    from modalrec.models.recipe import library_training

    return library_training(max_len), {"label_smoothing": 0.0}


def pinned_length(tower: str) -> dict[str, Any]:
    """The item-vector length the stored results were made with (a content tower's default then)."""
    return {} if tower in ("id", "hybrid") else {"options": dict(FIXED_ITEM_LENGTH)}


def job_config(dataset: str, tower: str, arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out) / dataset / tower.replace("+", "_") / arm
    if dataset == "builtin":  # as `modalrec demo` (cli/demo.py) configures it
        data = {"source": "synthetic", "options": {"n_users": 600, "n_items": 800, "seed": 0,
                                                   "image_dir": f"{args.out}/builtin-images"}}
        features = {"text": "minilm", "image": "efficientnet-lite0?image_size=96",
                    "template": "{title}. {description}"}
        params = {"dim": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.2, "max_len": 20,
                  "tower": {"kind": tower, "fusion": "gated", **pinned_length(tower)}}
        train = {"batch_size": 128, "lr": 0.002, "weight_decay": 0.0}
    else:
        data = {"source": "movielens", "options": {"directory": f"{args.data_root}/ml-100k", "posters": False}}
        features = {"text": "minilm", "template": "{title}. Genres: {genres}. {plot}"}
        params = {"dim": 64, "max_len": 50, "tower": {"kind": tower, **pinned_length(tower)}}
        train = {"batch_size": 256, "lr": 0.001}
    if arm == "library":
        lib_train, lib_params = library_overrides(params["max_len"])
        train, params = {**train, **lib_train}, {**params, **lib_params}
    return {
        "name": f"s{seed}", "seed": seed, "output_dir": str(out), "data": data,
        "split": {"kind": "global_temporal"},
        "features": {**features, "cache_dir": args.features_dir},
        "model": {"name": "sasrec", "params": params},
        "train": {**train, "epochs": args.epochs, "patience": args.patience, "device": args.device, "amp": "off"},
        "eval": {"ks": [10, 20], "device": args.device},  # the model stays on the training device
    }


def run_job(key: tuple[str, str, str, int], cfg: dict[str, Any], threads: int) -> dict[str, Any]:
    import torch

    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig
    from modalrec.pipeline import run_experiment

    torch.set_num_threads(threads)
    result = run_experiment(from_dict(ExperimentConfig, cfg))
    return read_row(key, Path(result.run_dir))


def read_row(key: tuple[str, str, str, int], run_dir: Path) -> dict[str, Any]:
    """One run's VALID / TEST NDCG@10 per group from its run directory."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    reports = {s: json.loads((run_dir / f).read_text()) for s, f in (("valid", "valid_report.json"),
                                                                     ("test", "report.json"))}
    row = {"dataset": key[0], "tower": key[1], "arm": key[2], "seed": key[3], "run_dir": str(run_dir),
           "epochs_run": len(manifest["history"]["epoch_seconds"]), "best_epoch": manifest["history"]["best_epoch"],
           "wall_time_s": round(manifest["wall_time_s"], 1), "device": manifest["config"]["train"]["device"],
           "torch": manifest["platform"].get("torch"), "training_defaults": manifest["training_defaults"]}
    for split, rep in reports.items():
        row[split] = {g: (rep["overall"] if g == "overall" else rep["groups"].get(g, {})).get("ndcg@10")
                      for g in GROUPS}
        row[f"{split}_counts"] = {g: rep["counts"].get(g) for g in GROUPS}
    return row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (dataset, tower): VALID (and TEST) NDCG@10 mean over seeds per arm, and recipe - library."""
    out = []
    for dataset, tower in sorted({(r["dataset"], r["tower"]) for r in rows}):
        entry: dict[str, Any] = {"dataset": dataset, "tower": tower}
        for split in ("valid", "test"):
            means = {}
            for arm in ("recipe", "library"):
                arm_rows = [r for r in rows if (r["dataset"], r["tower"], r["arm"]) == (dataset, tower, arm)]
                means[arm] = {g: _mean([r[split][g] for r in arm_rows]) for g in GROUPS}
                if split == "valid":  # the seed noise the decision is read against
                    entry[f"valid_sd_{arm}"] = {g: _sd([r[split][g] for r in arm_rows]) for g in GROUPS}
                entry[f"seeds_{arm}"] = sorted(r["seed"] for r in arm_rows)
            entry[split] = means
            entry[f"{split}_recipe_minus_library"] = {
                g: (None if None in (means["recipe"][g], means["library"][g])
                    else round(means["recipe"][g] - means["library"][g], 4)) for g in GROUPS}
        out.append(entry)
    return out


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def _sd(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.stdev(values), 4) if len(values) > 1 else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["builtin", "ml100k"], choices=sorted(TOWERS))
    p.add_argument("--towers", nargs="+", default=None, help="default: every tower listed for the dataset")
    p.add_argument("--arms", nargs="+", default=["recipe", "library"], choices=["recipe", "library"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--features-dir", default="runs/features")
    p.add_argument("--out", default="runs/recipe_towers")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--result", default=None, help="also write the JSON here")
    p.add_argument("--collect", action="store_true", help="read the finished runs under --out; train nothing")
    args = p.parse_args(argv)

    keys = [(d, t, a, s) for s in args.seeds for d in args.datasets for t in TOWERS[d]
            if args.towers is None or t in args.towers for a in args.arms]  # seed-major: seed 0 finishes first
    configs = [job_config(*k, args) for k in keys]
    if args.collect:  # runs finished earlier (e.g. a batch cut short by a time limit)
        dirs = [Path(c["output_dir"]) / c["name"] for c in configs]
        rows = [read_row(k, d) for k, d in zip(keys, dirs) if (d / "valid_report.json").is_file()]
    elif args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(run_job, keys, configs, [args.threads] * len(keys)))
    else:
        rows = [run_job(k, c, args.threads) for k, c in zip(keys, configs)]
    result = {"benchmark": "recipe_towers", "metric": "ndcg@10", "selection": "VALID",
              "epochs": args.epochs, "patience": args.patience, "device": args.device,
              "command": " ".join(["python", "benchmarks/recipe_towers.py", *(argv or sys.argv[1:])]),
              "summary": summarise(rows), "runs": rows}
    text = json.dumps(result, indent=1)
    if args.result:
        Path(args.result).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""ML-100K ablation: item tower (id / text / image / text+image) x fusion (mlp / film / gated), warm vs cold.

Data: ../shared/data/ml-100k (u.data, u.item, TMDB plots, posters), global temporal split 70/15/15
(cold-item test events = movies first rated after the training period). Features: MiniLM
(all-MiniLM-L6-v2) over "{title}. Genres: {genres}. {plot}" and EfficientNet-Lite0 (ImageNet, 1280-d) over the
posters, both frozen, cached in a FeatureStore under --cache-dir. Every grid point is one
`modalrec.pipeline.run_experiment` run (same loss, loop and evaluator); fusion is only varied for
text+image (single-modality towers run once). Writes results.md / results.json / a warm-vs-cold
NDCG@10 bar chart into --out-dir, copies the table to --table, and prints a JSON summary.

    nice -n 10 python benchmarks/ablation_ml100k.py --table benchmarks/results/ablation_ml100k.md
    python benchmarks/ablation_ml100k.py --epochs 1 --towers id text --out-dir /tmp/abl   # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def base_config(args: argparse.Namespace) -> Any:
    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig
    from modalrec.models.recipe import library_training

    return from_dict(ExperimentConfig, {
        "name": "ml100k-ablation",
        "seed": args.seed,
        "data": {"source": "movielens", "options": {"directory": str(args.data_dir), "plots": True, "posters": True}},
        "split": {"kind": "global_temporal", "ratios": [0.7, 0.15, 0.15]},
        "features": {"text": "minilm", "image": "efficientnet-lite0", "template": "{title}. Genres: {genres}. {plot}",
                     "cache_dir": args.cache_dir, "device": args.device, "batch_size": 64, "store": args.store},
        "model": {"name": "sasrec", "params": {
            "dim": args.dim, "n_layers": 2, "n_heads": 2, "max_len": args.max_len, "dropout": args.dropout,
            "loss": args.loss, "n_negatives": args.n_negatives, "label_smoothing": 0.0,
            "negatives": "popularity" if args.loss in ("sampled", "bpr", "bce") else "uniform",
            "tower": {"dropout": args.tower_dropout}}},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "patience": args.patience,
                  "eval_every": args.eval_every,
                  "device": args.device, "progress": False,
                  **library_training(args.max_len)},  # the training its stored results used, not SASRec's recipe
        "eval": {"ks": [10, 20], "device": args.device},
    })


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=SHARED / "ml-100k")
    p.add_argument("--out-dir", type=Path, default=Path("runs/ablation-ml100k"), help="runs + results (resumable)")
    p.add_argument("--table", type=Path, default=None, help="also write the markdown table here (for the README)")
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--store", default=None,
                   help="an existing FeatureStore with text + image for ML-100K (skips encoding)")
    p.add_argument("--towers", nargs="+", default=["id", "text", "image", "text+image"])
    p.add_argument("--fusions", nargs="+", default=["mlp", "film", "gated"])
    p.add_argument("--models", nargs="+", default=["sasrec"], help="e.g. sasrec gru4rec")
    p.add_argument("--loss", default="sampled", choices=("ce", "sampled", "inbatch", "bpr", "bce"),
                   help="one loss for every tower (sampled = softmax over popularity negatives, logQ-corrected)")
    p.add_argument("--n-negatives", type=int, default=256)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--patience", type=int, default=5, help="validations without improvement before stopping")
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs (VALID has ~15k events)")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--tower-dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged MiniLM loads without a network
    import torch

    from modalrec.ablation import run_ablation
    from modalrec.io import write_bytes_atomic

    torch.set_num_threads(args.threads)
    grid: dict[str, list[Any]] = {} if args.models == ["sasrec"] else {"model.name": list(args.models)}
    grid["model.params.tower.kind"] = list(args.towers)
    grid["model.params.tower.fusion"] = list(args.fusions)
    t0 = time.perf_counter()
    res = run_ablation(base_config(args), grid, args.out_dir, metrics=("ndcg@10",),
                       groups=("overall", "warm", "cold_item", "cold_user", "novel"))
    if args.table:
        write_bytes_atomic(args.table, (args.out_dir / "results.md").read_bytes())
    summary = {
        "benchmark": "ablation_ml100k",
        "out_dir": str(args.out_dir),
        "seconds": round(time.perf_counter() - t0, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "status": res.status,
        "skipped": res.skipped,
        "winner_on_valid": res.winner,
        "ndcg@10": {label: {g: r.metric("ndcg@10", g) for g in r.groups} | {"overall": r.overall["ndcg@10"]}
                    for label, r in res.reports.items()},
        "valid_ndcg@10": {label: {g: r.metric("ndcg@10", g) for g in r.groups} | {"overall": r.overall["ndcg@10"]}
                          for label, r in res.valid_reports.items()},
        "counts": next(iter(res.reports.values())).counts if res.reports else {},
    }
    print(json.dumps(summary, indent=2, default=str))
    print(res.table)
    return summary


if __name__ == "__main__":
    main()

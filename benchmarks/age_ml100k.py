"""Item age on MovieLens-100K: SASRec with an ID, a content and a hybrid item tower, each without and with the
learned freshness prior (models/freshness.py; suffix _age: model.params.age = "bias", a logit per age bucket;
_trend: "bias+trend", per age bucket x the item's events in the 7 days before the query), next to the
no-learning rules.

Data: ../shared/data/ml-100k, global temporal split 70/15/15 (cold-item events = movies first rated after
training); item launch = u.item release date, else the first rating strictly before the query
(data/item_age.py). Features: MiniLM over "{title}. Genres: {genres}. {plot}" (+ EfficientNet-Lite0 posters
for --content text+image), cached under --cache-dir. Every run is one `modalrec.pipeline.run_experiment`:
full ranking, history items other than the target excluded, pessimistic ties; the epoch is chosen on VALID
(`--monitor`, epoch 0 = the untrained model included), TEST is evaluated once. Per group: overall / warm /
cold_item / cold_user / repeat / novel / history buckets (NDCG@10, HR@10), VALID next to TEST.

    nice -n 10 python benchmarks/age_ml100k.py --out benchmarks/results/age_ml100k_cpu.json
    python benchmarks/age_ml100k.py --models newest_first sasrec_id_age --epochs 1   # smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from _output import earlier_json, emit_json, groups_of, start_run
from cold_start import GROUPS

SHARED = Path(os.environ.get("MODALREC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
RULES = ("pop", "recent_pop", "newest_first", "content_knn", "repeat_history")
TOWERS = ("id", "content", "hybrid")
AGES = {"": "none", "_age": "bias", "_trend": "bias+trend"}  # name suffix -> model.params.age
SASRECS = tuple(f"sasrec_{t}{suffix}" for t in TOWERS for suffix in AGES)
OPTIONS = ("content", "loss", "catalogue", "scale", "id_dropout", "age_start", "personal", "monitor", "epochs", "patience",
           "max_len", "batch_size")
log = logging.getLogger("age_ml100k")


def model_spec(model: str, args: argparse.Namespace) -> dict[str, Any]:
    if model == "recent_pop":
        return {"name": "recent_pop", "params": {"launch_tie_break": True}}
    if model in ("content_knn", "repeat_history"):
        return {"name": model, "params": {"max_len": args.max_len}}
    if model in ("pop", "newest_first"):
        return {"name": model, "params": {}}
    kind, _, suffix = model.removeprefix("sasrec_").partition("_")
    content = {"learn_scale": True, "scale": args.scale}
    tower = {"id": {"kind": "id"},
             "content": {"kind": args.content, "fusion": "film", "options": content},
             "hybrid": {"kind": "hybrid", "fusion": "film",
                        "options": {**content, "content": args.content, "id_dropout": args.id_dropout}}}[kind]
    return {"name": "sasrec", "params": {
        "dim": 64, "n_layers": 2, "n_heads": 2, "max_len": args.max_len, "dropout": 0.2, "loss": args.loss,
        "loss_catalogue": args.catalogue, "age": AGES["_" + suffix if suffix else ""], "age_start": args.age_start,
        "age_personal": args.personal and bool(suffix), "label_smoothing": 0.0,
        **({"n_negatives": 256, "negatives": "popularity"} if args.loss == "sampled" else {}),
        "tower": {"dropout": 0.1, **tower}}}


def config(model: str, seed: int, args: argparse.Namespace) -> Any:
    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig
    from modalrec.models.recipe import library_training

    return from_dict(ExperimentConfig, {
        "name": f"age-ml100k-{model}-s{seed}", "seed": seed,
        "data": {"source": "movielens", "options": {"directory": str(args.data_root / "ml-100k")}},
        "split": {"kind": "global_temporal", "ratios": [0.7, 0.15, 0.15]},
        "features": {"text": "minilm", "image": "efficientnet-lite0" if "image" in args.content else None,
                     "template": "{title}. Genres: {genres}. {plot}", "cache_dir": args.cache_dir,
                     "device": args.device},
        "model": model_spec(model, args),
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "patience": args.patience,
                  "monitor": args.monitor, "device": args.device, "progress": False, "seed": seed,
                  **library_training(args.max_len)},  # the training its stored results used, not SASRec's recipe
        "eval": {"ks": [10, 20], "device": args.device, "exclude_seen": True},
    })


def run_one(model: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from modalrec.pipeline import run_experiment

    t0 = time.perf_counter()
    res = run_experiment(config(model, seed, args), write=False)
    hist = res.history
    curve = None
    if hist is not None:  # the monitored VALID metric per epoch, epoch 0 = untrained
        curve = [None if v is None else v.get(args.monitor) for v in [hist.initial_valid, *hist.valid]]
    return {"model": model, "seed": seed, "config": res.manifest["config"]["model"],
            "options": {k: getattr(args, k) for k in OPTIONS},
            "valid": groups_of(res.valid), "test": groups_of(res.test),
            "epochs_run": hist.epochs if hist is not None else 0,
            "best_epoch": hist.best_epoch if hist is not None else None,
            "valid_curve": curve, "train_loss": hist.train_loss if hist is not None else None,
            "seconds": round(time.perf_counter() - t0, 1), "item_launch": res.manifest["item_launch"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=SHARED)
    p.add_argument("--models", nargs="+", default=[*RULES, *SASRECS])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--content", default="text", choices=("text", "text+image"))
    p.add_argument("--loss", default="ce", choices=("ce", "sampled"))
    p.add_argument("--catalogue", default="all", choices=("train", "all"), help="model.params.loss_catalogue")
    p.add_argument("--age-start", default="rates", choices=("rates", "zero"),
                   help="model.params.age_start: the prior starts at the training log's log event rates, or at 0")
    p.add_argument("--personal", action="store_true",
                   help="model.params.age_personal: per-user freshness (a vector per age cell dotted with the state)")
    p.add_argument("--variant", default="", help="stored as 'MODEL (VARIANT)': runs of one model with other options")
    p.add_argument("--scale", type=float, default=1.0, help="initial length of content item vectors (learned)")
    p.add_argument("--id-dropout", type=float, default=0.3, help="hybrid tower: ID dropout in training")
    p.add_argument("--monitor", default="ndcg@10", help="VALID metric that selects the epoch (GROUP/metric too)")
    p.add_argument("--epochs", type=int, default=10, help="epoch cap (stated in the JSON)")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="JSON results (accumulated; existing entries are kept)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start_run(args.threads)
    unknown = sorted(set(args.models) - {*RULES, *SASRECS})
    if unknown:
        raise SystemExit(f"unknown models {unknown}; known: {[*RULES, *SASRECS]}")
    results = earlier_json(args.out).get("results", [])
    done = {(r["model"], r["seed"]) for r in results}
    for model in args.models:
        name = f"{model} ({args.variant})" if args.variant else model
        for seed in args.seeds if model in SASRECS else args.seeds[:1]:
            if (name, seed) not in done:
                log.info("%s / seed %d", name, seed)
                results.append({**run_one(model, seed, args), "model": name})
                out = summary(results, args)
                if args.out:
                    emit_json(out, args.out)
    return summary(results, args)


def summary(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The runs, and per model the mean NDCG@10 of each group on VALID and TEST over its seeds."""
    from modalrec.data.splits import GROUP_DEFINITIONS
    from modalrec.evaluation.evaluator import EXCLUDE_SEEN_RULE

    means: dict[str, Any] = {}
    for model in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == model]
        means[model] = {"seeds": [r["seed"] for r in runs], **{
            part: {g: _mean([r[part][g]["ndcg@10"] for r in runs if g in r[part]]) for g in GROUPS
                   if g in runs[0][part]} for part in ("valid", "test")}}
    return {"benchmark": "age_ml100k", "protocol": {
        "data": "MovieLens-100K, global temporal split 70/15/15, launch = u.item release date else first rating "
                "strictly before the query", "ranking": "full ranking, pessimistic ties",
        "candidates": EXCLUDE_SEEN_RULE, "groups": GROUP_DEFINITIONS,
        "selection": f"best VALID {args.monitor} epoch (epoch 0 = untrained included), TEST once",
        "options": "per run: results[].options"},
        "ndcg@10_mean": means, "claims": claim(results), "results": results}


def claim(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The cold-start target on this split: the content or hybrid SASRec run best on VALID overall NDCG@10 ranks
    cold items at TEST NDCG@10 >= 0.06 while its TEST overall stays >= 0.0765 (the best tower of the ablation grid)."""
    runs = [r for r in results if r["model"].startswith(("sasrec_content", "sasrec_hybrid"))]
    if not runs:
        return None
    best = max(runs, key=lambda r: r["valid"]["overall"]["ndcg@10"])
    cold, overall = best["test"]["cold_item"]["ndcg@10"], best["test"]["overall"]["ndcg@10"]
    rules = {r["model"]: r["test"]["cold_item"]["ndcg@10"] for r in results if r["model"] in RULES}
    met = cold >= 0.06 and overall >= 0.0765
    return {"system": "item-age prior (models/freshness.py)",
            "claim": "content / hybrid SASRec with item age: cold-item NDCG@10 >= 0.06 and overall >= 0.0765",
            "protocol": "ML-100K global temporal 70/15/15, full ranking, pessimistic ties; run chosen on VALID "
                        "overall NDCG@10 (epoch too, epoch 0 included), TEST once",
            "ours": {"run": best["model"], "seed": best["seed"], "epoch_cap": best["options"]["epochs"],
                     "valid_overall": best["valid"]["overall"]["ndcg@10"],
                     "test_overall": overall, "test_cold_item": cold,
                     **{f"{m}_test_cold_item": v for m, v in rules.items() if m in ("newest_first", "content_knn")}},
            "target_met": met,
            **({} if met else {"why": "per item, new movies are taken about as often as any other movie in every "
                               "period (age_rates_ml100k.json), so no shared freshness signal ranks them high; the "
                               "per-user age vectors reach a fraction of newest-first's cold-item score"}),
            "command": "python benchmarks/age_ml100k.py --content text+image --models sasrec_content_trend --personal "
                       "--variant 'rates, personal' --epochs 6 --patience 2 --out benchmarks/results/age_ml100k_cpu.json"}


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 5) if vals else None


if __name__ == "__main__":
    emit_json(main(), None)

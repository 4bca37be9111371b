"""Why training erodes cold-item quality on MovieLens-100K: VALID per epoch, per training variant.

The hybrid SASRec with item age (`cold_start.py`'s `sasrec_hybrid_agehist`: freshness prior over age x recent
activity started at the log's rates, per-user age vectors, history ages) ranks VALID cold items (movies first
rated after training) far better after one epoch than after ten. Each variant here changes one training
option and records, per epoch (0 = untrained), VALID NDCG@10 overall and per evaluator group; after the last epoch
(the best VALID overall one), VALID again with the score split into its parts: the item vectors' dot product
alone (prior removed) and the freshness prior alone (item vectors zeroed), plus the mean item-vector length
of warm and cold items. VALID only: no choice here looks at TEST (cold_start.py evaluates the chosen
configuration on TEST once).

Variants (model.params / tower.options of the base model): `all` (the base: loss_catalogue "all"),
`launched` (loss_catalogue "launched": no item is a negative before its launch), `train` (only items with
training events are classes), `content_aux` (a second loss on the hybrid tower's content part alone),
`cold_default` (a learned ID vector for items without one), `popularity[_W]` (W x log training frequency
added to training logits only, `loss_popularity`; W = 1 without a suffix), `popularity_items[_W]` (the same
term for the item vectors only, the prior learning without it: `loss_popularity_scope=items`).

    nice -n 10 python benchmarks/cold_erosion_ml100k.py --variants all --epochs 1 \\
        --cache-dir .cache/features --out benchmarks/results/cold_erosion_ml100k_cpu.json
    nice -n 10 python benchmarks/cold_erosion_ml100k.py --epochs 4 \\
        --cache-dir .cache/features --out benchmarks/results/cold_erosion_ml100k_cpu.json
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import cold_start
from _output import earlier_json, emit_json, start_run

from modalrec.evaluation.report import GROUP_ROWS

BASE = "sasrec_hybrid_agehist"
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # name -> (model.params, tower.options) changes
    "all": ({}, {}),
    "launched": ({"loss_catalogue": "launched"}, {}),
    "train": ({"loss_catalogue": "train"}, {}),
    "content_aux": ({"content_aux": 1.0}, {}),
    "cold_default": ({}, {"cold_default": "learned"}),
    "popularity": ({"loss_popularity": 1.0}, {}),
    "popularity_0.5": ({"loss_popularity": 0.5}, {}),
    "popularity_0.25": ({"loss_popularity": 0.25}, {}),
    "popularity_items": ({"loss_popularity": 1.0, "loss_popularity_scope": "items"}, {}),
    "popularity_items_0.5": ({"loss_popularity": 0.5, "loss_popularity_scope": "items"}, {}),
    "after_first_event": ({"id_scores": "after_first_event"}, {}),
    "after_first_event_drop": ({"id_scores": "after_first_event", "id_score_dropout": 0.3}, {}),
}
GROUPS = GROUP_ROWS  # overall, then every evaluator group (the docs table shows overall and cold_item per epoch)
log = logging.getLogger("cold_erosion_ml100k")


def config(variant: str, seed: int, args: argparse.Namespace) -> Any:
    from modalrec.config import from_dict, to_dict

    cs = cold_start.parse_args(["--datasets", "ml100k", "--epochs", str(args.epochs), "--patience", "0",
                                "--cache-dir", args.cache_dir, "--data-root", str(args.data_root)])
    spec = cold_start.model_spec(BASE, cold_start.datasets(args.data_root)["ml100k"], cs)
    params, tower = VARIANTS[variant]
    spec["params"].update(params)
    spec["params"]["tower"]["options"].update(tower)
    cfg = to_dict(cold_start.config("ml100k", BASE, seed, cs))
    cfg["model"] = spec
    # the trained model as it is: no new-item offset chosen on VALID, whose lift would be counted in the parts
    cfg["select"] = {**cfg.get("select", {}), "new_item_offset": False, "blend_untrained": False}
    cfg["name"] = f"cold-erosion-{variant}-s{seed}"
    return from_dict(type(cold_start.config("ml100k", BASE, seed, cs)), cfg)


def parts(model: Any, split: Any) -> dict[str, Any]:
    """VALID NDCG@10 per group of the whole score, of the dot product alone and of the prior alone."""
    import torch

    from modalrec.evaluation.evaluator import Evaluator

    ev = Evaluator(split.valid, split.n_items, ks=(10,), exclude_seen=True, max_len=model.history_length)
    model.eval()

    def run() -> dict[str, float]:
        rep = ev.run(model, name="valid")
        return {g: rep.metric("ndcg@10", None if g == "overall" else g) for g in GROUPS}

    out = {"score": run()}
    prior, model.prior = model.prior, None
    out["dot_only"] = run()
    model.prior = prior
    with torch.no_grad():
        table = model.tower.all()
    tower_all, zero = model.tower.all, torch.zeros_like(table)
    gate, model.id_gate = model.id_gate, None  # no ID part either (id_scores "after_first_event")
    model.tower.all = lambda: zero
    out["prior_only"] = run()
    model.tower.all, model.id_gate = tower_all, gate
    warm = torch.as_tensor(split.train.item_counts() > 0)
    warm[0] = False
    cold = ~warm
    cold[0] = False
    out["item_vector_length"] = {"warm": float(table[warm].norm(dim=-1).mean()),
                                 "cold": float(table[cold].norm(dim=-1).mean())}
    return out


def run_one(variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from modalrec.pipeline import run_experiment

    cfg = config(variant, seed, args)
    t0 = time.perf_counter()
    res = run_experiment(cfg, write=False)
    hist = res.history
    curve = [{g: v.get("ndcg@10" if g == "overall" else f"{g}/ndcg@10") for g in GROUPS}
             for v in [hist.initial_valid, *hist.valid]]
    return {"variant": variant, "seed": seed, "changes": dict(zip(("params", "tower_options"), VARIANTS[variant])),
            "epochs": args.epochs, "best_epoch": hist.best_epoch, "valid_curve": curve,
            "train_loss": hist.train_loss, "at_best_epoch": parts(res.model, res.split), "valid_counts": dict(res.valid.counts),
            "seconds": round(time.perf_counter() - t0, 1)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=cold_start.SHARED)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=4, help="epochs (no early stop); the curve has one point per epoch")
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="JSON results (accumulated; existing entries are kept)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start_run(args.threads)
    results = earlier_json(args.out).get("results", [])
    done = {(r["variant"], r["seed"], r["epochs"]) for r in results}
    for variant in args.variants:
        for seed in args.seeds:
            if (variant, seed, args.epochs) not in done:
                log.info("%s / seed %d", variant, seed)
                results.append(run_one(variant, seed, args))
                if args.out:
                    emit_json(summary(results), args.out)
    return summary(results)


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"benchmark": "cold_erosion_ml100k", "protocol": {
        "data": "MovieLens-100K, global temporal split 70/15/15 (cold_start.py's ml100k)",
        "model": f"cold_start.py {BASE}, one option changed per variant",
        "ranking": "full ranking, history items other than the target excluded, pessimistic ties",
        "measured": "VALID NDCG@10 per epoch (0 = untrained); at the best VALID overall epoch the score split into "
                    "the dot product alone and the freshness prior alone; no TEST"}, "results": results}


if __name__ == "__main__":
    emit_json(main(), None)

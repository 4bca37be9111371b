"""Baselines on MovieLens 100K: LightGCN, BERT4Rec vs SASRec, MMGCN and VBPR with cold items. Prints JSON.

Three protocols, one run, every model trained by `training.loop.fit` (early stopping on VALID, best
weights restored) and scored on TEST once by the shared `Evaluator` (full ranking over all 1,682
items, the user's known items masked, pessimistic ties):

1. random    per-user random 8:1:1 split (`data.pairs.random_split`): LightGCN (BPR). Reported both
             per event (the Evaluator's recall = hit rate) and per user as in the LightGCN paper:
             Recall@20 = |top-20 ∩ test_u| / |test_u|, NDCG@20 with IDCG over min(|test_u|, 20)
             positions, averaged over users (computed exactly from the per-event ranks, because
             the user's other test items stay candidates; see random_split).
2. loo       leave-one-out: BERT4Rec and SASRec (ID towers, full softmax), max_len 50.
3. temporal  global chronological 70/15/15 split: MMGCN and VBPR over real item features (MiniLM
             all-MiniLM-L6-v2 on "title. Genres: ... . plot" and EfficientNet-Lite0 on the posters,
             encoded once into a FeatureStore under --cache-root), next to LightGCN and Pop. Every split stores
             every group of the TEST report. Cold users are scored from the mean of their history items.

    nice -n 10 python benchmarks/baselines_ml100k.py --threads 2 --out runs/baselines_ml100k.json
    python benchmarks/baselines_ml100k.py --parts random --epochs-scale 0.05     # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _output import emit_json

from modalrec.costs import trainable_parameters
from modalrec.data.pairs import random_split
from modalrec.data.splits import EvalSet, Split, global_temporal, leave_one_out
from modalrec.evaluation.evaluator import Evaluator
from modalrec.models import MODELS
from modalrec.models.base import ModelContext, Training
from modalrec.pipeline import training_data
from modalrec.training.loop import TrainConfig, fit

log = logging.getLogger("baselines_ml100k")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
TEMPLATE = "{title}. Genres: {genres}. {plot}"  # same store as benchmarks/tgn_ml100k.py
KS = (10, 20)


def features(ds: Any, cache_root: Path, device: str) -> tuple[dict, dict, dict[str, Any]]:
    """MiniLM text + EfficientNet-Lite0 poster features from a FeatureStore (built once, then reused)."""
    from modalrec.features.build import encode_catalogue

    out_dir = cache_root / f"{ds.name}-{ds.item_vocab.hash}-minilm-effnetlite0"
    t0 = time.perf_counter()
    enc = encode_catalogue(ds.items, out_dir, text="minilm", image="efficientnet-lite0", template={"text": TEMPLATE},
                           device=device, dtype="float32", progress=False)
    feats, missing = enc.open(ds.item_vocab).tensors()
    info = {"dir": str(out_dir), "seconds": round(time.perf_counter() - t0, 1), "text_template": TEMPLATE,
            "modalities": {m: {"dim": int(feats[m].shape[1]), "missing": int(missing[m][1:].sum())} for m in feats}}
    return feats, missing, info


def per_user(es: EvalSet, ranks: np.ndarray, k: int) -> dict[str, float]:
    """LightGCN-paper Recall@k / NDCG@k averaged over users, from per-event ranks (= list positions)."""
    order = np.argsort(es.user, kind="stable")
    users, ranks = es.user[order], np.asarray(ranks)[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    n_test = np.diff(np.r_[starts, len(users)])  # [n_users_evaluated]
    hit = ranks <= k
    gain = np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)
    recall = np.add.reduceat(hit.astype(np.float64), starts) / n_test
    idcg_table = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))  # [k]
    ndcg = np.add.reduceat(gain, starts) / idcg_table[np.minimum(n_test, k) - 1]
    return {f"recall@{k}": float(recall.mean()), f"ndcg@{k}": float(ndcg.mean()), "users": len(starts)}


def context(split: Split, feats: dict | None = None, missing: dict | None = None, seed: int = 0) -> ModelContext:
    return ModelContext.for_split(split, item_features=feats or {}, feature_missing=missing or {}, seed=seed)


def train_and_test(name: str, params: dict[str, Any], split: Split, ctx: ModelContext, tc: TrainConfig,
                   args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Build MODELS[name], fit on TRAIN with VALID early stopping, evaluate TEST once."""
    model_cls, cfg_cls = MODELS[name]
    cfg = cfg_cls(**params)
    model = model_cls.build(cfg, ctx)
    valid_eval = Evaluator(split.valid, split.n_items, ks=KS, max_len=50, device=args.device)
    t0 = time.perf_counter()
    if model.training_kind is Training.COUNTS:
        model.fit_counts(split)
        hist = None
    else:
        hist = fit(model, training_data(model, split, 50, tc), tc, validate=lambda m: valid_eval.run(m, name="valid"))
    fit_s = time.perf_counter() - t0
    report = Evaluator(split.test, split.n_items, ks=KS, max_len=50, device=args.device).run(model, name="test")
    out: dict[str, Any] = {
        "model": name, "config": {k: v for k, v in vars(cfg).items() if k != "tower"},
        "trainable_params": trainable_parameters(model) if hist is not None else 0,
        "fit_seconds": round(fit_s, 1),
        "test": {"overall": _pick(report.overall), **{g: _pick(m) for g, m in report.groups.items()}},
        "test_counts": report.counts, "test_eval_seconds": report.meta["wall_time_s"],
    }
    if hist is not None:
        out.update({"train": {k: v for k, v in vars(tc).items() if k in ("epochs", "batch_size", "lr", "weight_decay",
                                                                          "patience", "monitor", "eval_every")},
                    "epochs_run": hist.epochs, "best_epoch": hist.best_epoch,
                    f"best_valid_{tc.monitor}": hist.best_metric, "seconds_per_epoch":
                    round(float(np.mean(hist.epoch_seconds)), 2), "stopped_early": hist.stopped_early})
    log.info("%s: %s (%.0fs)", name, json.dumps(out["test"]["overall"]), fit_s)
    return report, out


def _pick(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg")] + ["mrr"]
    return {k: (round(metrics[k], 5) if metrics.get(k) is not None else None) for k in keep}


def _epochs(n: int, args: argparse.Namespace) -> int:
    return max(1, math.ceil(n * args.epochs_scale))


def run_random(ds: Any, args: argparse.Namespace) -> dict[str, Any]:
    split = random_split(ds.interactions, (0.8, 0.1, 0.1), seed=args.seed)
    tc = TrainConfig(epochs=_epochs(150, args), batch_size=2048, lr=args.lr_graph, grad_clip=0.0, patience=4,
                     eval_every=5, monitor="recall@20", seed=args.seed, device=args.device, progress=False)
    report, out = train_and_test("lightgcn", {"dim": 64, "n_layers": 3, "reg": 1e-4}, split, context(split, seed=args.seed),
                                 tc, args)
    out["test_per_user"] = per_user(split.test, report.ranks, 20)
    return {"split": split.describe(), "lightgcn": out}


def run_loo(ds: Any, args: argparse.Namespace) -> dict[str, Any]:
    split = leave_one_out(ds.interactions)
    ctx = context(split, seed=args.seed)
    res: dict[str, Any] = {"split": split.describe()}
    # Epoch budgets are bounded for a shared 2-core CPU (~10 s per epoch each); see "stopped_early".
    seq = {"sasrec": ({"dim": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.2, "max_len": 50}, 50, 2e-3),
           "bert4rec": ({"dim": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.2, "max_len": 50, "mask_prob": 0.2},
                        80, 2e-3)}
    for name in [m for m in args.seq_models.split(",") if m]:
        params, epochs, lr = seq[name]
        tc = TrainConfig(epochs=_epochs(epochs, args), batch_size=128, lr=lr, patience=5, eval_every=5,
                         monitor="ndcg@10", seed=args.seed, device=args.device, progress=False)
        res[name] = train_and_test(name, params, split, ctx, tc, args)[1]
    return res


def run_temporal(ds: Any, args: argparse.Namespace) -> dict[str, Any]:
    split = global_temporal(ds.interactions, (0.7, 0.15, 0.15))
    feats, missing, finfo = features(ds, args.cache_root, args.feature_device)
    res: dict[str, Any] = {"split": split.describe(), "features": finfo}
    runs = {
        "pop": ({}, False, None),
        "lightgcn": ({"dim": 64, "n_layers": 3, "reg": 1e-4}, False, 150),
        "vbpr": ({"dim": 32, "content_dim": 32, "reg": 1e-4}, True, 150),
        "mmgcn": ({"dim": 64, "latent_dim": 128, "n_layers": 2, "reg": 1e-4}, True, 60),  # ~5x slower per epoch
    }
    for name in [m for m in args.temporal_models.split(",") if m]:
        params, content, epochs = runs[name]
        ctx = context(split, feats if content else None, missing if content else None, seed=args.seed)
        tc = TrainConfig(epochs=_epochs(epochs or 1, args), batch_size=2048, lr=args.lr_graph, grad_clip=0.0,
                         patience=4, eval_every=5, monitor="ndcg@20", seed=args.seed, device=args.device,
                         progress=False)
        res[name] = train_and_test(name, params, split, ctx, tc, args)[1]
        res[name]["features"] = sorted(ctx.item_features)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cache-root", type=Path, default=Path(".cache/features"))
    p.add_argument("--parts", default="random,loo,temporal", help="comma list of random, loo, temporal")
    p.add_argument("--seq-models", default="sasrec,bert4rec")
    p.add_argument("--temporal-models", default="pop,lightgcn,vbpr,mmgcn")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every epoch budget (smoke runs)")
    p.add_argument("--lr-graph", type=float, default=5e-3, help="lr of the BPR models (LightGCN, MMGCN, VBPR)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--feature-device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    from modalrec.data.sources.movielens import load_movielens

    t0 = time.perf_counter()
    ds = load_movielens(args.data_dir)
    result: dict[str, Any] = {
        "benchmark": "baselines_ml100k", "dataset": ds.describe(),
        "protocol": {"ranking": "full ranking over all items; the user's known items masked (EvalSet history); "
                     "pessimistic ties", "selection": "best VALID epoch (checked every 5 epochs); TEST once",
                     "recall@k (Evaluator)": "per event = hit rate", "test_per_user": "LightGCN-paper per-user "
                     "Recall / NDCG averaged over users"},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    parts = {"random": run_random, "loo": run_loo, "temporal": run_temporal}
    for part in [x for x in args.parts.split(",") if x]:
        log.info("part %s", part)
        result[part] = parts[part](ds, args)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    emit_json(result, args.out)


if __name__ == "__main__":
    main()

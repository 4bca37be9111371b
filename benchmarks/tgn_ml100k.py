"""MM-TGN on MovieLens 100K: multimodal vs random item features, next to SASRec (ID and content).

Protocol: chronological 70/15/15 split of all events (data.splits.global_temporal). Item features are
real: MiniLM (all-MiniLM-L6-v2) over "title. Genres: ... . plot" and EfficientNet-Lite0 over the
posters, encoded once into a FeatureStore under --cache-root (features.build.encode_catalogue,
resumable). TGN variants are trained with the shared loop (reset per epoch, chronological batches,
BPR, ReduceLROnPlateau, early stopping on VALID) and evaluated by streaming train -> valid -> test
(every batch scored before it updates memory): AP / AUC against random and historical negatives and
full ranking over all 1,682 items (user's earlier items masked, pessimistic ties), overall,
transductive (user and item seen in training) and inductive (new user or new item).
SASRec (modalrec.models.MODELS["sasrec"]) is trained on the same training events and evaluated on the
same test events with the shared Evaluator (full ranking, same masking and tie rule).

    nice -n 10 python benchmarks/tgn_ml100k.py --threads 1 --out runs/tgn_ml100k.json
    python benchmarks/tgn_ml100k.py --epochs 1 --variants random --sasrec none   # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modalrec.data.events import EventStream
from modalrec.data.splits import EvalSet, Split, global_temporal
from modalrec.evaluation.metrics import compute_metrics
from modalrec.evaluation.streaming import StreamEvalConfig, run_protocol, summary
from modalrec.io import write_json_atomic
from modalrec.models.tgn.model import TGN, TGNConfig
from modalrec.training.events import fit_tgn
from modalrec.training.loop import TrainConfig

log = logging.getLogger("tgn_ml100k")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
TEMPLATE = "{title}. Genres: {genres}. {plot}"
KS = (5, 10, 20)


def features(ds: Any, cache_root: Path, device: str, store_dir: Path | None = None) -> tuple[dict, dict, dict[str, Any]]:
    """MiniLM text + EfficientNet-Lite0 poster features from a FeatureStore: `store_dir` when given (e.g. made
    by `modalrec encode`; opening checks its vocabulary), else built once under `cache_root`, then reused."""
    from modalrec.features.build import encode_catalogue
    from modalrec.features.store import FeatureStore

    t0 = time.perf_counter()
    if store_dir is not None:
        out_dir, mode = store_dir, "existing"
        store = FeatureStore.open(store_dir, ds.item_vocab)
    else:
        out_dir = cache_root / f"{ds.name}-{ds.item_vocab.hash}-minilm-effnetlite0"
        enc = encode_catalogue(ds.items, out_dir, text="minilm", image="efficientnet-lite0",
                               template={"text": TEMPLATE}, device=device, dtype="float32", progress=False)
        store, mode = enc.open(ds.item_vocab), enc.mode
    feats, missing = store.tensors()
    info = {"dir": str(out_dir), "seconds": time.perf_counter() - t0, "mode": mode,
            "modalities": {m: {"dim": int(feats[m].shape[1]), "missing": int(missing[m][1:].sum())} for m in feats},
            "text_template": TEMPLATE}
    return feats, missing, info


def run_tgn(split: Split, variant: str, feats: dict, missing: dict, args: argparse.Namespace) -> dict[str, Any]:
    cfg = TGNConfig(dim=args.dim, n_layers=args.n_layers, n_neighbors=args.n_neighbors, embedding=args.embedding,
                    item_features=variant, fusion=args.fusion, n_negatives=args.n_negatives, dropout=args.dropout,
                    user_film=args.user_film)
    model = TGN(cfg, split.n_users, split.n_items, feats if variant == "content" else None,
                missing if variant == "content" else None, seed=args.seed)
    train = EventStream.from_interactions(split.train)
    valid = EventStream.from_evalset(split.valid, split.n_items)
    test = EventStream.from_evalset(split.test, split.n_items)
    ev = StreamEvalConfig(batch_size=args.batch_size, ks=KS)
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                     monitor=args.monitor, scheduler="plateau", plateau_patience=1, seed=args.seed,
                     device=args.device, progress=False)
    t0 = time.perf_counter()
    hist = fit_tgn(model, train, valid, tc, ev)
    train_s = time.perf_counter() - t0
    reps = run_protocol(model, train, valid, test, ev, seed=args.seed)
    return {
        "model": f"MM-TGN ({variant} item features)", "config": model.config_dict(),
        "trainable_params": model.num_trainable_parameters(),
        "epochs": hist.epochs, "best_epoch": hist.best_epoch, f"best_valid_{args.monitor}": hist.best_metric,
        "train_loss": hist.train_loss, "epoch_seconds": hist.epoch_seconds, "fit_seconds": train_s,
        "valid": summary(reps["valid"]), "test": summary(reps["test"]),
        "test_eval_seconds": reps["test"].meta["seconds"], "test_events_per_s": reps["test"].meta["events_per_s"],
        "test_full": {"overall": reps["test"].overall, **reps["test"].groups},
    }


def _groups(ranks: np.ndarray, es: EvalSet) -> dict[str, dict[str, Any]]:
    masks = {"overall": np.ones(len(es), dtype=bool), "transductive": ~es.cold_item & ~es.cold_user,
             "inductive": es.cold_item | es.cold_user, "cold_item": es.cold_item, "cold_user": es.cold_user}
    out = {}
    for g, m in masks.items():
        met = compute_metrics(torch.from_numpy(ranks[m]), KS)
        out[g] = {"count": int(m.sum()), "ndcg@10": met["ndcg@10"], "recall@10": met["recall@10"], "mrr": met["mrr"]}
    return out


def run_pop(split: Split) -> dict[str, Any]:
    """Reference: rank by training popularity (same masking and tie rule as every model here)."""
    from modalrec.evaluation.ranking import exclusion_pairs, rank_block

    es = split.test
    stream = EventStream.from_evalset(es, split.n_items)
    counts = torch.from_numpy(split.train.item_counts()).double()  # [n_items + 1]
    ranks = np.zeros(len(es), dtype=np.int64)
    for lo, hi in stream.spans(1000):
        targets = torch.from_numpy(stream.items[lo:hi])
        r, _ = rank_block(counts.expand(hi - lo, -1), targets, *exclusion_pairs(stream.history_mask(lo, hi), targets))
        ranks[stream.source_index[lo:hi]] = r.numpy()  # back to EvalSet order
    return {"model": "Pop (training counts)", "test": _groups(ranks, es)}


def run_sasrec(split: Split, kind: str, feats: dict, missing: dict, args: argparse.Namespace) -> dict[str, Any]:
    """SASRec with an ID tower or a text+image content tower, shared loop + shared Evaluator."""
    from modalrec.data.sequences import TrainWindows
    from modalrec.evaluation.evaluator import Evaluator
    from modalrec.models import MODELS
    from modalrec.models.base import ModelContext
    from modalrec.models.towers.item_towers import TOWERS, TowerConfig
    from modalrec.training.loop import fit

    if "sasrec" not in MODELS:
        return {"model": f"SASRec ({kind})", "status": "unavailable: modalrec.models.MODELS has no 'sasrec'"}
    model_cls, cfg_cls = MODELS["sasrec"]
    tower = TowerConfig(kind="id")
    if kind == "content":
        if "text+image" not in TOWERS:  # hook: content towers not registered yet -> register for this run
            from modalrec.models.towers.content import build_content_tower

            TOWERS.setdefault("text+image", build_content_tower)
        tower = TowerConfig(kind="text+image", fusion=args.fusion if args.fusion != "concat" else "mlp")
    cfg = cfg_cls(dim=args.dim, max_len=50, tower=tower)
    ctx = ModelContext(n_items=split.n_items, n_users=split.n_users,
                       train_item_counts=split.train.item_counts(),
                       item_features=feats if kind == "content" else {},
                       feature_missing=missing if kind == "content" else {}, seed=args.seed)
    model = model_cls.build(cfg, ctx)
    valid_eval = Evaluator(split.valid, split.n_items, ks=KS, exclude_seen=True, max_len=50, device=args.device)
    tc = TrainConfig(epochs=args.sasrec_epochs, batch_size=128, lr=1e-3, patience=5, monitor="ndcg@10",
                     seed=args.seed, device=args.device, progress=False)
    t0 = time.perf_counter()
    hist = fit(model, TrainWindows(split.train, 50), tc, lambda m: valid_eval.run(m, name="valid"))
    fit_s = time.perf_counter() - t0
    rep = Evaluator(split.test, split.n_items, ks=KS, exclude_seen=True, max_len=50, device=args.device).run(model)
    return {"model": f"SASRec ({kind})", "tower": tower.kind, "epochs": hist.epochs, "best_epoch": hist.best_epoch,
            "fit_seconds": fit_s, "trainable_params": hist.trainable_params,
            "test": _groups(np.asarray(rep.ranks), split.test),
            "note": "full ranking only (AP/AUC are link-prediction metrics of the streaming TGN protocol)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cache-root", type=Path, default=Path(".cache/features"))
    p.add_argument("--store", type=Path, default=None,
                   help="an existing ML-100K FeatureStore with text + image (e.g. from `modalrec encode`); skips encoding")
    p.add_argument("--variants", default="content,random", help="comma list of content, random, id")
    p.add_argument("--sasrec", default="id,content", help="comma list of id, content, or none")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--sasrec-epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--monitor", default="mrr")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=1)
    p.add_argument("--n-neighbors", type=int, default=10)
    p.add_argument("--n-negatives", type=int, default=5, help="BPR negatives per training event")
    p.add_argument("--embedding", default="attn", choices=["attn", "identity", "time"])
    p.add_argument("--fusion", default="mlp", choices=["mlp", "gated", "film", "sum"])
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--user-film", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    from modalrec.data.sources.movielens import load_movielens

    t_start = time.perf_counter()
    ds = load_movielens(args.data_dir)
    split = global_temporal(ds.interactions)
    feats, missing, finfo = features(ds, args.cache_root, args.device, args.store)
    result: dict[str, Any] = {
        "benchmark": "tgn_ml100k", "dataset": ds.describe(), "split": split.describe(), "features": finfo,
        "protocol": {"split": "global_temporal 70/15/15 by (ts, row)", "ranking": "all items, user's earlier items "
                     "masked, pessimistic ties", "groups": {"transductive": "user and item seen in training",
                                                            "inductive": "new user or new item"},
                     "tgn_stream": "train -> valid -> test in time order; each batch scored before it is observed"},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "tgn": {}, "sasrec": {}, "pop": None,
    }
    for variant in [v for v in args.variants.split(",") if v]:
        log.info("MM-TGN %s", variant)
        result["tgn"][variant] = run_tgn(split, variant, feats, missing, args)
        log.info("%s: %s", variant, json.dumps(result["tgn"][variant]["test"]["overall"]))
    result["pop"] = run_pop(split)
    for kind in [k for k in args.sasrec.split(",") if k and k != "none"]:
        log.info("SASRec %s", kind)
        try:
            result["sasrec"][kind] = run_sasrec(split, kind, feats, missing, args)
        except Exception as exc:  # a baseline failing must not lose the TGN numbers
            log.exception("SASRec %s failed", kind)
            result["sasrec"][kind] = {"model": f"SASRec ({kind})", "status": f"failed: {type(exc).__name__}: {exc}"}
    result["table"] = {
        **{f"MM-TGN {v}": {g: {k: r["test"][g].get(k) for k in ("ap_random", "auc_random", "ap_historical",
                                                               "auc_historical", "ndcg@10", "mrr")}
                           for g in ("overall", "transductive", "inductive")} for v, r in result["tgn"].items()},
        **{f"SASRec {k}": {g: {m: r["test"][g].get(m) for m in ("ndcg@10", "mrr")} for g in
                           ("overall", "transductive", "inductive")} for k, r in result["sasrec"].items() if "test" in r},
        "Pop": {g: {m: result["pop"]["test"][g].get(m) for m in ("ndcg@10", "mrr")}
                for g in ("overall", "transductive", "inductive")},
    }
    result["total_seconds"] = time.perf_counter() - t_start
    print(json.dumps(result["table"], indent=2))
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()

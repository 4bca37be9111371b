"""Content (text) SASRec vs ID SASRec on Amazon, full ranking, against the IISAN papers' numbers.

Datasets (paths are arguments; defaults point at ../shared/data beside the project):
- `scientific`, `instruments`: the IISAN users/items TSVs (../shared/data/amazon-iisan), leave-one-out
  (valid = second-last, test = last item of each user), items = titles encoded with MiniLM
  (all-MiniLM-L6-v2, 384-d, frozen). Reference (IISAN papers, Scientific, text + images, HR@10 / NDCG@10
  in %): frozen backbone 6.00 / 3.53, IISAN-VA 7.29 / 4.41; Instruments: IISAN-VA 9.52 / 7.17.
- `unisrec`: the UniSRec Scientific pre-split (../shared/data/amazon-scientific-unisrec, split kind
  presplit), text = `Scientific.text` (title. categories. brand.).

Protocol: full ranking over every item, history items excluded, pessimistic ties; every model is
trained on TRAIN with early stopping on VALID NDCG@10 (best weights restored) and TEST is evaluated
once. Content variants (text, text-whiten, text-moe, hybrid, text-dot) run in order until `--budget-s` is spent;
the best content model is the one with the best VALID NDCG@10 (never chosen on TEST).
The FeatureStore is cached under --cache-dir (resumable), so only the first run encodes titles.

    nice -n 10 python benchmarks/quality_amazon.py --out benchmarks/results/quality_amazon.json
    python benchmarks/quality_amazon.py --datasets unisrec --epochs 2 --variants text   # smoke run
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

from _output import emit_json
from _pinned import FIXED_ITEM_LENGTH

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IISAN_FILES = {
    "scientific": ("am_Industrial_and_Scientific_users.tsv", "Industrial_and_Scientific_items.tsv"),
    "instruments": ("am_Musical_Instruments_users_10K.tsv", "Musical_Instruments_items.tsv"),
}
REFERENCE = {  # HR@10, NDCG@10 in %, from the IISAN papers (text + image backbones, leave-one-out, full ranking)
    "scientific": {"frozen_backbone": {"hr@10": 6.00, "ndcg@10": 3.53}, "iisan_va": {"hr@10": 7.29, "ndcg@10": 4.41}},
    "instruments": {"full_finetuning": {"hr@10": 8.76, "ndcg@10": 6.76}, "iisan_va": {"hr@10": 9.52, "ndcg@10": 7.17}},
}
# Content variants: tower settings (loss comes from --content-loss).
VARIANTS: dict[str, dict[str, Any]] = {
    "text": {"kind": "text", "options": {**FIXED_ITEM_LENGTH}},
    "text-whiten": {"kind": "text", "options": {"adaptor": "whiten", **FIXED_ITEM_LENGTH}},
    "text-moe": {"kind": "text", "options": {"adaptor": "moe", "n_experts": 8, **FIXED_ITEM_LENGTH}},
    "hybrid": {"kind": "hybrid", "options": {"content": "text", "id_dropout": 0.2}},
    "text-dot": {"kind": "text", "options": {"normalize": False}},  # plain dot product (no cosine scaling)
}
log = logging.getLogger("quality_amazon")


def load(name: str, args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(dataset, split, text template) for one dataset; --max-users subsamples users (IISAN data only)."""
    import numpy as np

    from modalrec.data.splits import from_presplit, leave_one_out
    from modalrec.seeding import numpy_rng

    if name == "unisrec":
        from modalrec.data.sources.recbole import load_recbole

        ds = load_recbole(args.unisrec_dir, "Scientific", presplit=True)
        if ds.presplit is None:
            raise SystemExit(f"{args.unisrec_dir}: expected the pre-split UniSRec files")
        return ds, from_presplit(ds.interactions, ds.presplit["valid_rows"], ds.presplit["test_rows"]), "{text}"
    from modalrec.data.sources.amazon_iisan import load_amazon_iisan

    users_tsv, items_tsv = IISAN_FILES[name]
    ds = load_amazon_iisan(args.iisan_dir / users_tsv, args.iisan_dir / items_tsv)
    inter = ds.interactions
    if args.max_users and args.max_users < ds.n_users:
        keep = np.zeros(ds.n_users + 1, dtype=bool)
        chosen = numpy_rng(args.seed, "bench/users").choice(np.arange(1, ds.n_users + 1), args.max_users, replace=False)
        keep[chosen] = True
        inter = inter.subset(keep[inter.user])  # all items stay rankable: same catalogue, fewer users
    return ds, leave_one_out(inter), "{title}"


def features(ds: Any, template: str, args: argparse.Namespace) -> tuple[dict, dict, dict[str, Any]]:
    from modalrec.features.build import encode_catalogue

    out = Path(args.cache_dir) / f"{ds.name}-{ds.item_vocab.hash}-minilm-{template.strip('{}')}"
    t0 = time.perf_counter()
    summary = encode_catalogue(ds.items, out, text="minilm", template=template, batch_size=args.encode_batch,
                               device=args.device, progress=False, resume=True)
    feats, missing = summary.tensors()
    info = {"store": str(out), "mode": summary.mode, "seconds": round(time.perf_counter() - t0, 1),
            "encoder": "minilm (sentence-transformers/all-MiniLM-L6-v2, 384-d, frozen)", "template": template,
            "items_missing_text": int(missing["text"][1:].sum())}
    return feats, missing, info


def train_eval(split: Any, feats: dict, missing: dict, tower: dict[str, Any], loss: str,
               args: argparse.Namespace) -> dict[str, Any]:
    """Train one SASRec (early stopping on VALID), evaluate TEST once; metrics in %."""
    from modalrec.data.sequences import TrainWindows
    from modalrec.evaluation.evaluator import Evaluator
    from modalrec.models.base import ModelContext
    from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
    from modalrec.models.towers.item_towers import TowerConfig
    from modalrec.training.loop import TrainConfig, fit

    ctx = ModelContext.for_split(split, item_features=feats, feature_missing=missing, seed=args.seed)
    cfg = SASRecConfig(dim=args.dim, n_layers=args.layers, n_heads=args.heads, dropout=args.dropout,
                       max_len=args.max_len, loss=loss, n_negatives=args.n_negatives,
                       negatives="popularity" if loss in ("sampled", "bpr") else "uniform",
                       tower=TowerConfig(kind=tower["kind"], dropout=args.tower_dropout,
                                         options=dict(tower["options"])))
    model = SASRec(cfg, ctx)
    ev = {part: Evaluator(getattr(split, part), split.n_items, ks=(10, 20), max_len=args.max_len, device=args.device)
          for part in ("valid", "test")}
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                     seed=args.seed, device=args.device, progress=False)
    t0 = time.perf_counter()
    hist = fit(model, TrainWindows(split.train, args.max_len), tc, validate=lambda m: ev["valid"].run(m, name="valid"))
    fit_s = time.perf_counter() - t0
    model.eval()
    test = ev["test"].run(model, name="test")
    pct = {k: round(100 * float(test.overall[k]), 3) for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20")}
    groups = {g: {"n": test.counts.get(g, 0), **{m: None if v.get(m) is None else round(100 * float(v[m]), 3)
                                                for m in ("hr@10", "ndcg@10")}} for g, v in test.groups.items()}
    return {"tower": tower, "loss": loss, "test_pct": pct, "test_groups_pct": groups,
            "candidates": test.meta.get("candidates"),
            "valid_best_ndcg@10_pct": round(100 * float(hist.best_metric or 0.0), 3),
            "epochs_run": hist.epochs, "best_epoch": hist.best_epoch, "stopped_early": hist.stopped_early,
            "seconds_fit": round(fit_s, 1),
            "seconds_per_epoch": round(sum(hist.epoch_seconds) / max(1, hist.epochs), 1),
            "trainable_params": hist.trainable_params}


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    ds, split, template = load(name, args)
    feats, missing, feat_info = features(ds, template, args)
    desc = ds.describe()
    out: dict[str, Any] = {"dataset": {k: desc.get(k) for k in ("name", "hash", "users", "items", "interactions")},
                           "split": split.describe(), "features": feat_info,
                           "bounded": bool(args.max_users and name != "unisrec" and args.max_users < ds.n_users)}
    log.info("%s: %s", name, out["split"])
    out["id_sasrec"] = train_eval(split, {}, {}, {"kind": "id", "options": {}}, args.id_loss, args)
    log.info("%s id: %s", name, out["id_sasrec"]["test_pct"])
    content, budget_start = {}, time.perf_counter()
    for variant in args.variants:
        if content and time.perf_counter() - budget_start > args.budget_s:
            content[variant] = {"status": f"skipped: --budget-s {args.budget_s} spent"}
            continue
        content[variant] = train_eval(split, feats, missing, VARIANTS[variant], args.content_loss, args)
        log.info("%s %s: %s", name, variant, content[variant]["test_pct"])
    out["content_variants"] = content
    done = {k: v for k, v in content.items() if "test_pct" in v}
    best = max(done, key=lambda k: done[k]["valid_best_ndcg@10_pct"])  # selected on VALID
    out["best_content"] = {"variant": best, "selected_on": "valid ndcg@10", "test_pct": done[best]["test_pct"]}
    b, i = done[best]["test_pct"], out["id_sasrec"]["test_pct"]
    out["content_beats_id"] = {m: b[m] > i[m] for m in ("hr@10", "ndcg@10")}
    if name in REFERENCE:
        ref = REFERENCE[name]
        out["reference_pct"] = ref
        out["gap_to_reference_pct"] = {k: {m: round(b[m] - v[m], 3) for m in v} for k, v in ref.items()}
        if "frozen_backbone" in ref:
            out["reaches_frozen_backbone"] = all(b[m] >= ref["frozen_backbone"][m] for m in ("hr@10", "ndcg@10"))
    out["seconds_total"] = round(time.perf_counter() - t0, 1)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=("scientific", "instruments", "unisrec"),
                   default=["scientific", "instruments", "unisrec"])
    p.add_argument("--iisan-dir", type=Path, default=SHARED / "amazon-iisan")
    p.add_argument("--unisrec-dir", type=Path, default=SHARED / "amazon-scientific-unisrec")
    p.add_argument("--cache-dir", default=".cache/features", help="FeatureStore cache (MiniLM title vectors)")
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    p.add_argument("--budget-s", type=float, default=4 * 3600, help="time for content variants per dataset")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--tower-dropout", type=float, default=0.1, help="dropout on the frozen features")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--id-loss", default="ce", choices=("ce", "sampled", "inbatch", "bpr", "bce"))
    p.add_argument("--content-loss", default="ce", choices=("ce", "sampled", "inbatch", "bpr", "bce"))
    p.add_argument("--n-negatives", type=int, default=256)
    p.add_argument("--max-users", type=int, default=0, help="bounded run: this many random users (0 = all)")
    p.add_argument("--encode-batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged MiniLM loads without a network
    import torch

    from modalrec.io import write_json_atomic

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "quality_amazon",
        "protocol": "full ranking over all items, history excluded, pessimistic ties; early stopping on VALID "
                    "ndcg@10; TEST once; metrics in %",
        "hparams": {k: v for k, v in vars(args).items() if k not in ("out", "iisan_dir", "unisrec_dir")},
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "results": {},
    }
    for name in args.datasets:
        result["results"][name] = run_dataset(name, args)
        if args.out:  # keep finished datasets even if a later one is interrupted
            write_json_atomic(args.out, json.loads(json.dumps(result, default=str)))
    result["seconds_total"] = round(time.perf_counter() - started, 1)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    emit_json(result, args.out)
    return result


if __name__ == "__main__":
    main()

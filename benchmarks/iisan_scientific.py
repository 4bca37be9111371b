"""IISAN on the IISAN papers' Amazon data (titles only), MiniLM text encoder, leave-one-out, full ranking.

Steps: load the users/items TSVs -> leave-one-out split -> cache MiniLM's per-layer mean-pooled hidden
states once (features.build.encode_hidden_cache, resumable) -> train IISAN (text-only: intra-modal SAN
over LayerDrop-selected layers 2, 4, 6 of MiniLM-L6 + fusion + SASRec, in-batch logQ CE) with early
stopping on VALID NDCG@10 -> evaluate TEST once with the shared Evaluator. Optionally the frozen-backbone
baseline (last-layer cached features + linear projection) on the same cache. Prints JSON.

The JSON's `published` block restates each model under the IISAN papers' protocol next to their numbers
(_published.py: all targets, novel targets, history masked as the papers mask it); the papers used titles and
images with their own encoders, our data has titles only.

    nice -n 10 python benchmarks/iisan_scientific.py --epochs 30 --out runs/iisan_scientific.json
    python benchmarks/iisan_scientific.py --max-users 2000 --epochs 2          # smoke run
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _output import emit_json
from _published import comparison

log = logging.getLogger("iisan_bench")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon-iisan"
FILES = {
    "Scientific": ("am_Industrial_and_Scientific_users.tsv", "Industrial_and_Scientific_items.tsv"),
    "Instruments": ("am_Musical_Instruments_users_10K.tsv", "Musical_Instruments_items.tsv"),
}


def prepare(data_dir: Path, dataset: str, cache_root: Path, max_users: int | None, device: str,
            encode_batch: int, seed: int, with_cache: bool = True) -> dict[str, Any]:
    """Dataset, leave-one-out split (optionally on the first `max_users` users) and the MiniLM hidden cache
    (built once under `cache_root`, reused afterwards; skipped when not `with_cache`)."""
    from modalrec.data.sources.amazon_iisan import load_amazon_iisan
    from modalrec.data.splits import leave_one_out
    from modalrec.features.build import encode_hidden_cache
    from modalrec.features.hidden_cache import HiddenStateCache

    users_tsv, items_tsv = FILES[dataset]
    ds = load_amazon_iisan(data_dir / users_tsv, data_dir / items_tsv)
    inter = ds.interactions
    if max_users:
        inter = inter.subset(inter.user <= max_users)  # index spaces are kept: the item vocabulary is unchanged
    split = leave_one_out(inter)
    cache_dir = cache_root / f"{ds.name}-{ds.item_vocab.hash}-minilm-all"
    out = {"dataset": ds, "split": split, "cache": None, "cache_dir": cache_dir, "cache_seconds": 0.0,
           "cache_mode": "not used", "max_users": max_users, "seed": seed}
    if not with_cache:
        return out
    t0 = time.perf_counter()
    summary = encode_hidden_cache(ds.items, cache_dir, {"text": "minilm"}, layers="all", template={"text": "{title}"},
                                  batch_size=encode_batch, device=device, progress=True)
    cache = HiddenStateCache.open(cache_dir, ds.item_vocab)
    out.update(cache=cache, cache_seconds=time.perf_counter() - t0, cache_mode=summary.mode)
    return out


def context(prep: dict[str, Any], max_len: int):
    from modalrec.models.base import ModelContext

    split = prep["split"]
    return ModelContext.for_split(split, seed=prep["seed"])


def train_and_test(model: torch.nn.Module, prep: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from modalrec.costs import PeakMemory
    from modalrec.data.sequences import TrainWindows
    from modalrec.evaluation.evaluator import Evaluator
    from modalrec.models.iisan.model import efficiency_report
    from modalrec.training.loop import TrainConfig, fit

    split = prep["split"]
    ev = {part: Evaluator(getattr(split, part), split.n_items, ks=(5, 10, 20), max_len=args.max_len,
                          device=args.device) for part in ("valid", "test")}
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      patience=args.patience, device=args.device, seed=args.seed, progress=args.progress,
                      max_steps_per_epoch=args.max_steps)
    started = time.perf_counter()
    with PeakMemory(args.device) as mem:
        hist = fit(model, TrainWindows(split.train, args.max_len), cfg, validate=lambda m: ev["valid"].run(m, "valid"))
    train_s = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        valid = ev["valid"].run(model, "valid")
        test = ev["test"].run(model, "test")  # TEST once, with the best-on-VALID weights
    eff = efficiency_report(model, seconds_per_epoch=float(np.mean(hist.epoch_seconds)) if hist.epoch_seconds else None,
                            memory=mem, cache_paths=[prep["cache_dir"]])
    return {
        "test": {k: _pct(test.overall[k]) for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20")},
        "valid": {k: _pct(valid.overall[k]) for k in ("hr@10", "ndcg@10")},
        "groups_test_ndcg@10": {g: _pct(v.get("ndcg@10")) for g, v in test.groups.items()},
        "groups_test_hr@10": {g: _pct(v.get("hr@10")) for g, v in test.groups.items()},
        "_groups": {g: {"n": test.counts.get(g, 0), **{m: test.metric(m, g) for m in ("hr@10", "ndcg@10")}}
                    for g in ("overall", "novel")},
        "groups_test_events": dict(test.counts),
        "epochs_run": hist.epochs, "best_epoch": hist.best_epoch, "train_loss": hist.train_loss,
        "train_seconds_total": train_s, "efficiency": eff,
    }


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * float(value)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--dataset", choices=sorted(FILES), default="Scientific")
    p.add_argument("--cache-root", type=Path, default=Path(".cache/hidden"))
    p.add_argument("--models", default="iisan,frozen", help="comma list of iisan, frozen")
    p.add_argument("--max-users", type=int, default=None, help="only the first N users (smoke runs)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch (smoke runs)")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--bottleneck", type=int, default=64)
    p.add_argument("--layerdrop", default="auto")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--encode-batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    from modalrec.models.iisan.model import IISAN, IISANConfig, states_from_cache
    from modalrec.models.iisan.peft_baselines import FrozenBackbone, FrozenBackboneConfig

    prep = prepare(args.data_dir, args.dataset, args.cache_root, args.max_users, args.device, args.encode_batch,
                   args.seed)
    states = states_from_cache(prep["cache"], ("text",))
    ctx = context(prep, args.max_len)
    common = {"dim": args.dim, "max_len": args.max_len, "dropout": args.dropout}
    out: dict[str, Any] = {
        "benchmark": "iisan_scientific",
        "dataset": prep["dataset"].describe(), "split": prep["split"].describe(),
        "protocol": "leave-one-out, full ranking over all items, pessimistic ties, history excluded; "
                    "metrics in %; best epoch on VALID NDCG@10, TEST evaluated once",
        "text_encoder": "sentence-transformers/all-MiniLM-L6-v2 (packaged), mean-pooled hidden states, "
                        "layers 0..6 cached (float16)",
        "modalities": "text (titles) only",
        "cache": {"dir": str(prep["cache_dir"]), "mode": prep["cache_mode"], "seconds": prep["cache_seconds"]},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": torch.get_num_threads(),
        "results": {},
    }
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name == "iisan":
            model = IISAN.build(IISANConfig(**common, bottleneck=args.bottleneck, layerdrop=args.layerdrop), ctx, states)
        elif name == "frozen":
            model = FrozenBackbone.build(FrozenBackboneConfig(**common), ctx, states)
        else:
            raise SystemExit(f"unknown model {name!r}; choose from iisan, frozen")
        out["results"][name] = train_and_test(model, prep, args)
        log.info("%s: %s", name, out["results"][name]["test"])
    runs = {name: r.pop("_groups") for name, r in out["results"].items()}
    out["published"] = comparison(f"iisan_{args.dataset.lower()}", runs)
    emit_json(out, args.out)
    return out


if __name__ == "__main__":
    main()

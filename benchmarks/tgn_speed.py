"""MM-TGN speed: seconds per training epoch and full-ranking evaluation throughput (events/s).

Data: ML-100K (chronological 70/15/15 split) when --data-dir exists, else a synthetic stream of the
same size. Item features are random (the "random" ablation) so that no encoder runs; the content
variant only adds one small projection per item and is timed with --item-features content on
synthetic 384 + 1280-d vectors. Runs on CPU and, when available, CUDA. Prints JSON.

    nice -n 10 python benchmarks/tgn_speed.py --threads 1 --out runs/tgn_speed.json
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _output import emit_json

from modalrec.data.events import EventStream
from modalrec.data.interactions import Interactions
from modalrec.data.splits import Split, global_temporal
from modalrec.evaluation.streaming import StreamEvalConfig, evaluate_stream, stream_through
from modalrec.models.tgn.model import TGN, TGNConfig
from modalrec.training.loop import TrainConfig, fit

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def load_split(data_dir: Path) -> tuple[Split, str]:
    if (data_dir / "u.data").is_file():
        from modalrec.data.sources.movielens import load_movielens

        ds = load_movielens(data_dir, plots=False, posters=False)
        return global_temporal(ds.interactions), f"ml-100k ({ds.content_hash()})"
    rng = np.random.default_rng(0)  # synthetic stand-in of the same size
    n_users, n_items, n = 943, 1682, 100_000
    inter = Interactions.from_arrays(rng.integers(1, n_users + 1, n), rng.integers(1, n_items + 1, n),
                                     np.sort(rng.integers(0, 10**7, n)), n_users=n_users, n_items=n_items)
    return global_temporal(inter), "synthetic 943 x 1682 x 100k"


def measure(split: Split, device: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = TGNConfig(dim=args.dim, n_layers=args.n_layers, embedding=args.embedding, n_neighbors=args.n_neighbors,
                    item_features=args.item_features, n_negatives=args.n_negatives)
    feats, missing = {}, {}
    if args.item_features == "content":
        gen = torch.Generator().manual_seed(0)
        feats = {m: torch.randn(split.n_items + 1, d, generator=gen) for m, d in (("text", 384), ("image", 1280))}
        missing = {m: torch.zeros(split.n_items + 1, dtype=torch.bool) for m in feats}
    model = TGN(cfg, split.n_users, split.n_items, feats, missing, seed=0).to(device)
    train = EventStream.from_interactions(split.train)
    test = EventStream.from_evalset(split.test, split.n_items)
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=device, progress=False, amp="off")
    hist = fit(model, train.with_negatives(cfg.n_negatives), tc)  # no validation: pure training time per epoch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    model.eval()
    model.reset_state()
    t0 = time.perf_counter()
    stream_through(model, train, args.eval_batch_size)
    stream_s = time.perf_counter() - t0
    rank_cfg = StreamEvalConfig(batch_size=args.eval_batch_size, negatives=(), full_ranking=True)
    snap = model.state_dict_memory()
    rep_rank = evaluate_stream(model, test, rank_cfg, restore=True)
    ap_cfg = StreamEvalConfig(batch_size=args.eval_batch_size, negatives=("random", "historical"), full_ranking=False)
    rep_ap = evaluate_stream(model, test, ap_cfg, restore=True)
    assert all(torch.equal(v, model.state_dict_memory()[k]) for k, v in snap.items())
    return {
        "device": device,
        "train_events": len(train),
        "train_epoch_seconds": hist.epoch_seconds,
        "train_events_per_s": [len(train) / s for s in hist.epoch_seconds],
        "observe_only_events_per_s": len(train) / stream_s,
        "full_ranking": {"test_events": len(test), "n_items": split.n_items, "seconds": rep_rank.meta["seconds"],
                         "events_per_s": rep_rank.meta["events_per_s"],
                         "mrr_after_1_epoch": rep_rank.overall["mrr"]},
        "ap_auc_only": {"seconds": rep_ap.meta["seconds"], "events_per_s": rep_ap.meta["events_per_s"]},
        "trainable_params": model.num_trainable_parameters(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--devices", default="auto", help="comma list (cpu,cuda) or auto = cpu + cuda if available")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--eval-batch-size", type=int, default=200)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=1)
    p.add_argument("--n-neighbors", type=int, default=10)
    p.add_argument("--n-negatives", type=int, default=5, help="BPR negatives per training event")
    p.add_argument("--embedding", default="attn", choices=["attn", "identity", "time"])
    p.add_argument("--item-features", default="random", choices=["random", "id", "content"])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (1 on a shared machine)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else args.devices.split(",")
    split, data = load_split(args.data_dir)
    result = {
        "benchmark": "tgn_speed", "data": data, "split": split.describe(),
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")},
        "host": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__,
                 "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "runs": [measure(split, d, args) for d in devices],
    }
    emit_json(result, args.out)


if __name__ == "__main__":
    main()

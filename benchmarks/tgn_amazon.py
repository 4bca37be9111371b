"""MM-TGN on Amazon Industrial_and_Scientific (the IISAN TSVs): content vs random item features, next to
ID SASRec and Pop on the same events -- the second dataset of the MM-TGN benchmark (tgn_ml100k.py is the first).

The IISAN files carry each user's items in chronological order but no clock. A temporal graph needs one
global order, so each user's sequence is laid on a relative clock: event k of a user with L events is at
round(T * k / (L - 1)) (T = 10^7, a single event at 0). Events of different users at the same relative
position are simultaneous; their order across users is the file order and carries no meaning. With this
clock the chronological 70/15/15 split (data.splits.global_temporal) puts nearly every user's last event
in TEST (close to leave-one-out) and the inductive events are mostly new items, the case content
features are meant for. Users are subsampled (--max-users, seeded) to keep the run CPU-sized; the
catalogue is the items those users touched. Item features: MiniLM (all-MiniLM-L6-v2) over the title,
encoded once into a FeatureStore under --cache-root.

    nice -n 10 python benchmarks/tgn_amazon.py --threads 1 --max-users 3000 --fusions mlp,gated,film \\
        --out benchmarks/results/tgn_amazon_scientific_cpu.json
    python benchmarks/tgn_amazon.py --max-users 300 --epochs 1 --variants random --sasrec none   # smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tgn_ml100k import model_args, run_and_write

from modalrec.data.interactions import Interactions
from modalrec.data.splits import global_temporal

log = logging.getLogger("tgn_amazon")
DEFAULT_DATA = Path(os.environ.get("MODALREC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "amazon-iisan"
FILES = {"scientific": ("am_Industrial_and_Scientific_users.tsv", "Industrial_and_Scientific_items.tsv"),
         "instruments": ("am_Musical_Instruments_users_10K.tsv", "Musical_Instruments_items.tsv")}
CLOCK = 10**7


def subsample(users_tsv: Path, max_users: int, seed: int, out: Path) -> Path:
    """A users TSV with `max_users` users drawn without replacement (seeded), in file order."""
    from modalrec.seeding import numpy_rng

    lines = users_tsv.read_text(encoding="utf-8").splitlines()
    if max_users and max_users < len(lines):
        keep = np.sort(numpy_rng(seed, "tgn_amazon/users").choice(len(lines), max_users, replace=False))
        lines = [lines[i] for i in keep]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def relative_clock(inter: Interactions) -> Interactions:
    """Event k of a user with L events at round(CLOCK * k / (L - 1)); order inside each user is kept."""
    lengths = np.diff(inter.offsets)[inter.user]  # [E] events of the event's user
    k = np.arange(len(inter)) - inter.offsets[inter.user]  # [E] position in the user's sequence
    ts = np.where(lengths > 1, np.rint(CLOCK * k / np.maximum(lengths - 1, 1)), 0).astype(np.int64)
    return Interactions.from_arrays(inter.user, inter.item, ts, inter.row, n_users=inter.n_users, n_items=inter.n_items)


def features(ds: Any, cache_root: Path, device: str) -> tuple[dict, dict, dict[str, Any]]:
    from modalrec.features.build import encode_catalogue

    out = cache_root / f"{ds.name}-{ds.item_vocab.hash}-minilm-title"
    t0 = time.perf_counter()
    enc = encode_catalogue(ds.items, out, text="minilm", template={"text": "{title}"}, device=device,
                           dtype="float32", progress=False)
    feats, missing = enc.open(ds.item_vocab).tensors()
    return feats, missing, {"dir": str(out), "seconds": time.perf_counter() - t0, "mode": enc.mode,
                            "modalities": {m: {"dim": int(feats[m].shape[1]), "missing": int(missing[m][1:].sum())}
                                           for m in feats}, "text_template": "{title}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--category", default="scientific", choices=sorted(FILES))
    p.add_argument("--max-users", type=int, default=3000, help="seeded user subsample (0 = all)")
    p.add_argument("--cache-root", type=Path, default=Path(".cache/features"))
    model_args(p)
    p.set_defaults(sasrec="id")  # text-only data: the text+image content SASRec of tgn_ml100k does not apply
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    from modalrec.data.sources.amazon_iisan import load_amazon_iisan

    t_start = time.perf_counter()
    users_tsv, items_tsv = FILES[args.category]
    sub = subsample(args.data_dir / users_tsv, args.max_users, args.seed,
                    args.cache_root / "subsets" / f"{args.category}-{args.max_users}-{args.seed}.tsv")
    ds = load_amazon_iisan(sub, args.data_dir / items_tsv, name=f"amazon-{args.category}-{args.max_users}u")
    split = global_temporal(relative_clock(ds.interactions))
    feats, missing, finfo = features(ds, args.cache_root, args.device)
    result: dict[str, Any] = {
        "benchmark": "tgn_amazon", "dataset": {**ds.describe(), "users_sampled_from": str(args.data_dir / users_tsv),
                                               "max_users": args.max_users},
        "split": split.describe(), "features": finfo,
        "protocol": {"split": "global_temporal 70/15/15 by (relative ts, row); relative clock: a user's event k "
                     f"of L at round({CLOCK} k / (L - 1)) (the data has order, no clock)",
                     "ranking": "all items of the subsample, user's earlier items masked, pessimistic ties",
                     "groups": {"transductive": "user and item seen in training", "inductive": "new user or new item"},
                     "tgn_stream": "train -> valid -> test in time order; each batch scored before it is observed"},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "command": "python benchmarks/tgn_amazon.py " + " ".join(sys.argv[1:]),
        "tgn": {}, "sasrec": {}, "pop": None,
    }
    run_and_write(split, feats, missing, args, result, t_start)


if __name__ == "__main__":
    main()

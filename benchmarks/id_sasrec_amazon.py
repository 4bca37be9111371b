"""ID SASRec (modalrec, full-softmax CE) on the two Amazon Industrial & Scientific datasets, full ranking.

- `unisrec`: ../shared/data/amazon-scientific-unisrec, the UniSRec RecBole atomic files with their own
  train / valid / test files (split kind "presplit": valid/test events are the files' targets).
- `iisan`: ../shared/data/amazon-iisan, the IISAN users/items TSVs, leave-one-out (valid = second last,
  test = last item of each user; file order is time order).

Same model and training loop as benchmarks/recbole_side_by_side.py (post-norm SASRec, Adam, no clipping,
early stopping on VALID NDCG@10, best weights restored, TEST evaluated once). Evaluation protocol:
modalrec's default, exclude_seen=True (history items other than the target are not candidates); the
unmasked numbers are reported alongside. Prints JSON (and writes it with --out), including the
machine's load average, since timings on a shared machine depend on it.

    nice -n 10 python benchmarks/id_sasrec_amazon.py --epochs 20 --out benchmarks/results/id_sasrec_amazon.json
    python benchmarks/id_sasrec_amazon.py --datasets unisrec --epochs 1      # smoke run
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark script holds the shared trainer

from _output import emit_json
from recbole_side_by_side import (
    HP_KEYS,
    add_hparams,
    add_modalrec_options,
    machine_info,
    machine_state,
    modalrec_hparams,
    train_modalrec_sasrec,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IISAN_FILES = ("am_Industrial_and_Scientific_users.tsv", "Industrial_and_Scientific_items.tsv")


def load(name: str, args: argparse.Namespace) -> tuple[Any, Any]:
    """(dataset, split) for one of the two sources."""
    from modalrec.data.splits import from_presplit, leave_one_out

    if name == "unisrec":
        from modalrec.data.sources.recbole import load_recbole

        ds = load_recbole(args.unisrec_dir, "Scientific", presplit=True)
        if ds.presplit is None:
            raise SystemExit(f"{args.unisrec_dir}: expected the pre-split UniSRec files")
        return ds, from_presplit(ds.interactions, ds.presplit["valid_rows"], ds.presplit["test_rows"])
    from modalrec.data.sources.amazon_iisan import load_amazon_iisan

    ds = load_amazon_iisan(args.iisan_dir / IISAN_FILES[0], args.iisan_dir / IISAN_FILES[1])
    return ds, leave_one_out(ds.interactions)


def repeat_stats(es: Any) -> dict[str, float]:
    """Share of events whose target the user already consumed (stays a candidate under exclude_seen)."""
    in_hist = [t in set(es.history(e).tolist()) for e, t in enumerate(es.target)]
    is_last = [len(es.history(e)) > 0 and es.history(e)[-1] == t for e, t in enumerate(es.target)]
    return {"target_in_history": float(sum(in_hist)) / max(len(es), 1),
            "target_is_last_item": float(sum(is_last)) / max(len(es), 1)}


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    ds, split = load(name, args)
    load_s = time.perf_counter() - t0
    load_before = machine_state()
    res = train_modalrec_sasrec(split, args, exclude_seen=True)
    res.pop("model")
    desc = ds.describe()
    return {
        "dataset": {k: desc[k] for k in ("name", "hash", "users", "items", "interactions", "avg_seq_len") if k in desc},
        "source_summary": {k: v for k, v in desc.items() if k in ("source", "files", "filters", "history_truncation",
                                                                    "presplit_rows", "kept_items", "dropped_items")},
        "split": split.describe(),
        "repeat_consumption": {"valid": repeat_stats(split.valid), "test": repeat_stats(split.test)},
        "protocol": "full ranking over all items; exclude_seen=True (history items other than the target are "
                    "not candidates); pessimistic ties; checkpoint selected on VALID ndcg@10",
        "test": {k: res["test"][k] for k in ("hr@10", "ndcg@10", "mrr")},
        "test_no_history_mask": {k: res["test_by_protocol"]["no_history_mask"][k] for k in ("hr@10", "ndcg@10", "mrr")},
        "valid_best": {k: res["valid_best"][k] for k in ("hr@10", "ndcg@10", "mrr")} if res["valid_best"] else None,
        "epochs_run": res["epochs_run"],
        "best_epoch": res["best_epoch"],
        "stopped_early": res["stopped_early"],
        "counts": res["counts"],
        "seconds_load_and_split": load_s,
        "seconds_per_epoch_mean": res["seconds_per_epoch_mean"],
        "cpu_seconds_per_epoch_mean": res["cpu_seconds_per_epoch_mean"],
        "seconds_per_valid_eval_mean": res["seconds_per_valid_eval_mean"],
        "seconds_test_eval": res["seconds_test_eval"],
        "seconds_to_best": res["seconds_to_best"],
        "seconds_fit": res["seconds_fit"],
        "valid_ndcg10": res["valid_ndcg10"],
        "load": {"before": load_before, "after": machine_state()},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=("unisrec", "iisan"), default=["unisrec", "iisan"])
    p.add_argument("--unisrec-dir", type=Path, default=SHARED / "amazon-scientific-unisrec")
    p.add_argument("--iisan-dir", type=Path, default=SHARED / "amazon-iisan")
    p.add_argument("--out", type=Path, default=None)
    add_hparams(p, epochs=20, patience=5)
    add_modalrec_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "id_sasrec_amazon", "model": "ID SASRec (modalrec), full-softmax CE",
        "hparams": {**{k: getattr(args, k) for k in HP_KEYS}, **modalrec_hparams(args)},
        "machine": machine_info(args.threads), "load_start": machine_state(),
        "results": {name: run_one(name, args) for name in args.datasets},
    }
    result["seconds_total"] = time.perf_counter() - started
    emit_json(result, args.out)
    return result


if __name__ == "__main__":
    main()

"""How much more often is a new item taken than the catalogue's share of new items? ML-100K, by age bucket.

For each period of the global temporal 70/15/15 split (training events, VALID and TEST targets) and each age
bucket of models/freshness.py (age at the event's time, data/item_age.py: causal), the share of events whose
item sits in the bucket over the share of the catalogue that sits there, averaged over the events' times --
the per-item event rate of the bucket relative to an average item (1 = no freshness effect). Also: how often
an event is on an item under `--young-days` old, overall and right after such an event of the same user
(history order), and the share of cold-item targets whose last 10 history items hold such an item. No
training; no randomness.

    nice -n 10 python benchmarks/age_rates_ml100k.py --out benchmarks/results/age_rates_ml100k.json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _output import emit_json

SHARED = Path(os.environ.get("MODALREC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=SHARED)
    p.add_argument("--events", type=int, default=5000, help="evenly spaced events per period for the rates")
    p.add_argument("--young-days", type=int, default=120)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    import torch
    from cold_start import datasets

    from modalrec.config import from_dict
    from modalrec.data.item_age import DAY
    from modalrec.experiment import DataConfig, SplitConfig
    from modalrec.models.freshness import EDGES_DAYS, FreshnessPrior
    from modalrec.pipeline import item_launch, load_data, make_split

    torch.set_num_threads(1)
    spec = datasets(args.data_root)["ml100k"]
    ds = load_data(from_dict(DataConfig, spec["data"]))
    split = make_split(ds, from_dict(SplitConfig, spec["split"]))
    launch = item_launch(ds, split)
    prior = FreshnessPrior(launch)
    names = ["unknown", *(f"<{e}d" for e in EDGES_DAYS), f">={EDGES_DAYS[-1]}d"]
    catalogue = torch.arange(1, split.n_items + 1)
    periods = {"train": (split.train.item, split.train.ts), "valid": (split.valid.target, split.valid.ts),
               "test": (split.test.target, split.test.ts)}
    rates: dict[str, Any] = {}
    for period, (items, ts) in periods.items():
        pick = np.linspace(0, len(items) - 1, min(len(items), args.events)).round().astype(np.int64)
        it, t = torch.as_tensor(items[pick]), torch.as_tensor(ts[pick])
        hits = torch.bincount(prior.age_buckets(it, t), minlength=len(names)).double() / len(pick)
        share = torch.zeros(len(names), dtype=torch.float64)
        for lo in range(0, len(t), 512):
            cells = prior.age_buckets(catalogue[None, :], t[lo : lo + 512, None])
            share += torch.bincount(cells.flatten(), minlength=len(names)).double() / len(catalogue)
        share /= len(pick)
        rates[period] = {n: {"events_share": round(float(h), 5), "catalogue_share": round(float(s), 5),
                             "rate": round(float(h / s), 3) if s > 0 else None} for n, h, s in zip(names, hits, share)}

    # the user's own habit: is an event on a young item more likely right after one?
    users = np.concatenate([split.train.user, split.valid.user, split.test.user])
    items = np.concatenate([split.train.item, split.valid.target, split.test.target])
    ts = np.concatenate([split.train.ts, split.valid.ts, split.test.ts])
    period = np.repeat([0, 1, 2], [len(split.train.user), len(split.valid.user), len(split.test.user)])
    age, known = launch.age_at(torch.as_tensor(items), torch.as_tensor(ts))
    young = (known & (age < args.young_days * DAY)).numpy()
    trained = np.bincount(split.train.item, minlength=split.n_items + 1) > 0
    order = np.lexsort((np.arange(len(users)), ts, users))
    habit: dict[str, Any] = {}
    for p, name in enumerate(periods):
        prev, cur, cold_recent = [], [], []
        last: dict[int, list[bool]] = {}
        for k in order:
            hist = last.setdefault(int(users[k]), [])
            if period[k] == p:
                if hist:
                    prev.append(hist[-1]), cur.append(young[k])
                if not trained[items[k]]:
                    cold_recent.append(any(hist[-10:]))
            hist.append(bool(young[k]))
        prev_a, cur_a = np.array(prev), np.array(cur)
        habit[name] = {"p_young": round(float(cur_a.mean()), 4),
                       "p_young_after_young": round(float(cur_a[prev_a].mean()), 4),
                       "p_young_after_older": round(float(cur_a[~prev_a].mean()), 4),
                       "events_after_young": int(prev_a.sum()),
                       "cold_item_targets": len(cold_recent),
                       "cold_item_targets_with_young_in_last_10": round(float(np.mean(cold_recent)), 4)
                       if cold_recent else None}
    out = {"benchmark": "age_rates_ml100k", "split": "global temporal 70/15/15 (cold_start.py's ml100k)",
           "launch": launch.describe(), "young_days": args.young_days, "events_per_period": args.events,
           "rate_by_age_bucket": rates, "young_after_young": habit}
    emit_json(out, args.out)
    return out


if __name__ == "__main__":
    main()

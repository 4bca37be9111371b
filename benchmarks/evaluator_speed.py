"""Full-ranking evaluator throughput on a synthetic catalogue with a trivial dot-product model.

Prints JSON: events/s of Evaluator.run, the time the model's own scoring takes on the same batches,
and the evaluator's overhead (batch building + ranking + masking) on top of it.

    python benchmarks/evaluator_speed.py --users 6000 --items 20000 --dim 64 [--device cuda] [--out f.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _output import emit_json
from torch import nn

from modalrec.data.sequences import eval_batch
from modalrec.data.splits import EvalSet
from modalrec.evaluation.evaluator import Evaluator
from modalrec.evaluation.sampled import SampledConfig
from modalrec.seeding import numpy_rng, torch_generator
from modalrec.types import SeqBatch


class DotModel(nn.Module):
    """state = mean of the history's item embeddings; score = state . E^T."""

    def __init__(self, n_items: int, dim: int, seed: int) -> None:
        super().__init__()
        gen = torch_generator(seed, "bench/emb")
        self.emb = nn.Parameter(torch.randn(n_items + 1, dim, generator=gen) / dim**0.5)

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        h = self.emb[batch.items]  # [B, L, d]
        n = (batch.items > 0).sum(1, keepdim=True).clamp(min=1)  # [B, 1]
        state = h.sum(1) / n  # [B, d]
        return state @ self.emb.T  # [B, N + 1]


def synthetic_evalset(n_users: int, n_items: int, seed: int, mean_hist: int) -> EvalSet:
    rng = numpy_rng(seed, "bench/evalset")
    lengths = rng.integers(1, 2 * mean_hist, n_users)
    offsets = np.zeros(n_users + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return EvalSet(
        user=np.arange(1, n_users + 1, dtype=np.int64),
        target=rng.integers(1, n_items + 1, n_users),
        ts=np.zeros(n_users, np.int64),
        hist_offsets=offsets,
        hist_items=rng.integers(1, n_items + 1, offsets[-1]),
        hist_ts=np.zeros(offsets[-1], np.int64),
        cold_item=rng.random(n_users) < 0.1,
        cold_user=np.zeros(n_users, bool),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=6000)
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mean-hist", type=int, default=50)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--sampled", type=int, default=0, help="also time sampled metrics with this many negatives"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    es = synthetic_evalset(args.users, args.items, 0, args.mean_hist)
    model = DotModel(args.items, args.dim, 0).to(args.device)
    result: dict[str, object] = {
        "users": args.users,
        "items": args.items,
        "dim": args.dim,
        "history_items": len(es.hist_items),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
    }
    for exclude in (True, False):
        t0 = time.perf_counter()
        ev = Evaluator(es, args.items, exclude_seen=exclude, max_len=args.max_len, device=args.device)
        setup = time.perf_counter() - t0
        walls = [ev.run(model, keep_ranks=False).meta["wall_time_s"] for _ in range(args.repeats)]
        wall = min(walls)
        result[f"exclude_seen={exclude}"] = {
            "setup_s": round(setup, 4),
            "run_s": wall,
            "runs_s": walls,
            "events_per_s": round(args.users / wall, 1),
            "batch_size": ev.batch_size,
        }
    # The model alone on the same batches: what any evaluator must pay at least.
    bs = ev.batch_size
    model_walls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            for lo in range(0, args.users, bs):
                idx = np.arange(lo, min(args.users, lo + bs))
                s = model.score(eval_batch(es, idx, args.max_len).to(args.device))
                float(s[0, 0])  # synchronise on GPU
        model_walls.append(time.perf_counter() - t0)
    model_only = min(model_walls)
    ev_wall = result["exclude_seen=True"]["run_s"]  # type: ignore[index]
    result["model_only_s"] = round(model_only, 4)
    result["evaluator_overhead_s"] = round(ev_wall - model_only, 4)
    result["evaluator_overhead_frac"] = round((ev_wall - model_only) / ev_wall, 3)
    if args.sampled:
        ev = Evaluator(es, args.items, device=args.device, sampled=SampledConfig(n=args.sampled, seed=0))
        t0 = time.perf_counter()
        ev.negatives()
        draw = time.perf_counter() - t0
        rep = ev.run(model, keep_ranks=False)
        result["sampled"] = {"n": args.sampled, "draw_s": round(draw, 3), "run_s": rep.meta["wall_time_s"]}
    emit_json(result, args.out)


if __name__ == "__main__":
    main()

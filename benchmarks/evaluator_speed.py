"""Full-ranking evaluator throughput on a synthetic catalogue with a trivial dot-product model.

Prints JSON per catalogue size: Evaluator.run's wall time, the model's own scoring on the same batches
(history windows built the same way), and `overhead_over_model` = (evaluator - model) / model: what
ranking, history masking, metrics and copies add on top of the scoring any evaluator must pay. Each is
measured twice: for a model the evaluator knows only by `score` (it ranks the [B, N + 1] score block), and
for the same model declaring `dot_product_scores` (the evaluator forms the scores chunk by chunk and
ranks them in cache, `ranking.rank_dot_block`; negative overhead = faster than the model's own `score`).
The model alone is called on as many events per call as the evaluator calls it with (`Evaluator.score_rows`:
on CPU, 16 MiB of scores, at least 16 events) and, as `model_only_full_block`, on whole score blocks
(score_budget floats: 64 MiB); `whole_blocks,...` is the evaluator calling the model on whole blocks, as it did
before score_rows. `model_and_one_read` is the model plus one pass over each score block it returns: the floor
of the first kind of evaluation, which must compare every score with the target's. Peak RSS is reset before
each catalogue's timed runs (Linux), so it shows memory bounded by the score block (score_budget floats), not
by the catalogue.

    nice -n 10 python benchmarks/evaluator_speed.py --items 100000 1000000 --users 4000 1000 --threads 1 \
        --repeats 5 --out benchmarks/results/evaluator_speed_cpu.json [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

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

    def forward(self, batch: SeqBatch) -> torch.Tensor:  # [B, d]
        h = self.emb[batch.items]  # [B, L, d]
        n = (batch.items > 0).sum(1, keepdim=True).clamp(min=1)  # [B, 1]
        return h.sum(1) / n

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward(batch) @ self.emb.T  # [B, N + 1]


class DotProductModel(DotModel):
    """The same model declaring the Recommender contract `dot_product_scores` (score = forward @
    item_embeddings().T), which lets the evaluator rank without materialising the score block."""

    dot_product_scores = True

    def item_embeddings(self) -> torch.Tensor:  # [N + 1, d]
        return self.emb


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


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux: VmHWM via /proc/self/clear_refs); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int | None:
    """Peak resident set size in bytes since the last reset (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def model_only(model: DotModel, es: EvalSet, batch_size: int, max_len: int, device: str, read: bool = False) -> None:
    """The model alone on the evaluator's batches: what any evaluator must pay at least. With `read`, plus one
    read of each score block (its max, a pass at memory speed): the least any evaluator that ranks the block
    the model returns must pay, since every score is compared with the target's."""
    with torch.no_grad():
        for lo in range(0, len(es), batch_size):
            idx = np.arange(lo, min(len(es), lo + batch_size))
            s = model.score(eval_batch(es, idx, max_len).to(device))
            if read:  # NumPy's max reads at memory speed on CPU
                float(s.numpy().max() if s.device.type == "cpu" else s.max())
            else:
                float(s[0, 0])  # synchronise on GPU


def measure(n_items: int, n_users: int, args: argparse.Namespace) -> dict[str, object]:
    """Evaluator.run (timed from outside: batches, scoring, ranking, masking, metrics) vs the model alone,
    interleaved repeat by repeat so that load on a shared machine hits both alike; best of --repeats (wall and
    process CPU time)."""
    es = synthetic_evalset(n_users, n_items, 0, args.mean_hist)
    model = DotModel(n_items, args.dim, 0).to(args.device)
    out: dict[str, object] = {"items": n_items, "users": n_users, "history_items": len(es.hist_items)}
    dot = DotProductModel(n_items, args.dim, 0).to(args.device)  # the same weights (same seed)
    evs = {}
    for exclude in (True, False):
        t0 = time.perf_counter()
        evs[exclude] = Evaluator(es, n_items, exclude_seen=exclude, max_len=args.max_len, device=args.device)
        out[f"setup_s_exclude_seen={exclude}"] = round(time.perf_counter() - t0, 4)
    bs, rows = evs[True].batch_size, evs[True].score_rows
    runs: dict[str, Callable[[], object]] = {
        "model_only": lambda: model_only(model, es, rows, args.max_len, args.device),
        "model_only_full_block": lambda: model_only(model, es, bs, args.max_len, args.device),
        "model_and_one_read": lambda: model_only(model, es, rows, args.max_len, args.device, read=True),
    }
    for exclude, ev in evs.items():  # a model known only by `score` / one declaring the dot-product contract
        runs[f"exclude_seen={exclude}"] = lambda ev=ev: ev.run(model, keep_ranks=False)
        runs[f"dot_product,exclude_seen={exclude}"] = lambda ev=ev: ev.run(dot, keep_ranks=False)
    for exclude in (True, False):  # the evaluator calling `score` on whole blocks, as before score_rows
        whole = Evaluator(es, n_items, exclude_seen=exclude, max_len=args.max_len, device=args.device)
        whole.score_rows = whole.batch_size
        runs[f"whole_blocks,exclude_seen={exclude}"] = lambda ev=whole: ev.run(model, keep_ranks=False)
    walls: dict[str, list[float]] = {k: [] for k in runs}
    cpus: dict[str, list[float]] = {k: [] for k in runs}
    reset_peak_rss()
    base_rss = peak_rss()
    for _ in range(args.repeats):
        for k, fn in runs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            walls[k].append(time.perf_counter() - w0)
            cpus[k].append(time.process_time() - c0)
    best = {k: min(v) for k, v in walls.items()}
    best_cpu = {k: min(v) for k, v in cpus.items()}
    median_cpu = {k: float(np.median(v)) for k, v in cpus.items()}

    def overhead(b: dict[str, float]) -> dict[str, float]:
        m = b["model_only"]
        return {k: round((v - m) / m, 4) for k, v in b.items() if k != "model_only"}

    out.update({
        "batch_size": bs,
        "score_block_bytes": bs * (n_items + 1) * 4,
        "score_rows": rows,  # events per model.score call (the model-alone runs call it the same way)
        "score_call_bytes": rows * (n_items + 1) * 4,
        "runs_s": {k: [round(x, 4) for x in v] for k, v in walls.items()},
        "runs_cpu_s": {k: [round(x, 4) for x in v] for k, v in cpus.items()},
        "best_s": {k: round(v, 4) for k, v in best.items()},
        "best_cpu_s": {k: round(v, 4) for k, v in best_cpu.items()},
        "median_cpu_s": {k: round(v, 4) for k, v in median_cpu.items()},
        "events_per_s": round(n_users / best["exclude_seen=True"], 1),
        # The acceptance ratio: the evaluator's time on top of the model's own scoring, over that scoring
        # (best wall and best process CPU time: the CPU time is steadier on a shared machine).
        "overhead_over_model": overhead(best),
        "overhead_over_model_cpu": overhead(best_cpu),
        "overhead_over_model_cpu_median": overhead(median_cpu),
        "peak_rss_bytes_before": base_rss,
        "peak_rss_bytes": peak_rss(),
    })
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, nargs="+", default=[4000, 1000],
                    help="evaluation events per catalogue size (one value, or one per --items)")
    ap.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mean-hist", type=int, default=50)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--sampled", type=int, default=0, help="also time sampled metrics with this many negatives"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    users = args.users * len(args.items) if len(args.users) == 1 else args.users
    if len(users) != len(args.items):
        ap.error(f"--users takes one value or one per --items ({len(args.items)}), got {len(args.users)}")
    result: dict[str, object] = {
        "benchmark": "evaluator_speed",
        "dim": args.dim,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "loadavg_1_5_15_start": [round(x, 2) for x in os.getloadavg()],
        "catalogues": [measure(n, u, args) for n, u in zip(args.items, users)],
        "loadavg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
    }
    if args.sampled:
        n = args.items[0]
        es = synthetic_evalset(users[0], n, 0, args.mean_hist)
        ev = Evaluator(es, n, device=args.device, sampled=SampledConfig(n=args.sampled, seed=0))
        t0 = time.perf_counter()
        ev.negatives()
        draw = time.perf_counter() - t0
        rep = ev.run(DotModel(n, args.dim, 0).to(args.device), keep_ranks=False)
        result["sampled"] = {"items": n, "n": args.sampled, "draw_s": round(draw, 3),
                             "run_s": rep.meta["wall_time_s"]}
    emit_json(result, args.out)


if __name__ == "__main__":
    main()

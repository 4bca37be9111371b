"""How training and evaluation cost grow with the catalogue: 10^4 -> 10^5 -> 10^6 items on one machine.

For each catalogue size N a generated log is built: N * --events-per-item events (10 by default: 10^5, 10^6
and 10^7 events, so events grow with the catalogue), users of --events-per-user events each (10: N users), items drawn
from a Zipf-like popularity (p ~ 1 / (rank + 10)), timestamps in order. Every item has a 384-d float16 content
vector (random, unit scale: quality is not measured here) written with the FeatureStore writer in row chunks
and read back as the store's read-only memory map; the model is SASRec over the text content tower
(`tower.kind=text`, features never copied into memory as a whole) trained with sampled softmax
(`loss=sampled`, 100 shared uniform negatives per step). Per size it reports:

- training: `fit` for --steps steps of --batch-size windows (max_len 50, stride 50), timed (wall and process
  CPU) after one warm-up step; the epoch time is that per-step time times the epoch's steps, an
  extrapolation, labelled `epoch_s_extrapolated` (one real epoch at 10^6 items is ~4,000 steps);
- evaluation: full ranking (every item a candidate, history excluded) of the last event of --eval-users
  users (10,000 by default), `Evaluator.run` wall / CPU time, item table included;
- peak RSS of the size's own process (each size runs in a fresh subprocess), and the file-backed part
  (memory-mapped features) vs the anonymous part at the end.

The JSON ends with `growth`: each measure's ratio between consecutive sizes (10x more items).

    nice -n 10 python benchmarks/scale.py --threads 1 --out benchmarks/results/scale_cpu.json
    python benchmarks/scale.py --items 2000 20000 --eval-users 200 --steps 2      # smoke run
    python benchmarks/scale.py --device cuda --out benchmarks/results/scale_cuda.json    # GPU: model, features
                                                                                        # and scoring on the GPU
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _output import emit_json

FEATURE_DIM = 384
CHUNK = 2**16  # rows generated / written at a time, so no [N, 384] float array is ever held


def proc_status() -> dict[str, int]:
    """VmHWM (peak RSS), RssAnon and RssFile of this process in bytes (Linux), else {}."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0]) * 1024
    except OSError:
        pass
    return out


def generate_log(n_items: int, args: argparse.Namespace) -> Any:
    """Interactions of n_items * events_per_item events, users of events_per_user events each."""
    from modalrec.data.interactions import Interactions
    from modalrec.seeding import numpy_rng

    rng = numpy_rng(args.seed, f"scale/log/{n_items}")
    n_events = n_items * args.events_per_item
    n_users = max(1, n_events // args.events_per_user)
    pop = 1.0 / (np.arange(n_items) + 10.0)
    items = rng.permutation(n_items)[np.searchsorted(np.cumsum(pop / pop.sum()), rng.random(n_events))]
    items = np.minimum(items, n_items - 1) + 1  # [E] 1..N (searchsorted may hit N on the last float)
    users = np.repeat(np.arange(1, n_users + 1), args.events_per_user)[:n_events]
    users = np.concatenate([users, rng.integers(1, n_users + 1, n_events - len(users))])
    return Interactions.from_arrays(users, items, np.arange(n_events), n_users=n_users, n_items=n_items)


def write_store(directory: Path, n_items: int, seed: int) -> Any:
    """A FeatureStore with one 384-d float16 'text' modality, written CHUNK rows at a time."""
    from modalrec.data.vocab import Vocabulary
    from modalrec.features.store import FeatureStore
    from modalrec.seeding import numpy_rng

    vocab = Vocabulary(f"i{i}" for i in range(n_items))
    writer = FeatureStore.writer(directory, vocab)
    writer.add("text", (FEATURE_DIM,), "float16", {"encoder": {"name": "random", "dim": FEATURE_DIM}})
    rng = numpy_rng(seed, f"scale/features/{n_items}")
    for lo in range(1, n_items + 1, CHUNK):
        idx = np.arange(lo, min(n_items + 1, lo + CHUNK))
        writer.write("text", idx, rng.standard_normal((len(idx), FEATURE_DIM), dtype=np.float32),
                     np.zeros(len(idx), bool))
    return writer.finalize()


def one_size(n_items: int, args: argparse.Namespace) -> dict[str, Any]:
    """Everything for one catalogue size, in this process (so VmHWM is this size's peak)."""
    from modalrec.data.sequences import TrainWindows
    from modalrec.data.splits import make_evalset
    from modalrec.evaluation.evaluator import Evaluator
    from modalrec.models.base import ModelContext
    from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
    from modalrec.models.towers.config import TowerConfig
    from modalrec.training.loop import TrainConfig, fit

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"items": n_items}
    t0 = time.perf_counter()
    inter = generate_log(n_items, args)
    test_mask = np.zeros(len(inter), bool)
    test_mask[inter.offsets[2:] - 1] = inter.seq_lengths()[1:] >= 2  # each user's last event
    train = inter.subset(~test_mask)
    eval_users = np.zeros(inter.n_users + 1, bool)
    eval_users[1 : args.eval_users + 1] = True
    evalset = make_evalset(inter, test_mask & eval_users[inter.user], train)
    out.update(events=len(inter), users=inter.n_users, train_events=len(train), eval_events=len(evalset),
               generate_log_s=round(time.perf_counter() - t0, 2))
    with tempfile.TemporaryDirectory(prefix="modalrec_scale_", dir=args.work_dir) as tmp:
        t0 = time.perf_counter()
        store = write_store(Path(tmp) / "store", n_items, args.seed)
        out["write_store_s"] = round(time.perf_counter() - t0, 2)
        out["store_bytes"] = sum(f.stat().st_size for f in (Path(tmp) / "store").iterdir())
        with warnings.catch_warnings():  # the memmap is read-only on purpose; the model never writes to it
            warnings.simplefilter("ignore", UserWarning)
            feats = {"text": torch.from_numpy(store.array("text"))}  # [N + 1, 384] float16, memory-mapped
        missing = {"text": torch.from_numpy(store.missing("text").copy())}
        t0 = time.perf_counter()
        windows = TrainWindows(train, args.max_len)
        ctx = ModelContext(n_items=n_items, n_users=inter.n_users, train_item_counts=train.item_counts(),
                           item_features=feats, feature_missing=missing, seed=args.seed)
        model = SASRec(SASRecConfig(dim=args.dim, max_len=args.max_len, loss="sampled",
                                    tower=TowerConfig(kind="text")), ctx).to(args.device)
        out["build_model_s"] = round(time.perf_counter() - t0, 2)
        steps_per_epoch = windows.num_batches(args.batch_size)
        cfg = TrainConfig(epochs=1, batch_size=args.batch_size, seed=args.seed, progress=False, amp="off",
                          validate_first=False, device=args.device)
        fit(model, windows, TrainConfig(**{**cfg.__dict__, "max_steps": 1}))  # warm-up step, not timed
        w0, c0 = time.perf_counter(), time.process_time()
        hist = fit(model, windows, TrainConfig(**{**cfg.__dict__, "max_steps": args.steps, "seed": args.seed + 1}))
        synchronize(args.device)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        out["train"] = {
            "windows": len(windows), "targets": windows.n_targets, "batch_windows": args.batch_size,
            "steps_timed": hist.steps, "steps_per_epoch": steps_per_epoch,
            "s_per_step": round(wall / hist.steps, 4), "cpu_s_per_step": round(cpu / hist.steps, 4),
            "epoch_s_extrapolated": round(wall / hist.steps * steps_per_epoch, 1),
            "epoch_cpu_s_extrapolated": round(cpu / hist.steps * steps_per_epoch, 1),
            "extrapolation": f"time of {hist.steps} steps (after 1 warm-up step) x {steps_per_epoch} steps per epoch",
        }
        ev = Evaluator(evalset, n_items, exclude_seen=True, max_len=args.max_len, device=args.device)
        w0, c0 = time.perf_counter(), time.process_time()
        rep = ev.run(model, "test", keep_ranks=False)
        out["eval"] = {"events": len(evalset), "wall_s": round(time.perf_counter() - w0, 2),
                       "cpu_s": round(time.process_time() - c0, 2), "score_block_rows": ev.batch_size,
                       "ndcg@10": rep.overall["ndcg@10"]}
        status = proc_status()
        out["memory"] = {"peak_rss_bytes": status.get("VmHWM"), "rss_anon_bytes_end": status.get("RssAnon"),
                         "rss_file_bytes_end": status.get("RssFile")}
        if args.device.startswith("cuda"):
            out["memory"]["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    return out


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that wall time covers it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def growth(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ratios of each measure between consecutive sizes."""
    keys = {"train_s_per_step": ("train", "s_per_step"), "train_cpu_s_per_step": ("train", "cpu_s_per_step"),
            "epoch_cpu_s_extrapolated": ("train", "epoch_cpu_s_extrapolated"),
            "eval_wall_s": ("eval", "wall_s"), "eval_cpu_s": ("eval", "cpu_s"),
            "peak_rss_bytes": ("memory", "peak_rss_bytes"), "peak_gpu_bytes": ("memory", "peak_gpu_bytes")}
    out = []
    for a, b in itertools.pairwise(sizes):
        row: dict[str, Any] = {"from_items": a["items"], "to_items": b["items"], "items": b["items"] / a["items"]}
        for name, (part, key) in keys.items():
            x, y = a[part].get(key), b[part].get(key)
            row[name] = round(y / x, 2) if x and y else None
        out.append(row)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--events-per-item", type=int, default=10, help="events = items x this (10^7 at 10^6 items)")
    p.add_argument("--events-per-user", type=int, default=10)
    p.add_argument("--eval-users", type=int, default=10_000, help="users whose last event is ranked")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per size")
    p.add_argument("--batch-size", type=int, default=256, help="training windows per step")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", help="cpu | cuda: where the model trains and scores (features move too)")
    p.add_argument("--work-dir", default=None, help="where the feature stores are written (default: system temp)")
    p.add_argument("--one-size", type=int, default=None, help=argparse.SUPPRESS)  # internal: a child process
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.one_size is not None:
        print(json.dumps(one_size(args.one_size, args)))
        return {}
    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    setup = {k: getattr(args, k) for k in ("events_per_item", "events_per_user", "eval_users", "steps", "batch_size",
                                           "dim", "max_len", "seed", "threads", "device")}
    child_args = [f"--{k.replace('_', '-')}={v}" for k, v in setup.items()]
    if args.work_dir:
        child_args.append(f"--work-dir={args.work_dir}")
    sizes = []
    for n in args.items:  # a fresh process per size: its peak RSS is that size's alone
        child = subprocess.run([sys.executable, __file__, *child_args, f"--one-size={n}"], check=True,
                               capture_output=True, text=True)
        sizes.append(json.loads(child.stdout.strip().splitlines()[-1]))
    result = {
        "benchmark": "scale",
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": args.threads, "nice": os.nice(0),
                    "platform": platform.platform(), "torch": torch.__version__, "loadavg_1_5_15_start": load_start},
        "setup": setup,
        "device": args.device,
        "model": "SASRec, text content tower over a memory-mapped 384-d float16 FeatureStore, sampled softmax "
                 "(100 shared uniform negatives)",
        "sizes": sizes,
        "growth": growth(sizes),
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    result["machine"]["loadavg_1_5_15_end"] = [round(x, 2) for x in os.getloadavg()]
    emit_json(result, args.out)
    return result


if __name__ == "__main__":
    main()

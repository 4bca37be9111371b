"""DDP scaling: training samples/s of SASRec with 1 and 2 processes (gloo on CPU, nccl on GPUs).

Each world size starts its processes with torch.multiprocessing (127.0.0.1, a free port), trains
through the real loop (`fit(..., distributed=DistributedTraining(...))`) on the built-in synthetic
dataset with the same GLOBAL batch, and times one epoch of `--steps` full optimizer steps after a
warm-up epoch. samples/s = steps * global batch / (slowest rank's epoch time). On CPU the cores are
split between the processes (threads per process = cores // world) so every run uses the same cores;
a run spec "WxT" fixes T threads per process (default runs: 1 process on all cores, 1 process on
one thread -- the per-process compute of the 2-process run --, and 2 processes).
The load average before and after is recorded: on a shared machine it bounds what the numbers mean.

    nice -n 10 python benchmarks/ddp_scaling.py [--runs 1,1x1,2] [--device auto|cpu|cuda] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, args: dict[str, Any], out: str) -> None:
    from modalrec.data.sequences import TrainWindows
    from modalrec.data.sources import load_dataset
    from modalrec.data.splits import leave_one_out
    from modalrec.models.base import ModelContext
    from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
    from modalrec.parallel import Launch, all_reduce, destroy_process_group, init_process_group
    from modalrec.training.distributed import DistributedTraining
    from modalrec.training.loop import TrainConfig, fit

    torch.set_num_threads(args["threads"])
    session = init_process_group(Launch(rank, world, rank, world), backend=args["backend"], device=args["device"],
                                 init_method=f"tcp://127.0.0.1:{port}", timeout_s=600)
    try:
        ds = load_dataset("synthetic", n_users=args["users"], n_items=args["items"], seed=0)
        split = leave_one_out(ds.interactions)
        windows = TrainWindows(split.train, args["max_len"])
        ctx = ModelContext.for_split(split, seed=0)
        model = SASRec(SASRecConfig(dim=args["dim"], n_layers=2, n_heads=2, dropout=0.2, max_len=args["max_len"],
                                    loss="ce"), ctx)
        cfg = TrainConfig(epochs=2, batch_size=args["batch_size"], lr=1e-3, patience=0, progress=False, seed=0,
                          device=session.device,
                          max_steps_per_epoch=args["steps"], amp="off")
        # world 1 is the plain loop (no DDP wrapper), the baseline a single-process user gets
        hook = DistributedTraining(rank=rank, world_size=world) if world > 1 else None
        hist = fit(model, windows, cfg, distributed=hook) if hook else fit(model, windows, cfg)
        (timed,) = all_reduce([hist.epoch_seconds[1]], "max")  # epoch 1 warms up; epoch 2 is timed
        if rank == 0:
            result = {"world_size": world, "threads_per_process": args["threads"], "device": cfg.device,
                      "backend": session.backend if world > 1 else "none (plain loop)", "n_windows": len(windows),
                      "steps": hist.steps // 2, "epoch_seconds": round(timed, 4),
                      "samples_per_s": round(args["steps"] * args["batch_size"] / timed, 1),
                      "train_loss": [round(x, 5) for x in hist.train_loss]}
            Path(out).write_text(json.dumps(result))
    finally:
        destroy_process_group()


def run(world: int, args: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        torch.multiprocessing.start_processes(_worker, args=(world, _free_port(), args, out), nprocs=world,
                                              join=True, start_method="spawn")
        return json.loads(Path(out).read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="1,1x1,2", help="world sizes, WxT = W processes of T threads")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=256, help="global batch")
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    p.add_argument("--out")
    a = p.parse_args()
    cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    cores = os.cpu_count() or 1
    specs = [(int(w), int(t) if t else None) for w, _, t in (r.partition("x") for r in a.runs.split(","))]
    if cuda:
        specs = [(w, t) for w, t in specs if w <= torch.cuda.device_count()]  # one GPU per process (nccl)
    load_before = os.getloadavg()
    runs = []
    for w, t in specs:
        args = {"users": a.users, "items": a.items, "dim": a.dim, "max_len": a.max_len, "batch_size": a.batch_size,
                "steps": a.steps, "device": "cuda" if cuda else "cpu",
                "backend": "nccl" if cuda else "gloo", "threads": t or max(1, cores // w)}
        started = time.perf_counter()
        runs.append({**run(w, args), "wall_s_incl_startup": round(time.perf_counter() - started, 1)})
    full = {r["world_size"]: r["samples_per_s"] for r in runs
            if r["threads_per_process"] == max(1, cores // r["world_size"])}  # runs using every core
    one = next((r["samples_per_s"] for r in runs if r["world_size"] == 1 and r["threads_per_process"] == 1), None)
    payload = {
        "benchmark": "ddp_scaling",
        "model": f"SASRec dim {a.dim}, 2 layers, full-softmax CE, max_len {a.max_len}",
        "data": f"synthetic n_users={a.users} n_items={a.items}, leave-one-out train windows",
        "global_batch": a.batch_size, "timed_steps": a.steps,
        "device": "cuda" if cuda else "cpu", "backend": "nccl" if cuda else "gloo",
        "gpus": torch.cuda.device_count() if cuda else 0, "cpu_count": cores,
        "torch": torch.__version__, "python": platform.python_version(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
        # vs 1 process on all cores, and vs 1 process on one thread (the 2-process run's per-process compute)
        "speedup_2_vs_1": round(full[2] / full[1], 3) if 1 in full and 2 in full else None,
        "speedup_2_vs_1x1": round(full[2] / one, 3) if 2 in full and one else None,
    }
    text = json.dumps(payload, indent=2)
    print(text)
    if a.out:
        from modalrec.io import write_json_atomic

        write_json_atomic(a.out, payload)


if __name__ == "__main__":
    main()

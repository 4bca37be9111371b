"""What `fit` costs on top of a bare PyTorch training loop: same SASRec, same batches, same optimizer step.

The epoch's batches are built once (ML-100K leave-one-out TRAIN windows, modalrec's default SASRec and
TrainConfig: AdamW lr 1e-3 without weight decay, global-norm clipping at 1.0, full-softmax CE) and both
sides consume the very same list: the bare loop is zero_grad / loss / backward / clip / step, nothing
else; `fit` is called as a user calls it (validation off, progress off) and timed as a whole, Trainer
construction included. Both start from the same initial weights. Repeats alternate the two sides so
that load on a shared machine hits both alike; the ratio uses each side's best wall (and process CPU)
time. samples/s counts training targets (non-PAD next-item labels).

    nice -n 10 python benchmarks/loop_overhead.py --repeats 5 --out benchmarks/results/loop_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from _output import emit_json

from modalrec.data.sequences import TrainWindows
from modalrec.data.sources.movielens import load_movielens
from modalrec.data.splits import leave_one_out
from modalrec.models.base import ModelContext
from modalrec.models.recipe import with_library_defaults
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.training.loop import TrainConfig, fit
from modalrec.types import SeqBatch

DEFAULT_DATA = Path(os.environ.get("MODALREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "ml-100k"


class FixedBatches:
    """A BatchSource that hands out the same prebuilt batches every epoch."""

    def __init__(self, batches: list[SeqBatch]) -> None:
        self.list = batches

    def batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[SeqBatch]:
        return iter(self.list)

    def num_batches(self, batch_size: int) -> int:
        return len(self.list)


def bare_loop(model: SASRec, batches: list[SeqBatch], cfg: TrainConfig) -> None:
    """The loop a user would write by hand, with fit's optimizer, clipping and device."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.epochs):
        for batch in batches:
            opt.zero_grad(set_to_none=True)
            loss = model.loss(batch.to(cfg.device))
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MovieLens-100K folder (u.data)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed run (both sides)")
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="windows per step")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ds = load_movielens(args.data, plots=False, posters=False)
    split = leave_one_out(ds.interactions)
    model_cfg = SASRecConfig()
    windows = TrainWindows(split.train, model_cfg.max_len)
    batches = list(windows.batches(args.batch_size, seed=0, epoch=1))
    targets = sum(int((b.targets > 0).sum()) for b in batches) * args.epochs
    ctx = ModelContext.for_split(split, seed=0)
    initial = SASRec(model_cfg, ctx).to(args.device)
    cfg = with_library_defaults(TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                                            progress=False, amp="off", seed=0))  # fit's values, for the bare loop
    source = FixedBatches(batches)
    runs: dict[str, Any] = {
        "bare_loop": lambda m: bare_loop(m, batches, cfg),
        "fit": lambda m: fit(m, source, cfg),
    }
    walls: dict[str, list[float]] = {k: [] for k in runs}
    cpus: dict[str, list[float]] = {k: [] for k in runs}
    load_start = os.getloadavg()
    for _ in range(args.repeats):
        for name, run in runs.items():
            model = copy.deepcopy(initial)
            w0, c0 = time.perf_counter(), time.process_time()
            run(model)
            walls[name].append(time.perf_counter() - w0)
            cpus[name].append(time.process_time() - c0)
    best = {k: min(v) for k, v in walls.items()}
    best_cpu = {k: min(v) for k, v in cpus.items()}
    result = {
        "benchmark": "loop_overhead",
        "dataset": "ml-100k (leave-one-out TRAIN windows, max_len 50)",
        "model": "SASRec defaults (full-softmax CE)",
        "train_config": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "grad_clip": cfg.grad_clip,
                         "batch_size": args.batch_size, "epochs_per_run": args.epochs},
        "steps_per_run": len(batches) * args.epochs,
        "targets_per_run": targets,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "loadavg_1_5_15_start": [round(x, 2) for x in load_start],
        "loadavg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
        "runs_s": {k: [round(x, 4) for x in v] for k, v in walls.items()},
        "runs_cpu_s": {k: [round(x, 4) for x in v] for k, v in cpus.items()},
        "samples_per_s": {k: round(targets / v, 1) for k, v in best.items()},
        "samples_per_cpu_s": {k: round(targets / v, 1) for k, v in best_cpu.items()},
        # The acceptance ratio: fit's throughput over the bare loop's (1.0 = no overhead).
        "fit_over_bare_samples_per_s": round(best["bare_loop"] / best["fit"], 4),
        "fit_over_bare_samples_per_cpu_s": round(best_cpu["bare_loop"] / best_cpu["fit"], 4),
    }
    emit_json(result, args.out)


if __name__ == "__main__":
    main()

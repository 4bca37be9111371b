"""Worker side of the 2-process gloo tests (plain module: importable by torch.multiprocessing.spawn children).

One process group runs every distributed workload once (sharded encoding, DDP training with and
without gradient accumulation, sharded evaluation) and each rank writes what it saw to
`out/rank<r>.json`; the tests compare that with single-process runs in the parent.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modalrec.data.interactions import Interactions
from modalrec.data.splits import Split, leave_one_out
from modalrec.evaluation.evaluator import Evaluator
from modalrec.evaluation.sampled import SampledConfig
from modalrec.models.base import ModelContext
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig

GLOBAL_BATCH = 16
ENCODE = {"chunk_size": 8, "batch_size": 4, "progress": False, "device": "cpu"}
ENCODERS = {"text": "hashing:64", "image": "stats"}


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (all sockets held open until every port is known)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def encode_cli_args(root: Path, out: Path) -> list[str]:
    """`modalrec encode` on the small synthetic catalogue (hashing text + colour/texture stats images)."""
    return ["encode", "data.source=synthetic", "data.options.n_users=20", "data.options.n_items=45",
            f"data.options.image_dir={root / 'images'}", "data.options.image_size=16", "--text", "hashing:64",
            "--image", "stats", "--batch-size", "4", "--device", "cpu", "--no-progress", "--out", str(out)]


def cyclic_split(n_items: int = 30, n_users: int = 50, seed: int = 0) -> Split:
    """Planted pattern (item i is followed by i % n + 1), split leave-one-out."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(1, n_users + 1):
        start, length = int(rng.integers(1, n_items + 1)), int(rng.integers(6, 25))
        users += [u] * length
        items += [(start - 1 + t) % n_items + 1 for t in range(length)]
    inter = Interactions.from_arrays(np.array(users), np.array(items), np.arange(len(users)),
                                     n_users=n_users, n_items=n_items)
    return leave_one_out(inter)


def build_model(split: Split) -> SASRec:
    ctx = ModelContext.for_split(split, seed=0)
    return SASRec(SASRecConfig(dim=16, n_layers=1, n_heads=2, dropout=0.0, max_len=10, loss="ce"), ctx)


def train_config(**kw: Any) -> Any:
    from modalrec.training.loop import TrainConfig

    base = {"epochs": 3, "batch_size": GLOBAL_BATCH, "lr": 5e-3, "patience": 0, "progress": False, "seed": 0,
            "device": "cpu"}
    return TrainConfig(**{**base, **kw})


def evaluators(split: Split) -> dict[str, Evaluator]:
    """Several block sizes: uneven shards, and one block only (rank 1 then has no events)."""
    return {
        "b7_sampled": Evaluator(split.test, split.n_items, ks=(5, 10), max_len=10, batch_size=7,
                                sampled=SampledConfig(n=10, seed=3)),
        "b1000": Evaluator(split.test, split.n_items, ks=(5, 10), max_len=10, batch_size=1000),
    }


def deterministic() -> None:
    """One intra-op thread: CPU kernels then reduce in a fixed order, so reruns are bitwise equal.
    (torch.use_deterministic_algorithms only changes CUDA kernels and costs ~5 s of imports here.)"""
    torch.set_num_threads(1)


def synthetic_items(image_dir: Path) -> Any:
    from modalrec.data.sources import load_dataset

    return load_dataset("synthetic", n_users=20, n_items=45, image_dir=str(image_dir), image_size=16).items


def run_worker(rank: int, world: int, ports: list[int], out: str) -> None:
    import contextlib
    import io
    import os
    import sys
    import time

    from safetensors.torch import save_file

    from modalrec.cli.main import main
    from modalrec.data.sequences import TrainWindows
    from modalrec.evaluation.distributed import evaluate_sharded
    from modalrec.features.build import encode_catalogue
    from modalrec.parallel import Launch, barrier, destroy_process_group, init_process_group
    from modalrec.training.distributed import DistributedTraining
    from modalrec.training.loop import fit
    from modalrec.training.resume import TrainerCheckpoint

    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name], clock = round(time.perf_counter() - clock, 2), time.perf_counter()
        (Path(out) / f"rank{rank}.laps").write_text(json.dumps(seconds))  # what a timed-out parent reports

    deterministic()
    if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        # gloo otherwise binds to the address the host name resolves to, which a sandbox may not route
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    root = Path(out)
    result: dict[str, Any] = {"rank": rank}
    # 0. `modalrec encode` as torchrun starts it: the variables torchrun sets, env:// rendezvous
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(ports[1]), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world)})
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result["cli_encode"] = {"rc": main(encode_cli_args(root, root / "store_cli")), "stdout": stdout.getvalue()}
    lap("cli_encode")
    init_process_group(Launch(rank, world, rank, world), backend="gloo", device="cpu",
                       init_method=f"tcp://127.0.0.1:{ports[0]}", timeout_s=120)
    lap("init")
    saves: list[int] = []
    original_save = TrainerCheckpoint.save

    def counting_save(self: TrainerCheckpoint, epoch: int, t: Any) -> None:  # the real save, counted
        saves.append(epoch)
        original_save(self, epoch, t)

    TrainerCheckpoint.save = counting_save  # type: ignore[method-assign]
    try:
        # 1. sharded encoding: each rank its chunks, rank 0 finalises after the barrier
        summary = encode_catalogue(synthetic_items(root / "images"), root / "store_ddp", ENCODERS,
                                   shard=(rank, world), barrier=barrier, **ENCODE)
        lap("encode")
        result["encode"] = {"finalised": summary.finalised, "mode": summary.mode,
                            "encoded": {m: s.n_encoded for m, s in summary.modalities.items()}}
        barrier()

        # 2. DDP training, global batch 16, validated on a sharded evaluator, checkpoints by rank 0
        split = cyclic_split()
        valid = Evaluator(split.valid, split.n_items, ks=(5, 10), max_len=10, batch_size=9)
        for name, accumulate, batch in (("ddp", 1, GLOBAL_BATCH), ("ddp_accum2", 2, GLOBAL_BATCH // 2)):
            model = build_model(split)
            hook = DistributedTraining(rank=rank, world_size=world, accumulate=accumulate)
            cfg = train_config(batch_size=batch, checkpoint_dir=str(root / f"ckpt_{name}"), patience=2)
            hist = fit(model, TrainWindows(split.train, 10), cfg,
                       validate=lambda m: evaluate_sharded(valid, m, "valid"), distributed=hook)
            result[name] = {"train_loss": hist.train_loss, "valid": hist.valid, "best_epoch": hist.best_epoch,
                            "steps": hist.steps, "step_losses": hook.step_losses}
            if rank == 0:
                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / f"{name}.safetensors"))
            lap(name)
            if name == "ddp":  # 3. sharded evaluation of the trained and of an untrained model
                for tag, m in (("eval", model), ("eval_init", build_model(split))):
                    result[tag] = {k: evaluate_sharded(ev, m, "test").to_dict(include_ranks=True)
                                   for k, ev in evaluators(split).items()}
                lap("eval")
        result["checkpoint_saves"] = saves
        result["seconds"] = seconds
        (root / f"rank{rank}.json").write_text(json.dumps(result, default=str))
    finally:
        TrainerCheckpoint.save = original_save  # type: ignore[method-assign]
        destroy_process_group()

"""`torchrun --nproc_per_node 2 -m modalrec train` (gloo on CPU, 127.0.0.1, a free port) against one process.

The real launcher end to end: torchrun's rendezvous and variables, the CLI's process group, sharded
feature encoding inside the pipeline, DDP training, sharded evaluation, rank-0-only output. Marked
slow: three fresh Python processes import torch (about 20 s on a busy 2-core machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_workers import free_ports

RTOL = 1e-5  # see test_ddp.py: same global batch, different float32 summation order

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                       reason="torch.distributed with gloo is required"),
]


def overrides(tmp: Path, name: str) -> list[str]:
    return ["data.source=synthetic", "data.options.n_users=40", "data.options.n_items=30", "model.name=sasrec",
            "model.params.dim=16", "model.params.tower.kind=text", "model.params.n_layers=1", "model.params.dropout=0.0", "model.params.max_len=10",
            "train.epochs=2", "train.batch_size=16", "train.progress=false", "features.text=hashing:64",
            f"features.cache_dir={tmp / ('cache_' + name)}", f"output_dir={tmp / 'runs'}", f"name={name}"]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_torchrun_train_matches_single_process(tmp_path: Path) -> None:
    from modalrec.cli.main import main

    (port,) = free_ports(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "modalrec", "train", *overrides(tmp_path, "ddp")]
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| overall |") == 1, "only rank 0 prints the report"
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["world_size"] == 2

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *overrides(tmp_path, "single")]) == 0
    finally:
        torch.set_num_threads(n)
    runs = tmp_path / "runs"
    ddp, single = (json.loads((runs / k / "manifest.json").read_text()) for k in ("ddp", "single"))
    assert ddp["distributed"] == {"world_size": 2, "accumulate": 1, "global_batch": 16}
    np.testing.assert_allclose(ddp["history"]["train_loss"], single["history"]["train_loss"], rtol=RTOL)
    for got, want in zip(ddp["history"]["valid"], single["history"]["valid"]):
        np.testing.assert_allclose([got[k] for k in want], [want[k] for k in want], rtol=RTOL, atol=1e-9)
    assert ddp["history"]["best_epoch"] == single["history"]["best_epoch"]
    # sharded encoding inside the pipeline gives the single-process feature store, byte for byte
    (ddp_store,), (single_store,) = (list((tmp_path / f"cache_{k}").iterdir()) for k in ("ddp", "single"))
    assert ddp_store.name == single_store.name and tree_bytes(ddp_store) == tree_bytes(single_store)
    assert (runs / "ddp" / "model").is_dir() and (runs / "ddp" / "train_state" / "trainer.json").is_file()

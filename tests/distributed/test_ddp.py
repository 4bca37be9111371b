"""Two gloo processes on CPU (torch.multiprocessing.spawn on 127.0.0.1, a free port) against one process.

Tolerance of the loss-curve comparison: 1e-5 relative. DDP computes the same global-batch loss as
one process, but sums per-rank partial means in a different order (and all-reduces gradients), so
float32 rounding differs at the ~1e-7 level; with dropout 0 and one thread (deterministic CPU kernels)
the curves agree far inside 1e-5 over a few steps. Final weights are compared with atol 1e-5: Adam
divides by sqrt(v), so a parameter whose gradient is ~0 turns 1e-7 rounding into ~1e-6 steps.
Encoding and evaluation must be exact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ddp_workers import (
    ENCODE,
    ENCODERS,
    GLOBAL_BATCH,
    build_model,
    cyclic_split,
    deterministic,
    encode_cli_args,
    evaluators,
    free_ports,
    run_worker,
    synthetic_items,
    train_config,
)

from modalrec.data.sequences import TrainWindows
from modalrec.evaluation.evaluator import Evaluator
from modalrec.features.build import encode_catalogue
from modalrec.training.distributed import DistributedTraining, ShardedSource
from modalrec.training.loop import fit

RTOL = 1e-5
WEIGHT_ATOL = 1e-5
WORLD = 2
DDP_DEADLINE_S = 300  # the whole workload takes ~20-60 s on a busy 2-core machine

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is required")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    deterministic()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, single_thread: None) -> tuple[Path, list[dict[str, Any]]]:
    """One 2-process gloo group runs every workload once; returns (directory, per-rank results)."""
    out = tmp_path_factory.mktemp("ddp")
    synthetic_items(out / "images")  # write the pictures once, before the workers read them
    # spawn, not fork: a fork copies whatever locks the parent's thread pools (OpenMP, Arrow, tokenizers)
    # held at that instant, and a child that inherits a held lock waits forever. Daemon children and a
    # deadline turn any hang (a stuck rendezvous, a peer that died in a collective) into a failure here.
    ctx = torch.multiprocessing.start_processes(run_worker, args=(WORLD, free_ports(2), str(out)), nprocs=WORLD,
                                                join=False, daemon=True, start_method="spawn")
    deadline = time.monotonic() + DDP_DEADLINE_S
    while not ctx.join(timeout=2):  # raises if a worker raised
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            laps = {p.name: p.read_text() for p in out.glob("rank*.laps")}
            pytest.fail(f"the {WORLD} gloo workers did not finish within {DDP_DEADLINE_S} s; progress: {laps}")
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.fixture(scope="module")
def reference(ddp_run: tuple[Path, list[dict[str, Any]]]) -> dict[str, Any]:
    """Single-process training with the same global batch and the plain loop (no distributed hook)."""
    split = cyclic_split()
    valid = Evaluator(split.valid, split.n_items, ks=(5, 10), max_len=10, batch_size=9)
    model = build_model(split)
    hist = fit(model, TrainWindows(split.train, 10), train_config(patience=2),
               validate=lambda m: valid.run(m, name="valid"))
    return {"split": split, "model": model, "hist": hist}


def test_sharded_encoding_is_byte_identical(ddp_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    out, ranks = ddp_run
    ref = encode_catalogue(synthetic_items(out / "images"), tmp_path / "store_single", ENCODERS, **ENCODE)
    assert ref.finalised
    assert [r["encode"]["finalised"] for r in ranks] == [True, False], "only rank 0 finalises"
    for modality in ENCODERS:  # each rank encoded a real share (4 and 2 chunks of 8 of 45 items)
        assert [r["encode"]["encoded"][modality] for r in ranks] == [24, 21]
    got, want = tree_bytes(out / "store_ddp"), tree_bytes(tmp_path / "store_single")
    assert sorted(got) == sorted(want) and got == want
    assert not (out / "store_ddp.partial").exists(), "shard chunks are cleaned up after finalisation"


def test_encode_cli_under_torchrun_variables(ddp_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`modalrec encode` reads RANK / WORLD_SIZE / ..., joins the group, and rank 0 alone reports."""
    from modalrec.cli.main import main

    out, ranks = ddp_run
    assert main(encode_cli_args(out, tmp_path / "store_single")) == 0
    assert [r["cli_encode"]["rc"] for r in ranks] == [0, 0]
    assert '"finalised": true' in ranks[0]["cli_encode"]["stdout"] and ranks[1]["cli_encode"]["stdout"] == ""
    assert tree_bytes(out / "store_cli") == tree_bytes(tmp_path / "store_single")


@pytest.mark.parametrize("run", ["ddp", "ddp_accum2"])
def test_ddp_loss_curve_matches_single_process(ddp_run: tuple[Path, list[dict[str, Any]]],
                                               reference: dict[str, Any], run: str) -> None:
    out, ranks = ddp_run
    hist = reference["hist"]
    r0, r1 = ranks[0][run], ranks[1][run]
    assert r0 == r1, "every rank reports the same all-reduced losses and validation numbers"
    n_windows = len(TrainWindows(reference["split"].train, 10))
    assert r0["steps"] == hist.steps == 3 * -(-n_windows // GLOBAL_BATCH)
    np.testing.assert_allclose(r0["train_loss"], hist.train_loss, rtol=RTOL)
    assert r0["train_loss"][-1] < r0["train_loss"][0] - 0.1, "the model learns"
    for got, want in zip(r0["valid"], hist.valid):  # sharded validation of near-identical weights
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], [want[k] for k in want], rtol=RTOL, atol=1e-9)
    assert r0["best_epoch"] == hist.best_epoch
    from safetensors.torch import load_file

    weights = load_file(str(out / f"{run}.safetensors"))
    for name, value in reference["model"].state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=RTOL, atol=WEIGHT_ATOL)


def test_checkpoints_written_by_rank_zero_only(ddp_run: tuple[Path, list[dict[str, Any]]]) -> None:
    out, ranks = ddp_run
    assert ranks[0]["checkpoint_saves"] == [1, 2, 3, 1, 2, 3] and ranks[1]["checkpoint_saves"] == []
    meta = json.loads((out / "ckpt_ddp" / "trainer.json").read_text())
    assert meta["epoch"] == 3 and meta["history"]["train_loss"] == ranks[0]["ddp"]["train_loss"]


@pytest.mark.parametrize("name", ["b7_sampled", "b1000"])
@pytest.mark.parametrize("weights", ["trained", "untrained"])
def test_sharded_evaluation_equals_single_process(ddp_run: tuple[Path, list[dict[str, Any]]], name: str,
                                                  weights: str) -> None:
    from safetensors.torch import load_file

    out, ranks = ddp_run
    split = cyclic_split()
    model = build_model(split)
    if weights == "trained":  # the very weights the ranks evaluated
        model.load_state_dict(load_file(str(out / "ddp.safetensors")))
    single = evaluators(split)[name].run(model, name="test").to_dict(include_ranks=True)
    for r in ranks:
        got = r["eval" if weights == "trained" else "eval_init"][name]
        assert got["ranks"] == single["ranks"], "identical per-event ranks, in original event order"
        assert got["overall"] == single["overall"] and got["groups"] == single["groups"]
        assert got["counts"] == single["counts"]
        assert got["meta"]["distributed"]["world_size"] == WORLD
    assert any(k.startswith("sampled_") for k in single["overall"]) == (name == "b7_sampled")
    if weights == "untrained":  # a spread of ranks (the trained model ranks nearly every target first)
        assert len(set(single["ranks"])) > 10


def test_sharded_source_slices_the_same_permutation() -> None:
    """Each rank gets a disjoint contiguous slice of every global batch; together they are the batch."""
    windows = TrainWindows(cyclic_split().train, 10)
    single = list(windows.batches(GLOBAL_BATCH, seed=4, epoch=2))
    parts = [list(ShardedSource(windows, r, 3).batches(GLOBAL_BATCH, seed=4, epoch=2)) for r in range(3)]
    assert all(len(p) == len(single) for p in parts)
    for k, batch in enumerate(single):
        locals_ = [p[k][0] for p in parts]
        assert [len(b) for b in locals_] == [len(batch) * (r + 1) // 3 - len(batch) * r // 3 for r in range(3)]
        for field in ("items", "targets", "users", "timestamps", "target_ts"):
            torch.testing.assert_close(torch.cat([getattr(b, field) for b in locals_]), getattr(batch, field))
    grouped = list(ShardedSource(windows, 0, 1, accumulate=2).batches(GLOBAL_BATCH, seed=4, epoch=2))
    assert len(grouped) == ShardedSource(windows, 0, 1, accumulate=2).num_batches(GLOBAL_BATCH) == -(-len(single) // 2)


def test_accumulation_in_one_process_matches_the_larger_batch(single_thread: None) -> None:
    split = cyclic_split()
    a, b = build_model(split), build_model(split)
    ha = fit(a, TrainWindows(split.train, 10), train_config(epochs=2, batch_size=2 * GLOBAL_BATCH))
    hook = DistributedTraining(accumulate=2)
    hb = fit(b, TrainWindows(split.train, 10), train_config(epochs=2, batch_size=GLOBAL_BATCH), distributed=hook)
    np.testing.assert_allclose(hb.train_loss, ha.train_loss, rtol=RTOL)
    assert hb.steps == ha.steps and len(hook.step_losses) == hb.steps

"""The cost meters (modalrec.costs) on known answers: a layer's parameter count, a block of memory, files of
known size."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from modalrec.costs import PeakMemory, dir_size_bytes, peak_memory, total_parameters, trainable_parameters


def test_parameter_counts() -> None:
    layer = torch.nn.Linear(3, 4)  # 12 weights + 4 biases
    assert trainable_parameters(layer) == total_parameters(layer) == 16
    layer.weight.requires_grad_(False)
    assert trainable_parameters(layer) == 4 and total_parameters(layer) == 16
    assert trainable_parameters(object()) == 0  # count-based models have no parameters


def test_peak_memory_sees_a_block_allocated_inside_the_block() -> None:
    with PeakMemory("cpu") as mem:
        block = np.ones(8 * 2**20)  # 64 MiB of float64, every page written
        time.sleep(0.05)  # a few sampling intervals
        del block
    out = mem.as_dict()
    assert out["memory_kind"] == "cpu_rss_sampled"
    assert 0.9 * 64 <= out["peak_memory_above_start_mb"] < 4 * 64
    lifetime, kind = peak_memory("cpu")  # the process's peak includes the block's
    assert kind == "process_max_rss" and lifetime >= 0.9 * mem.peak_bytes


def test_dir_size_counts_files_under_every_path(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "d" / "sub" / "b.bin").write_bytes(b"x" * 20)
    (tmp_path / "f.bin").write_bytes(b"x" * 5)
    assert dir_size_bytes([tmp_path / "d", tmp_path / "f.bin", tmp_path / "missing"]) == 35

"""What a run costs, measured one way everywhere: peak memory, trainable parameters, size on disk."""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from typing_extensions import Self

from modalrec.devices import resolve_device


def trainable_parameters(model: Any) -> int:
    """Parameters an optimizer would update (requires_grad); 0 for anything that is not a module."""
    if not isinstance(model, torch.nn.Module):
        return 0
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def total_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters())) if isinstance(model, torch.nn.Module) else 0


def peak_memory(device: str | torch.device) -> tuple[int, str]:
    """(bytes, kind): CUDA's peak allocation since the last reset, else the process's peak resident set."""
    device = torch.device(resolve_device(device) if isinstance(device, str) else device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    return _max_rss_bytes(), "process_max_rss"


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS reports bytes, Linux KiB


def _rss_bytes() -> int:
    """The resident set now (/proc), else the lifetime peak where /proc is absent."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _max_rss_bytes()


class PeakMemory:
    """Peak memory while the `with` block runs (unlike `peak_memory`, which covers the whole process).

    CUDA: torch.cuda.max_memory_allocated (reset at entry), bytes. CPU: resident set size sampled from
    /proc/self/statm every `interval` seconds by a thread (peak and peak minus the RSS at entry), bytes.
    """

    def __init__(self, device: str | torch.device = "cpu", interval: float = 0.005):
        self.device, self.interval = torch.device(device), float(interval)
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "cpu_rss_sampled"
        self.peak_bytes = 0
        self.start_bytes = 0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
            return self
        self.start_bytes = self.peak_bytes = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        assert self._stop is not None
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        assert self._stop is not None and self._thread is not None
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    def as_dict(self) -> dict[str, float | str]:
        return {"memory_kind": self.kind, "peak_memory_mb": self.peak_bytes / 2**20,
                "peak_memory_above_start_mb": (self.peak_bytes - self.start_bytes) / 2**20}


def dir_size_bytes(paths: Sequence[str | Path]) -> int:
    """Total size on disk of the files under `paths` (files or directories; missing ones count 0)."""
    total = 0
    for p in map(Path, paths):
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total

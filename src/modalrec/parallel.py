"""torch.distributed helpers shared by the encode, train and evaluate paths (torchrun-compatible)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


@contextlib.contextmanager
def shard_of_this_process() -> Iterator[tuple[int, int] | None]:
    """Yields (rank, world) when running under an initialised process group, else None (no sharding)."""
    if not is_distributed():
        yield None
        return
    yield rank_and_world()


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()

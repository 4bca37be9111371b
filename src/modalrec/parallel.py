"""torch.distributed helpers shared by the encode, train and evaluate paths (torchrun-compatible).

Everything here runs on PyTorch's own engine (torch.distributed process groups: `gloo` on CPU,
`nccl` on GPUs). Library code never reads environment variables: the CLI, as the entry point, turns
torchrun's variables into a `Launch` with `launch_from_env(os.environ)` and opens a
`distributed_session(launch, ...)`; everything below works from the initialised process group.

Collectives on tensors use `comm_device()` (the current CUDA device under nccl, else the CPU).
Objects are exchanged as JSON bytes (`broadcast_json`), never pickled.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from modalrec.devices import resolve_device
from modalrec.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a job: global rank, world size, rank and process count on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.local_rank < max(self.local_world_size, 1)):
            raise ConfigError(f"invalid launch: rank {self.rank} of {self.world_size}, local rank "
                              f"{self.local_rank} of {self.local_world_size}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Session:
    """An initialised process group: the launch, the backend in use and this process's device."""

    launch: Launch
    backend: str
    device: str  # "cpu" or "cuda:<local_rank>"

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def is_main(self) -> bool:
        return self.launch.is_main


def launch_from_env(env: Mapping[str, str]) -> Launch | None:
    """The Launch described by torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)
    in `env` (the caller passes os.environ); None when the process was not started by a launcher."""
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None

    def num(name: str, default: int | None = None) -> int:
        raw = env.get(name)
        if raw is None:
            if default is None:
                raise ConfigError(f"environment variable {name} is missing (set by torchrun)")
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None

    world = num("WORLD_SIZE")
    return Launch(num("RANK"), world, num("LOCAL_RANK", 0), num("LOCAL_WORLD_SIZE", world))


def default_backend(device: str) -> str:
    return "nccl" if str(device).startswith("cuda") else "gloo"


def init_process_group(launch: Launch, backend: str = "auto", device: str = "auto", init_method: str = "env://",
                       timeout_s: float | None = None) -> Session:
    """Initialise the default process group for `launch`; pins the local GPU when the device is CUDA.

    init_method "env://" is what torchrun expects (it publishes its rendezvous store there); tests may
    pass "tcp://127.0.0.1:PORT".
    """
    import torch
    import torch.distributed as dist

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    dev = resolve_device(device, launch.local_rank)
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))  # plain "cuda" now means this process's GPU
    chosen = default_backend(dev) if backend == "auto" else backend
    if chosen == "nccl" and not dev.startswith("cuda"):
        raise ConfigError("backend 'nccl' needs a CUDA device; use 'gloo' on CPU")
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed support")
    kwargs: dict[str, Any] = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
    dist.init_process_group(chosen, init_method=init_method, rank=launch.rank, world_size=launch.world_size,
                            **kwargs)
    barrier()  # creating a group is not a synchronisation point: start work only once every rank is in
    log.info("process group: rank %d of %d, backend %s, device %s", launch.rank, launch.world_size, chosen, dev)
    return Session(launch, chosen, dev)


def destroy_process_group() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(launch: Launch | None, backend: str = "auto", device: str = "auto",
                        init_method: str = "env://", timeout_s: float | None = None) -> Iterator[Session | None]:
    """A process group for the duration of the block; yields None for a plain single-process run."""
    if launch is None or launch.world_size == 1 or is_distributed():
        yield None
        return
    session = init_process_group(launch, backend, device, init_method, timeout_s)
    yield session
    # Only after a normal exit, and all ranks together: no rank closes its connections while a peer
    # is still working (rank 0 writing the run directory), and a rank that failed does not block in
    # teardown while the others wait in a collective (its exception ends the process; the launcher
    # then stops the rest).
    barrier()
    destroy_process_group()


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


def comm_device() -> Any:
    """Device for collective tensors: the current GPU under nccl, else the CPU."""
    import torch
    import torch.distributed as dist

    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if is_distributed():
        import torch
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce(values: Sequence[float], op: str = "sum") -> list[float]:
    """Element-wise sum / max / min of a few float64 numbers over ranks (identity outside a group)."""
    if not is_distributed():
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=comm_device())  # [V]
    dist.all_reduce(t, op=ops[op])
    return [float(v) for v in t.cpu().tolist()]


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one."""
    return all_reduce([1.0 if flag else 0.0], "max")[0] > 0


def all_gather_rows(local: Any, counts: Sequence[int]) -> list[Any]:
    """Gather a [n_r, ...] tensor from every rank r, where counts[r] = n_r is known to all ranks.

    Collectives need equal shapes, so rows are padded to max(counts) and trimmed after. Returns the
    per-rank tensors (on the CPU) in rank order.
    """
    import torch
    import torch.distributed as dist

    rank, world = rank_and_world()
    if int(local.shape[0]) != int(counts[rank]):
        raise ValueError(f"rank {rank} holds {int(local.shape[0])} rows, counts say {counts[rank]}")
    if world == 1:
        return [local.cpu()]
    width = max(max(counts), 1)
    dev = comm_device()
    padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=dev)  # [max n, ...]
    padded[: local.shape[0]] = local.to(dev)
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return [t[:c].cpu() for t, c in zip(out, counts)]


def broadcast_json(obj: Any, src: int = 0) -> Any:
    """`obj` from rank `src` on every rank, sent as JSON bytes (NaN allowed; unknown types as str)."""
    if not is_distributed():
        return obj
    import torch
    import torch.distributed as dist

    rank, dev = dist.get_rank(), comm_device()
    data = json.dumps(obj, default=str).encode() if rank == src else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=dev)  # [1]
    dist.broadcast(size, src)
    if rank == src:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)  # [n]
    else:
        buf = torch.empty(int(size.item()), dtype=torch.uint8, device=dev)  # [n]
    dist.broadcast(buf, src)
    return obj if rank == src else json.loads(bytes(buf.cpu().numpy().tobytes()).decode())

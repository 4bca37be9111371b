"""DistributedDataParallel training: the Trainer's DDP step strategy, `Trainer(..., strategy=DistributedTraining(...))`
(or `fit(..., distributed=...)`).

Data: `cfg.batch_size` stays the GLOBAL batch. Every rank walks the same seeded permutation of the
training windows (the source's own per-epoch shuffle) and, of each global batch, takes its disjoint
contiguous slice (rows [B*r/W, B*(r+1)/W)). TrainWindows collates only that slice; any other source's
batches are sliced along dim 0. With `accumulate=k`, k consecutive global batches make one optimizer
step (gradients of the first k-1 stay local under DDP's `no_sync`), so one step sees the rows a
single process sees with batch_size * k.

Gradients: each rank's mean loss is scaled by w_r * W / sum(w) before backward, where w_r is the
number of terms its loss averages over, as the model declares (`loss_terms`: next-item targets of
training windows, rows of pairs). DDP averages over the W ranks, so the step's gradient is the
gradient of the mean over all terms of the global batch -- what single-process training computes --
even when ranks hold different numbers of targets. Reported losses are all-reduced the same way.

Decisions: the validation result is broadcast from rank 0 (as JSON), so every rank takes the same
improved / early-stop / plateau decision from the same numbers. Only rank 0 writes checkpoints and
logs (the Trainer asks `is_main`); every rank reads a checkpoint to resume, and ranks that disagree on
the epoch (a checkpoint_dir not shared by all nodes) stop with an error instead of hanging.

Randomness: with W > 1 each rank reseeds dropout (the global torch RNG) and the model's samplers
(`reseed`) from (seed, epoch, rank), so ranks draw independent masks and negatives. Stateful,
event-ordered models (TGN: `observe`) are not data-parallel and are refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.evaluation.report import Report
from modalrec.parallel import all_reduce, broadcast_json, is_distributed, rank_and_world
from modalrec.seeding import derive_seed
from modalrec.training.loop import StepStrategy

log = logging.getLogger(__name__)


@dataclass
class DistributedTraining(StepStrategy):
    """The DDP step strategy of a Trainer (also usable with world_size 1 for `accumulate` alone)."""

    rank: int = 0
    world_size: int = 1
    accumulate: int = 1  # global batches per optimizer step
    find_unused_parameters: bool = False  # DDP option: models whose loss skips some parameters
    broadcast_buffers: bool = False  # buffers here are data (feature tables), identical on all ranks
    step_losses: list[float] = field(default_factory=list)  # global loss of each optimizer step
    _net: Any = field(default=None, init=False, repr=False)
    _net_model: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.accumulate < 1:
            raise ConfigError(f"accumulate must be >= 1, got {self.accumulate}")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is outside world size {self.world_size}")
        if self.world_size > 1 and rank_and_world() != (self.rank, self.world_size):
            raise ConfigError(f"rank {self.rank} of {self.world_size} needs an initialised process group of "
                              f"that size (got {rank_and_world()}); see modalrec.parallel.init_process_group")

    @classmethod
    def from_process_group(cls, **options: Any) -> DistributedTraining:
        """Rank and world size of the initialised process group (1 process when there is none)."""
        rank, world = rank_and_world()
        return cls(rank=rank, world_size=world, **options)

    @property
    def is_main(self) -> bool:  # type: ignore[override]
        return self.rank == 0

    def evaluate(self, evaluator: Any, model: Any, name: str = "test") -> Any:
        """The evaluator's Report with its events sharded over the ranks (identical on every rank)."""
        from modalrec.evaluation.distributed import evaluate_sharded

        return evaluate_sharded(evaluator, model, name, rank=self.rank, world=self.world_size)

    # --- the step strategy ----------------------------------------------------------------------------
    def prepare(self, source: Any, validate: Callable[[nn.Module], Any] | None) -> tuple[Any, Any]:
        """(sharded source yielding one list of local micro-batches per optimizer step, agreeing validate)."""
        sharded = ShardedSource(source, self.rank, self.world_size, self.accumulate)
        agreeing = functools.partial(_agreed_validation, validate) if validate and self.world_size > 1 else validate
        return sharded, agreeing

    def check(self, model: Any) -> None:
        if model.stateful:
            raise ConfigError(f"{type(model).__name__} is stateful (event-ordered memory) and cannot be "
                              "trained data-parallel; train it in one process")

    def begin_epoch(self, t: Any, epoch: int) -> None:
        lo, hi = all_reduce([epoch, -epoch], "max")
        if lo != -hi:
            raise ConfigError(f"ranks are at different epochs ({int(-hi)}..{int(lo)}): checkpoint_dir must be "
                              "on a filesystem that every rank reads")
        if self.world_size > 1:
            rank_seed = derive_seed(t.cfg.seed, f"fit/epoch{epoch}/rank{self.rank}")
            torch.manual_seed(rank_seed)
            t.model.reseed(rank_seed)
        self._network(t.model, t.device)

    def backward(self, t: Any, group: list[Any], epoch: int, step: int) -> float:
        """Backward of one global step's local micro-batches, each scaled so DDP's average is the mean over
        every loss term of the global batch; returns that global step loss (all-reduced)."""
        net, amp, scaler = self._net, t.amp_dtype, t.scaler
        group = [b.to(t.device) for b in group]
        weights = [float(t.model.loss_terms(b)) for b in group]
        (w_total,) = all_reduce([sum(weights)])
        local, bad = 0.0, 0.0
        for i, (batch, w) in enumerate(zip(group, weights)):
            last = i == len(group) - 1
            sync = contextlib.nullcontext() if last or self.world_size == 1 else net.no_sync()
            with sync:
                with torch.autocast(t.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    loss = net(batch)
                scaled = loss * (w * self.world_size / w_total if w_total > 0 else 0.0)
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            value = float(loss.detach())
            bad += 0.0 if math.isfinite(value) else 1.0
            local += value * w if w else 0.0
        loss_sum, n_bad = all_reduce([local, bad])
        if n_bad:  # every rank raises together, before the step: the weights stay finite
            raise FloatingPointError(f"non-finite training loss on {int(n_bad)} rank(s) at epoch {epoch}, "
                                     f"step {step + 1}")
        step_loss = loss_sum / w_total if w_total > 0 else 0.0
        self.step_losses.append(step_loss)
        return step_loss

    def _network(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module whose forward is the loss: DDP-wrapped when W > 1 (built once per model)."""
        if self._net is not None and self._net_model is model:
            return self._net
        net: nn.Module = LossModule(model)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Non-persistent buffers are data derived identically on every rank (feature tables, caches):
            # broadcasting them from rank 0 at wrap time would only cost time and memory.
            persistent = set(model.state_dict())
            ignore = [f"model.{k}" for k, _ in model.named_buffers() if k not in persistent]
            DDP._set_params_and_buffers_to_ignore_for_model(net, ignore)
            ids = [device.index if device.index is not None else torch.cuda.current_device()] \
                if device.type == "cuda" else None
            # torch >= 2.13 renamed broadcast_buffers (per-forward buffer sync) to forward_sync_buffers.
            sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters \
                else "broadcast_buffers"
            net = DDP(net, device_ids=ids, find_unused_parameters=self.find_unused_parameters,
                      **{sync: self.broadcast_buffers})
        self._net, self._net_model = net, model
        return net


class LossModule(nn.Module):
    """forward(batch) = model.loss(batch): DDP hooks `forward`, and the loop's models expose `loss`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model.loss(batch)


class ShardedSource:
    """This rank's share of `source`'s global batches, grouped `accumulate` per optimizer step.

    `num_batches(batch_size)` counts optimizer steps, so the loop's schedule and max_steps_per_epoch
    mean steps. `batches(...)` yields lists of local micro-batches.
    """

    def __init__(self, source: Any, rank: int = 0, world_size: int = 1, accumulate: int = 1) -> None:
        self.source, self.rank, self.world_size, self.accumulate = source, rank, world_size, accumulate

    def num_batches(self, batch_size: int) -> int:
        return -(-self.source.num_batches(batch_size) // self.accumulate)

    def part(self, n: int) -> slice:
        """This rank's rows of a global batch of n rows."""
        return slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def local_batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[Any]:
        """One local batch per global batch, in the source's (seeded, per-epoch) order."""
        if self.world_size == 1:
            yield from self.source.batches(batch_size, seed=seed, epoch=epoch)
            return
        from modalrec.data.sequences import TrainWindows

        if isinstance(self.source, TrainWindows):  # collate only this rank's rows of each global batch
            for idx in self.source.index_batches(batch_size, seed=seed, epoch=epoch):
                yield self.source.batch(idx[self.part(len(idx))])
            return
        for batch in self.source.batches(batch_size, seed=seed, epoch=epoch):
            yield slice_rows(batch, self.part(_rows(batch)))

    def batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[list[Any]]:
        group: list[Any] = []
        for batch in self.local_batches(batch_size, seed, epoch):
            group.append(batch)
            if len(group) == self.accumulate:
                yield group
                group = []
        if group:
            yield group


def _rows(batch: Any) -> int:
    if hasattr(batch, "__len__"):
        return len(batch)
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, torch.Tensor) and value.dim():
            return int(value.shape[0])
    raise TypeError(f"cannot tell the number of rows of a {type(batch).__name__}")


def slice_rows(batch: Any, rows: slice) -> Any:
    """The same batch dataclass with every per-row tensor cut to `rows`."""
    n = _rows(batch)
    changes = {f.name: getattr(batch, f.name)[rows] for f in dataclasses.fields(batch)
               if isinstance(getattr(batch, f.name), torch.Tensor) and getattr(batch, f.name).dim()
               and getattr(batch, f.name).shape[0] == n}
    return dataclasses.replace(batch, **changes)


def _agreed_validation(validate: Callable[[nn.Module], Any], model: nn.Module) -> Any:
    """Run `validate` on every rank (sharded evaluators need them all), then use rank 0's result."""
    result = validate(model)
    rank, _ = rank_and_world()
    payload = broadcast_json(_payload(result)) if is_distributed() else _payload(result)
    return result if rank == 0 else _from_payload(payload)


def _payload(result: Any) -> dict[str, Any]:
    if isinstance(result, Report):
        return {"kind": "report", "value": result.to_dict()}
    if isinstance(result, dict):
        return {"kind": "dict", "value": {str(k): float(v) for k, v in result.items() if isinstance(v, (int, float))}}
    return {"kind": "number", "value": float(result)}


def _from_payload(payload: dict[str, Any]) -> Any:
    if payload["kind"] == "report":
        return Report.from_dict(payload["value"])
    return payload["value"]

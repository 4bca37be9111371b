"""The one Trainer every trainable model uses (`Trainer(...).fit()`, or `fit(...)`).

It trains with AdamW, optional AMP (CUDA only), gradient clipping and
an LR schedule; validates every `eval_every` epochs on VALID, stops early after `patience` validations
without improvement, and restores the best weights. With `checkpoint_dir` it saves its full state
after every epoch and a rerun continues from the last finished epoch, giving the same weights as an
uninterrupted run (every epoch reseeds dropout and negative sampling from (seed, epoch)). How a step's
batches become gradients (one process, or DDP) is the Trainer's `StepStrategy`, chosen at construction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from modalrec import progress
from modalrec.costs import peak_memory, trainable_parameters
from modalrec.data.sequences import TrainWindows
from modalrec.devices import resolve_device
from modalrec.errors import ConfigError
from modalrec.evaluation.report import Report
from modalrec.models.base import Recommender, Training
from modalrec.models.recipe import with_library_defaults
from modalrec.seeding import derive_seed
from modalrec.training.ema import WeightAverage
from modalrec.training.logging import EpochLogger
from modalrec.training.resume import TrainerCheckpoint
from modalrec.training.schedule import LRSchedule

log = logging.getLogger(__name__)

AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass
class TrainConfig:
    # Fields marked "recipe" default to None: unset, filled by run_experiment from the model's training recipe
    # (models/recipe.py), else -- and always in a bare `fit` -- from the library default named here.
    epochs: int = 50
    batch_size: int = 256  # windows (sequence models) or rows per step; with batch_unit "targets": targets
    batch_unit: str | None = None  # recipe; "windows" (library) | "targets": as many windows as hold batch_size
    # targets on average (TrainWindows.windows_per_step); sources other than TrainWindows: one row = one target
    lr: float | None = None  # recipe; AdamW learning rate (library: 1e-3)
    weight_decay: float = 0.0  # AdamW, applied to matrices only (not biases, norms)
    grad_clip: float | None = None  # recipe; max global grad norm, 0 = off (library: 1.0)
    ema_decay: float | None = None  # recipe; validate and keep a moving average of the weights, 0 = off (library)
    window_stride: int | None = None  # recipe; sequence models: TrainWindows stride (library: max_len, no overlap)
    # causal sequence models (SASRec, GRU4Rec): each user's first training event is also a target, predicted from
    # an empty history, so a user with no history yet is scored by a trained state (TrainWindows.first_events)
    first_event_targets: bool = False
    patience: int = 5  # validations without improvement before stopping; 0 = never stop early
    monitor: str = "ndcg@10"  # a metric ("ndcg@10") or a group's metric ("cold_item/ndcg@10")
    monitor_mode: str = "max"  # "max" for ranking metrics, "min" for losses
    eval_every: int = 1
    validate_first: bool = True  # validate the untrained weights (epoch 0) so early stopping can keep them
    amp: str = "auto"  # "auto" (bf16, else fp16, on CUDA; off on CPU) | "off" | "bf16" | "fp16"
    scheduler: str = "none"  # "none" | "cosine" | "plateau"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    plateau_factor: float = 0.5  # plateau: multiply lr by this ...
    plateau_patience: int = 2  # ... after this many validations without improvement
    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: str | None = None
    log_dir: str | None = None
    progress: bool = True
    max_steps_per_epoch: int | None = None
    max_steps: int | None = None  # stop after this many optimizer steps in total (None: the epochs decide)
    # Wall-clock cap (seconds from the start of this `fit` call, validation included): the epoch in progress
    # stops at its next step and is validated as usual; no later epoch starts. For runs on a fixed time
    # budget; a resumed run counts that cut-short epoch as finished and starts a fresh budget.
    time_budget_s: float | None = None
    resume: bool = True

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ConfigError(f"train.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.monitor_mode not in ("max", "min"):
            raise ConfigError(f"train.monitor_mode must be 'max' or 'min', got {self.monitor_mode!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.eval_every < 1 or self.patience < 0:
            raise ConfigError(
                "train: epochs >= 0, batch_size >= 1, eval_every >= 1 and patience >= 0 required"
            )
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1) (0 = off), got {self.ema_decay!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"train.time_budget_s must be > 0 (None = no cap), got {self.time_budget_s!r}")
        if self.batch_unit not in (None, "windows", "targets"):
            raise ConfigError(f"train.batch_unit must be 'windows' or 'targets', got {self.batch_unit!r}")


class BatchSource(Protocol):
    def batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[Any]: ...

    def num_batches(self, batch_size: int) -> int: ...


@dataclass
class History:
    """What happened in `fit`; epochs are numbered from 1 and lists have one entry per epoch. Epoch 0 is the
    untrained model: `initial_valid` holds its validation and `best_epoch` is 0 when nothing beat it."""

    monitor: str = "ndcg@10"
    initial_valid: dict[str, float] | None = None  # VALID before any step (train.validate_first)
    train_loss: list[float] = field(default_factory=list)
    valid: list[dict[str, float] | None] = field(default_factory=list)  # None where not validated
    epoch_seconds: list[float] = field(default_factory=list)  # training time only
    epoch_steps: list[int] = field(default_factory=list)  # optimizer steps taken in each epoch
    valid_seconds: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # lr at the end of the epoch
    best_epoch: int | None = None
    best_metric: float | None = None
    seconds_to_best: float | None = None  # wall time (train + valid) until the best epoch was validated
    total_seconds: float = 0.0
    steps: int = 0
    stopped_early: bool = False
    out_of_time: bool = False  # train.time_budget_s ended the run
    resumed_from: int | None = None  # last finished epoch found in checkpoint_dir, if resumed
    peak_memory_bytes: int = 0
    peak_memory_source: str = ""  # "cuda_max_allocated" or "process_max_rss"
    trainable_params: int = 0

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def row(self, epoch: int) -> dict[str, Any]:
        """One epoch as a flat dict (for CSV / TensorBoard)."""
        i = epoch - 1
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": self.train_loss[i],
            "lr": self.lr[i],
            "train_seconds": round(self.epoch_seconds[i], 4),
        }
        for k, v in (self.valid[i] or {}).items():
            row[f"valid/{k}"] = v
        return row


class StepStrategy:
    """How one optimizer step's batches turn into gradients; chosen when the Trainer is built.

    `SingleProcess`: a step is one batch. `training.distributed.DistributedTraining`: each global batch is
    sharded over the ranks and micro-batches accumulate. Everything around the step -- optimizer groups,
    lr schedule, clipping, weight average, validation, checkpoints, history and cost meters -- is the
    Trainer's.
    """

    is_main = True  # this process writes checkpoints and logs

    def prepare(self, source: BatchSource, validate: Any) -> tuple[Any, Any]:
        """(the source the epochs iterate, the validate function) as this strategy needs them."""
        return source, validate

    def check(self, model: Recommender) -> None:
        """Refuse a model this strategy cannot train."""

    def begin_epoch(self, t: Trainer, epoch: int) -> None:
        """Called after the epoch's seeds are set and before its first step."""

    def backward(self, t: Trainer, batch: Any, epoch: int, step: int) -> torch.Tensor | float:
        """Run the step's loss backward (gradients were zeroed); return its (detached) loss. A non-finite
        loss raises FloatingPointError before any weight changes."""
        raise NotImplementedError


class SingleProcess(StepStrategy):
    """One process; one batch per optimizer step."""

    def backward(self, t: Trainer, batch: Any, epoch: int, step: int) -> torch.Tensor:
        batch = batch.to(t.device)
        with torch.autocast(t.device.type, dtype=t.amp_dtype or torch.float32, enabled=t.amp_dtype is not None):
            loss = t.model.loss(batch)
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"non-finite training loss {float(loss.detach())} at epoch {epoch}, "
                                     f"step {step + 1}")  # fmt: skip
        (t.scaler.scale(loss) if t.scaler is not None else loss).backward()
        return loss.detach().float()  # stays on the device: no host sync per step



class Trainer:
    """Trains a model (`loss(batch)`) on batches from `source`: AdamW (weight decay on matrices only),
    optional AMP (CUDA), gradient clipping, an lr schedule and a weight average; validates every
    `eval_every` epochs, stops early after `patience` validations without improvement and restores the
    best weights; with `checkpoint_dir` it saves its state after every epoch and resumes from it.

    `validate(model)` returns a Report, a dict of metrics, or a number; it
    is called under `torch.no_grad()` with the model in eval mode. Without it the final weights are kept.
    `strategy` (default: single process) decides how a step's batches become gradients -- the one epoch
    loop, `train_epoch`, is the same for every strategy. Staged and event-stream training (Recformer's
    two stages in training/recformer.py, TGN in training/events.py) run Trainers too.
    """

    def __init__(self, model: Recommender, source: BatchSource, cfg: TrainConfig | None = None,
                 validate: Callable[[torch.nn.Module], Any] | None = None,
                 strategy: StepStrategy | None = None) -> None:
        cfg = with_library_defaults(cfg or TrainConfig())
        if cfg.batch_unit == "targets" and isinstance(source, TrainWindows):  # a step of ~batch_size targets
            cfg = dataclasses.replace(cfg, batch_size=source.windows_per_step(cfg.batch_size))
        self.cfg = cfg  # batch_size in the source's rows from here on
        self.strategy = strategy or SingleProcess()
        if cfg.time_budget_s is not None and not isinstance(self.strategy, SingleProcess):
            raise ConfigError("train.time_budget_s needs a single process: ranks would stop at different steps")
        _check_trainable(model)
        self.strategy.check(model)
        self.source, self.validate = self.strategy.prepare(source, validate)
        self.model = model
        self.device = torch.device(resolve_device(cfg.device))
        model.to(self.device)
        self.amp_dtype = _amp_dtype(cfg.amp, self.device)
        n_batches = self.source.num_batches(cfg.batch_size)
        self.steps = min(n_batches, cfg.max_steps_per_epoch or n_batches)  # optimizer steps per epoch
        self.optimizer = _make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.schedule = LRSchedule(cfg, min(self.steps * cfg.epochs, cfg.max_steps or self.steps * cfg.epochs))
        self.hist = History(monitor=cfg.monitor, trainable_params=trainable_parameters(model))
        self.ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None  # validated instead of live weights
        # What a checkpoint captures besides the above (training/resume.py):
        self.bad = 0  # validations since the last improvement
        self.done = False
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_changed = False  # best_state was replaced in the epoch just finished
        self.deadline: float | None = None  # perf_counter() value at which train.time_budget_s runs out

    def fit(self) -> History:
        """Run the remaining epochs (resuming from `checkpoint_dir` when it holds a run) and return the History."""
        cfg, model, device = self.cfg, self.model, self.device
        writer = self.strategy.is_main
        ckpt = TrainerCheckpoint(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        if ckpt is not None and cfg.resume and ckpt.exists():
            saved = ckpt.load(model, self.optimizer, self.scaler, self.schedule, cfg, self.ema)
            self.hist, self.bad, self.done, self.best_state = History.from_dict(saved["history"]), *saved["loop"]
            self.hist.resumed_from = self.hist.epochs
            self.hist.trainable_params = trainable_parameters(model)
            log.info("resumed from %s after epoch %d", ckpt.dir, self.hist.epochs)
        logger = EpochLogger(cfg.log_dir) if cfg.log_dir and writer else None
        if logger is not None:
            logger.replace([self.hist.row(e) for e in range(1, self.hist.epochs + 1)])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.deadline = None if cfg.time_budget_s is None else time.perf_counter() + cfg.time_budget_s
        if cfg.validate_first and self.validate is not None and self.hist.epochs == 0 and not self.done:
            self.validate_initial()
        try:
            # Dropout draws from the global RNG: fork it so the caller's RNG state is left as found.
            with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                for epoch in range(self.hist.epochs + 1, cfg.epochs + 1):
                    if self.done or self.out_of_time():
                        self.hist.out_of_time |= not self.done
                        break
                    self.run_epoch(epoch)
                    if ckpt is not None and writer:
                        ckpt.save(epoch, self)
                    if logger is not None:
                        logger.log_epoch(self.hist.row(epoch))
        finally:
            if logger is not None:
                logger.close()
        if self.best_state is not None:
            _restore(model, self.best_state)
        elif self.ema is not None:
            self.ema.copy_to(model)
        hist = self.hist
        if self.validate is None and hist.epochs:
            hist.best_epoch, hist.seconds_to_best = hist.epochs, hist.total_seconds
        hist.peak_memory_bytes, hist.peak_memory_source = peak_memory(device)
        return hist

    def update(self, params: list[torch.nn.Parameter]) -> None:
        """One optimizer step on the accumulated gradients, then what follows every step: the lr schedule
        and the weight average."""
        optimizer_step(self.optimizer, self.scaler, params, self.cfg.grad_clip)
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def run_epoch(self, epoch: int) -> None:
        cfg, model, hist = self.cfg, self.model, self.hist
        epoch_seed = derive_seed(cfg.seed, f"fit/epoch{epoch}")
        torch.manual_seed(epoch_seed)
        model.reset_state()
        model.reseed(epoch_seed)
        t0 = time.perf_counter()
        loss = self.train_epoch(epoch)
        train_s = time.perf_counter() - t0
        hist.train_loss.append(loss)
        hist.epoch_seconds.append(train_s)
        hist.epoch_steps.append(self.schedule.step_count - hist.steps)
        hist.lr.append(self.schedule.current_lr)
        hist.steps = self.schedule.step_count

        metrics, valid_s, self.best_changed = None, 0.0, False
        hist.total_seconds += train_s
        if self.validate is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            metrics, value, _, valid_s = self._validate(epoch)
            hist.total_seconds += valid_s
        hist.valid.append(metrics)
        hist.valid_seconds.append(valid_s)
        if self.strategy.is_main:
            spent = hist.total_seconds / hist.epochs  # this run's seconds per epoch, validation included
            left = 0 if self.done else cfg.epochs - epoch
            text = progress.epoch_line(epoch, cfg.epochs, loss, spent, spent * left if left else None,
                                       cfg.monitor if metrics is not None else None,
                                       value if metrics is not None else None, self.best_changed)
            if cfg.progress:
                progress.line(text)
            else:
                log.info(text)

    def validate_initial(self) -> None:
        """Epoch 0: validate the weights before any step; they are kept if no epoch beats them."""
        metrics, value, _, valid_s = self._validate(0)
        self.hist.initial_valid = metrics
        self.hist.total_seconds += valid_s
        log.info("epoch 0 (untrained): %s %.4f (%.1fs)", self.cfg.monitor, value, valid_s)

    def _validate(self, epoch: int) -> tuple[dict[str, float], float, bool, float]:
        """Validate the current (or averaged) weights, keep them if they are the best so far, count
        validations without improvement: (metrics, monitored value, improved, seconds)."""
        cfg, model, hist = self.cfg, self.model, self.hist
        t1 = time.perf_counter()
        model.eval()
        with self.ema.swapped_in(model) if self.ema is not None and epoch else contextlib.nullcontext():
            with torch.no_grad():
                result = self.validate(model)
            valid_s = time.perf_counter() - t1
            value = _monitor_value(result, cfg.monitor)
            improved = _improved(value, hist.best_metric, cfg.monitor_mode)
            if improved:  # snapshot inside the block: the validated (averaged) weights are the ones kept
                self.best_state = _snapshot(model)
        model.train()
        if improved:
            hist.best_epoch, hist.best_metric = epoch, value
            hist.seconds_to_best = hist.total_seconds + valid_s
            self.bad, self.best_changed = 0, True
        elif epoch:
            self.bad += 1
            if cfg.patience and self.bad >= cfg.patience:
                self.done = hist.stopped_early = True
        if epoch:
            self.schedule.on_validation(value, improved)
        return _metrics_of(result, cfg.monitor), value, improved, valid_s

    def train_epoch(self, epoch: int) -> float:
        """The one training epoch: `steps` optimizer steps over the source's batches for this epoch."""
        cfg, model, opt = self.cfg, self.model, self.optimizer
        self.strategy.begin_epoch(self, epoch)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        total: torch.Tensor | float = 0.0
        n = 0
        batches = self.source.batches(cfg.batch_size, seed=cfg.seed, epoch=epoch)
        bar = progress.bar(batches, total=self.steps, desc=f"epoch {epoch}", enabled=cfg.progress and self.strategy.is_main)
        for batch in bar:
            if n >= self.steps or self._out_of_steps():
                break
            if self.out_of_time():
                self.hist.out_of_time = True
                break
            self.schedule.apply(opt)
            opt.zero_grad(set_to_none=True)
            total = total + self.strategy.backward(self, batch, epoch, n)
            self.update(params)
            n += 1
            if cfg.progress and self.strategy.is_main and n % 10 == 0:
                bar.set_postfix(loss=f"{float(total) / n:.4f}")
        bar.close()
        if self._out_of_steps():
            self.done = True
        return float(total) / max(n, 1)

    def _out_of_steps(self) -> bool:
        return self.cfg.max_steps is not None and self.schedule.step_count >= self.cfg.max_steps

    def out_of_time(self) -> bool:
        """train.time_budget_s has run out (only while `fit` runs)."""
        return self.deadline is not None and time.perf_counter() >= self.deadline


def fit(
    model: Recommender,
    source: BatchSource,
    cfg: TrainConfig | None = None,
    validate: Callable[[torch.nn.Module], Any] | None = None,
    distributed: StepStrategy | None = None,
) -> History:
    """`Trainer(model, source, cfg, validate, strategy=distributed).fit()`: train and return the History.
    `distributed`: a `training.distributed.DistributedTraining` for DDP / gradient accumulation."""
    return Trainer(model, source, cfg, validate, strategy=distributed).fit()


def _check_trainable(model: torch.nn.Module) -> None:
    name = type(model).__name__
    if not isinstance(model, Recommender):
        raise TypeError(f"{name} is not a modalrec model (models.base.Recommender)")
    if model.training_kind is Training.COUNTS:
        raise TypeError(f"{name} has no loss(batch); count-based models are fitted with fit_counts(split)")
    if not any(p.requires_grad for p in model.parameters()):
        raise TypeError(f"{name} has no trainable parameters; nothing for fit() to train")


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or mode == "off":
        return None  # autocast only on CUDA: CPU bf16 is slower and less accurate for these models
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; a parameter with an `lr_scale` attribute (e.g. a pretrained encoder fine-tuned inside a model
    trained from scratch) gets lr x lr_scale, which the lr schedule keeps (LRSchedule.apply)."""
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((p.dim() >= 2, float(getattr(p, "lr_scale", 1.0))), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale,
                               "lr": cfg.lr * scale} for (decay, scale), ps in sorted(groups.items(), reverse=True)],
                             lr=cfg.lr)


def _monitor_value(result: Any, monitor: str) -> float:
    if isinstance(result, Report):
        group, _, name = monitor.rpartition("/")
        value = result.metric(name, group or None)
        return float("nan") if value is None else float(value)  # None: no events to measure
    if isinstance(result, Mapping):
        if monitor not in result:
            raise ConfigError(
                f"train.monitor {monitor!r} is not among the validation metrics {sorted(result)}"
            )
        return float(result[monitor])
    if isinstance(result, (int, float)):
        return float(result)
    raise TypeError(f"validate() returned {type(result).__name__}; expected a Report, a dict or a number")


def _metrics_of(result: Any, monitor: str) -> dict[str, float]:
    if isinstance(result, Report):
        out = {k: float(v) for k, v in result.overall.items() if isinstance(v, (int, float))}
        for group, metrics in result.groups.items():
            out.update(
                {f"{group}/{k}": float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
            )
        return out
    if isinstance(result, Mapping):
        return {str(k): float(v) for k, v in result.items() if isinstance(v, (int, float))}
    return {monitor: _monitor_value(result, monitor)}


def _improved(value: float, best: float | None, mode: str) -> bool:
    if math.isnan(value):
        log.warning("validation metric is NaN; counted as no improvement")
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copy of the weights that training can change (frozen parameters are skipped)."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def _restore(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    if unexpected or set(missing) - frozen:
        raise RuntimeError(
            f"best weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def optimizer_step(opt: torch.optim.Optimizer, scaler: Any, params: list[torch.nn.Parameter], grad_clip: float) -> None:
    """One update after backward: unscale (AMP) so clipping sees the true gradients, clip, step."""
    if scaler is not None:
        scaler.unscale_(opt)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()

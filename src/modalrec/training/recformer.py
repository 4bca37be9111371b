"""Recformer procedures: multi-domain pretraining (MLM + item-item contrastive), two-stage finetuning with
best-on-VALID selection, checkpoints (safetensors + JSON) and BERT-weight initialisation.

Finetuning, stage 1: at each epoch start the whole item table is re-encoded (no grad, chunked) and held
fixed for the epoch; the loss is a softmax of the sequence vector against all items. Stage 2: item vectors
are computed once from the best stage-1 model and frozen; only the sequence side keeps learning.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from modalrec.data.interactions import Interactions
from modalrec.data.sequences import left_pad
from modalrec.errors import ConfigError
from modalrec.models.recformer.checkpoint import save_recformer
from modalrec.models.recformer.input import ItemTokens
from modalrec.models.recformer.model import RecformerModel
from modalrec.seeding import numpy_rng, torch_generator
from modalrec.types import SeqBatch

log = logging.getLogger(__name__)


def user_sequences(inter: Interactions, min_len: int = 2) -> list[np.ndarray]:
    """Chronological item sequences of every user with at least `min_len` events."""
    lengths = inter.seq_lengths()
    return [inter.item[inter.offsets[u] : inter.offsets[u + 1]] for u in np.flatnonzero(lengths >= min_len)]


def _pairs(sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every (sequence, position) whose item has at least one item before it."""
    seq_idx = [np.full(len(s) - 1, i, dtype=np.int64) for i, s in enumerate(sequences) if len(s) >= 2]
    ends = [np.arange(1, len(s), dtype=np.int64) for s in sequences if len(s) >= 2]
    if not seq_idx:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(seq_idx), np.concatenate(ends)


@dataclass
class PretrainCorpus:
    """Sequences from several domains over one token store (item indices are global)."""

    tokens: ItemTokens
    sequences: list[np.ndarray]
    domain_of: np.ndarray  # [n_sequences] index into `domains`
    domains: list[str]

    @classmethod
    def from_domains(cls, parts: Sequence[tuple[str, ItemTokens, Sequence[np.ndarray]]]) -> PretrainCorpus:
        tokens, shifts = ItemTokens.concat([p[1] for p in parts])
        seqs: list[np.ndarray] = []
        dom: list[int] = []
        for d, ((_, _, part_seqs), shift) in enumerate(zip(parts, shifts)):
            for s in part_seqs:
                s = np.asarray(s, dtype=np.int64)
                if len(s) >= 2:
                    seqs.append(s + shift)
                    dom.append(d)
        return cls(tokens, seqs, np.asarray(dom, dtype=np.int64), [p[0] for p in parts])

    def describe(self) -> dict[str, Any]:
        counts = np.bincount(self.domain_of, minlength=len(self.domains))
        n_pairs = sum(len(s) - 1 for s in self.sequences)
        return {"domains": dict(zip(self.domains, counts.tolist())), "items": self.tokens.n_items, "pairs": n_pairs}


@dataclass
class PretrainConfig:
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimiser steps in total
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float = 1.0
    device: str = "cpu"
    seed: int = 0
    log_every: int = 20


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # no decay on biases and LayerNorm weights
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=lr)


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"recformer loss is {float(loss)}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()


def peak_memory_mb(device: torch.device | str) -> dict[str, float | str]:
    """CUDA: peak allocated by torch. CPU: the process's peak resident set (includes Python and data)."""
    if torch.device(device).type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20, "memory_kind": "cuda_max_allocated"}
    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "memory_kind": "cpu_max_rss"}


def pretrain(model: RecformerModel, corpus: PretrainCorpus, cfg: PretrainConfig) -> dict[str, Any]:
    """MLM + item-item contrastive pretraining on a shuffled mix of all domains' (history, next item) pairs."""
    model.to(cfg.device).train()
    model.stage = None
    seq_idx, ends = _pairs(corpus.sequences)
    if len(seq_idx) == 0:
        raise ValueError("pretraining corpus has no sequence with two or more items")
    opt = _optimizer(model, cfg.lr, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    gen = torch_generator(cfg.seed, "recformer/mlm")
    max_items = model.cfg.max_items
    steps, curve, window, epoch_times = 0, [], [], []
    first: dict[str, float] | None = None
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        order = numpy_rng(cfg.seed, f"recformer/pretrain/epoch{epoch}").permutation(len(seq_idx))
        for lo in range(0, len(order), cfg.batch_size):
            sel = order[lo : lo + cfg.batch_size]
            hist = [corpus.sequences[s][max(0, e - max_items) : e] for s, e in zip(seq_idx[sel], ends[sel])]
            targets = np.array([corpus.sequences[s][e] for s, e in zip(seq_idx[sel], ends[sel])], dtype=np.int64)
            loss, parts = model.pretrain_loss(hist, targets, corpus.tokens, gen)
            _step(model, opt, loss, cfg.grad_clip)
            sched.step()
            steps += 1
            first = first or parts
            window.append(parts)
            if len(window) == cfg.log_every:
                curve.append({"step": steps, **{k: float(np.mean([w[k] for w in window])) for k in parts}})
                log.info("pretrain step %d %s", steps, curve[-1])
                window = []
            if cfg.max_steps is not None and steps >= cfg.max_steps:
                break
        epoch_times.append(time.perf_counter() - t0)
        if cfg.max_steps is not None and steps >= cfg.max_steps:
            break
    if window:
        curve.append({"step": steps, **{k: float(np.mean([w[k] for w in window])) for k in window[0]}})
    model.eval()
    return {
        "steps": steps, "epochs_run": len(epoch_times), "pairs_per_epoch": len(seq_idx),
        "time_s": time.perf_counter() - start, "time_per_epoch_s": epoch_times,
        "time_per_step_s": (time.perf_counter() - start) / max(1, steps),
        "first": first, "curve": curve, "corpus": corpus.describe(), "config": asdict(cfg),
        **peak_memory_mb(cfg.device),
    }


@dataclass
class PrefixPairs:
    """Finetuning examples: every (history, next item) pair of every user's training sequence.

    `batches` yields SeqBatch with items [B, max_len] left-padded and targets [B]; an epoch can be capped
    at `max_batches` (a fresh random subset each epoch).
    """

    train: Interactions
    max_len: int

    def __post_init__(self) -> None:
        self.sequences = user_sequences(self.train)
        self.seq_idx, self.ends = _pairs(self.sequences)

    def __len__(self) -> int:
        return len(self.seq_idx)

    def num_batches(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)

    def batches(self, batch_size: int, seed: int, epoch: int, max_batches: int | None = None) -> Iterator[SeqBatch]:
        order = numpy_rng(seed, f"recformer/finetune/epoch{epoch}").permutation(len(self))
        if max_batches is not None:
            order = order[: max_batches * batch_size]
        for lo in range(0, len(order), batch_size):
            sel = order[lo : lo + batch_size]
            hist = [self.sequences[s][max(0, e - self.max_len) : e] for s, e in zip(self.seq_idx[sel], self.ends[sel])]
            targets = np.array([self.sequences[s][e] for s, e in zip(self.seq_idx[sel], self.ends[sel])], np.int64)
            yield SeqBatch(items=torch.from_numpy(left_pad(hist, self.max_len)), targets=torch.from_numpy(targets),
                           users=torch.from_numpy(sel.astype(np.int64)))


@dataclass
class FinetuneConfig:
    stage1_epochs: int = 3
    stage2_epochs: int = 2
    batch_size: int = 16
    lr: float = 5e-5
    stage2_lr: float | None = None  # None = lr
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    patience: int | None = None  # epochs without improvement before a stage stops early
    max_steps_per_epoch: int | None = None
    monitor: str = "ndcg@10"
    device: str = "cpu"
    seed: int = 0
    checkpoint_dir: str | None = None


def finetune(
    model: RecformerModel, source: PrefixPairs, cfg: FinetuneConfig,
    validate: Callable[[RecformerModel], Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Two-stage finetuning with best-on-VALID selection across both stages.

    `validate(model)` returns VALID metrics (e.g. `Evaluator(split.valid, ...).run(model).overall`); the
    epoch with the highest `cfg.monitor` wins. Without it the last epoch is kept. The model ends with the
    winning weights and the item vectors it was validated with (frozen).
    """
    model.to(cfg.device)
    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor], torch.Tensor, int, int] | None = None  # value, state, vecs, stage, epoch
    for stage, epochs in ((1, cfg.stage1_epochs), (2, cfg.stage2_epochs)):
        if epochs <= 0:
            continue
        if stage == 2:
            if best is not None and best[3] == 1:  # the best stage-1 model and the vectors it was validated with
                model.load_state_dict(best[1])
                model.set_item_vectors(best[2])
            else:
                model.freeze_item_vectors()
        else:
            model.unfreeze_item_vectors()
        model.stage = stage
        lr = cfg.lr if stage == 1 or cfg.stage2_lr is None else cfg.stage2_lr
        opt = _optimizer(model, lr, cfg.weight_decay)
        stage_best, bad = -math.inf, 0
        for epoch in range(epochs):
            t0 = time.perf_counter()
            model.reset_state()  # stage 1: re-encode the item table with the current weights
            encode_s = time.perf_counter() - t0
            model.train()
            losses = []
            for batch in source.batches(cfg.batch_size, cfg.seed, epoch + 1000 * stage, cfg.max_steps_per_epoch):
                loss = model.loss(batch)
                _step(model, opt, loss, cfg.grad_clip)
                losses.append(float(loss.detach()))
            model.eval()
            train_s = time.perf_counter() - t0
            memory = peak_memory_mb(cfg.device)  # before validating: the evaluator resets CUDA peak stats
            metrics = dict(validate(model)) if validate is not None else {}
            if validate is not None and cfg.monitor not in metrics:
                raise ConfigError(f"monitor '{cfg.monitor}' not among validation metrics {sorted(metrics)}")
            value = metrics.get(cfg.monitor, float(epoch + 1000 * stage))  # no validation: latest wins
            record = {"stage": stage, "epoch": epoch, "steps": len(losses), "loss": float(np.mean(losses)),
                      "item_encode_s": encode_s, "time_s": train_s, "valid_s": time.perf_counter() - t0 - train_s,
                      "valid": metrics, **memory}
            history.append(record)
            log.info("recformer finetune %s", record)
            if best is None or value > best[0]:
                state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                best = (value, state, model.item_embeddings().detach().cpu().clone(), stage, epoch)
                if cfg.checkpoint_dir is not None:
                    save_recformer(cfg.checkpoint_dir, model, {"stage": stage, "epoch": epoch, "valid": metrics})
            bad = 0 if value > stage_best else bad + 1
            stage_best = max(stage_best, value)
            if cfg.patience is not None and bad >= cfg.patience:
                break
    if best is not None:
        model.load_state_dict(best[1])
        model.set_item_vectors(best[2])
    model.stage = None
    model.eval()
    return {"history": history, "best": None if best is None else
            {"stage": best[3], "epoch": best[4], cfg.monitor: best[0]}, "config": asdict(cfg)}

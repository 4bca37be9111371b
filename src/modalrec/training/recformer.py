"""Recformer procedures: multi-domain pretraining (MLM + item-item contrastive), two-stage finetuning with
best-on-VALID selection, checkpoints (safetensors + JSON) and BERT-weight initialisation.

Finetuning, stage 1: at each epoch start the whole item table is re-encoded (no grad, chunked) and held
fixed for the epoch; the loss is a softmax of the sequence vector against all items. Stage 2: item vectors
are computed once from the best stage-1 model and frozen; only the sequence side keeps learning.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modalrec.data.interactions import Interactions
from modalrec.data.sequences import left_pad
from modalrec.models.recformer.checkpoint import save_recformer
from modalrec.models.recformer.input import ItemTokens, PretrainBatch
from modalrec.models.recformer.model import RecformerModel
from modalrec.seeding import numpy_rng
from modalrec.training.loop import TrainConfig, Trainer
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
    log_every: int = 20
    # The Recformer reference pretraining keeps the word embeddings fixed (--fix_word_embedding): the MLM
    # decoder is tied to them and starts random, and its early gradients would otherwise move the
    # pretrained token vectors every item text is read through.
    freeze_word_embeddings: bool = True
    # Resumable pretraining: the Trainer saves its state every `checkpoint_every` steps (one "epoch" of the
    # Trainer is then a chunk of that many steps of one continuous data stream) and a later call with the
    # same directory continues; a larger `max_steps` there extends the run.
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    time_budget_s: float | None = None  # wall-clock cap: stop at the first step past it (TrainConfig.time_budget_s)
    # Without checkpoint_dir: cut the (identical) batch stream into Trainer epochs of this many steps, one
    # progress line each (needs max_steps); None = one Trainer epoch per pass over the corpus.
    chunk_steps: int | None = None


@dataclass
class _PretrainPairs:
    """A corpus's (history, next item) pairs as PretrainBatch: pass p over the corpus is a seeded
    permutation of its own; with `chunk` set, Trainer epoch e is global batches [(e-1)*chunk, e*chunk) of
    the concatenated passes, so chunked (checkpointed) training sees exactly the unchunked batch stream."""

    corpus: PretrainCorpus
    max_items: int
    chunk: int | None = None

    def __post_init__(self) -> None:
        self.seq_idx, self.ends = _pairs(self.corpus.sequences)

    def num_batches(self, batch_size: int) -> int:
        return self.chunk or math.ceil(len(self.seq_idx) / batch_size)

    def batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[PretrainBatch]:
        if self.chunk is None:
            yield from self._pass(batch_size, seed, epoch, 0)
            return
        per_pass = math.ceil(len(self.seq_idx) / batch_size)
        first = (epoch - 1) * self.chunk
        done = 0
        while done < self.chunk:
            g = first + done
            for batch in self._pass(batch_size, seed, g // per_pass + 1, g % per_pass):
                yield batch
                done += 1
                if done == self.chunk:
                    return

    def _pass(self, batch_size: int, seed: int, n: int, skip: int) -> Iterator[PretrainBatch]:
        """Batches of pass `n` over the corpus, from batch `skip` on."""
        seqs = self.corpus.sequences
        order = numpy_rng(seed, f"recformer/pretrain/epoch{n}").permutation(len(self.seq_idx))
        for lo in range(skip * batch_size, len(order), batch_size):
            sel = order[lo : lo + batch_size]
            pairs = list(zip(self.seq_idx[sel], self.ends[sel]))
            yield PretrainBatch([seqs[s][max(0, e - self.max_items) : e] for s, e in pairs],
                                np.array([seqs[s][e] for s, e in pairs], dtype=np.int64), self.corpus.tokens)


def pretrain(model: RecformerModel, corpus: PretrainCorpus, cfg: PretrainConfig) -> dict[str, Any]:
    """MLM + item-item contrastive pretraining on a shuffled mix of all domains' (history, next item) pairs,
    run by the shared Trainer (AdamW, linear warmup, clipping; `max_steps` caps the total)."""
    model.stage = None
    chunk = cfg.checkpoint_every if cfg.checkpoint_dir is not None else cfg.chunk_steps
    if chunk is not None and (chunk <= 0 or cfg.max_steps is None):
        raise ValueError("checkpointed or chunked pretraining needs checkpoint_every / chunk_steps > 0 and max_steps")
    source = _PretrainPairs(corpus, model.cfg.max_items, chunk)
    if len(source.seq_idx) == 0:
        raise ValueError("pretraining corpus has no sequence with two or more items")
    if chunk is None:
        epochs, max_steps = cfg.epochs, cfg.max_steps
    else:  # whole chunks, no step cap: a cap would mark the saved run finished and stop a later extension
        assert cfg.max_steps is not None
        epochs, max_steps = math.ceil(cfg.max_steps / chunk), None
    train_cfg = TrainConfig(epochs=epochs, max_steps=max_steps, batch_size=cfg.batch_size, lr=cfg.lr,
                            weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip,
                            device=cfg.device, seed=model.seed, progress=False, checkpoint_dir=cfg.checkpoint_dir,
                            time_budget_s=cfg.time_budget_s)
    model.pretrain_parts = []
    word = model.embeddings.token.weight
    trainable = word.requires_grad
    word.requires_grad_(trainable and not cfg.freeze_word_embeddings)
    try:
        hist = Trainer(model, source, train_cfg).fit()
    finally:
        word.requires_grad_(trainable)  # finetuning trains them (as the reference finetuning does)
    parts, steps = model.pretrain_parts, hist.steps
    before = steps - len(parts)  # steps an earlier call took (resumed runs)
    curve = [{"step": before + min(lo + cfg.log_every, len(parts)),
              **{k: float(np.mean([p[k] for p in parts[lo : lo + cfg.log_every]])) for k in parts[0]}}
             for lo in range(0, len(parts), cfg.log_every)]
    model.eval()
    return {
        "steps": steps, "epochs_run": hist.epochs, "pairs_per_epoch": len(source.seq_idx),
        "out_of_time": hist.out_of_time,
        "resumed_from_step": None if hist.resumed_from is None else hist.resumed_from * (chunk or 0),
        "time_s": hist.total_seconds, "time_per_epoch_s": hist.epoch_seconds,
        "time_per_step_s": hist.total_seconds / max(1, steps),
        "first": parts[0] if parts else None, "curve": curve,
        "corpus": corpus.describe(), "config": asdict(cfg),
        "loss_per_chunk": hist.train_loss,  # mean training loss of every Trainer epoch, earlier calls included
        "peak_memory_mb": hist.peak_memory_bytes / 2**20, "memory_kind": hist.peak_memory_source,
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
    checkpoint_dir: str | None = None
    # Wall-clock cap of both stages together (seconds, validation included): stage 1 may use its share by
    # epochs (stage1_epochs / all epochs), stage 2 the rest; an epoch past its stage's cap stops at the next
    # step and is validated as usual, so selection still sees it.
    time_budget_s: float | None = None


@dataclass
class _StageEpochs:
    """The PrefixPairs epochs of one finetuning stage (each stage shuffles with its own seeds)."""

    source: PrefixPairs
    stage: int

    def num_batches(self, batch_size: int) -> int:
        return self.source.num_batches(batch_size)

    def batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[SeqBatch]:
        return self.source.batches(batch_size, seed, epoch - 1 + 1000 * self.stage)


def finetune(
    model: RecformerModel, source: PrefixPairs, cfg: FinetuneConfig,
    validate: Callable[[RecformerModel], Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Two-stage finetuning, each stage one run of the shared Trainer, with best-on-VALID selection across
    both stages.

    `validate(model)` returns VALID metrics (e.g. `Evaluator(split.valid, ...).run(model).overall`); the
    epoch with the highest `cfg.monitor` wins. Without it the last epoch is kept. The model ends with the
    winning weights and the item vectors it was validated with (frozen); with `checkpoint_dir` it is
    saved there (save_recformer) and each stage's resumable trainer state under checkpoint_dir/train_state.
    """
    model.to(cfg.device)
    start = time.perf_counter()
    total_epochs = max(1, cfg.stage1_epochs + max(0, cfg.stage2_epochs))
    history: list[dict[str, Any]] = []
    out_of_time = False
    best: tuple[float, dict[str, torch.Tensor], torch.Tensor, int, int] | None = None  # value, state, vecs, stage, epoch
    for stage, epochs in ((1, cfg.stage1_epochs), (2, cfg.stage2_epochs)):
        if epochs <= 0:
            continue
        if stage == 2:
            if best is not None:  # the best stage-1 model and the vectors it was validated with
                model.load_state_dict(best[1])
                model.set_item_vectors(best[2])
            else:
                model.freeze_item_vectors()
        else:
            model.unfreeze_item_vectors()
        model.stage = stage
        budget = None
        if cfg.time_budget_s is not None:  # from now to this stage's end of the shared budget
            share = max(0, cfg.stage1_epochs) / total_epochs if stage == 1 else 1.0
            budget = start + cfg.time_budget_s * share - time.perf_counter()
            if budget <= 0:  # the budget ran out before this stage began
                out_of_time = True
                continue
        train_cfg = TrainConfig(
            epochs=epochs, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
            lr=cfg.lr if stage == 1 or cfg.stage2_lr is None else cfg.stage2_lr, patience=cfg.patience or 0,
            monitor=cfg.monitor, max_steps_per_epoch=cfg.max_steps_per_epoch, seed=model.seed, device=cfg.device,
            progress=False, validate_first=False,  # selection runs across both stages over trained epochs
            time_budget_s=budget,
            checkpoint_dir=None if cfg.checkpoint_dir is None else
            str(Path(cfg.checkpoint_dir) / "train_state" / f"stage{stage}"))
        trainer = Trainer(model, _StageEpochs(source, stage), train_cfg, validate)
        hist = trainer.fit()  # ends with the stage's best weights
        out_of_time |= hist.out_of_time
        steps = hist.epoch_steps if len(hist.epoch_steps) == hist.epochs else [trainer.steps] * hist.epochs  # older saves
        for i in range(hist.epochs):
            history.append({"stage": stage, "epoch": i, "steps": steps[i], "loss": hist.train_loss[i],
                            "time_s": hist.epoch_seconds[i], "valid_s": hist.valid_seconds[i],
                            "valid": hist.valid[i] or {}, "peak_memory_mb": hist.peak_memory_bytes / 2**20,
                            "memory_kind": hist.peak_memory_source})
            log.info("recformer finetune %s", history[-1])
        if not hist.epochs:  # the time budget ran out before this stage began
            continue
        value = hist.best_metric if validate is not None else float(hist.epochs + 1000 * stage)  # no VALID: latest
        if best is None or value > best[0]:
            if not model.item_vectors_frozen:  # stage 1: the restored weights' vectors; stage 2 keeps its frozen ones
                model.refresh_item_vectors()
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best = (value, state, model.item_embeddings().detach().cpu().clone(), stage, (hist.best_epoch or 1) - 1)
    if best is not None:
        model.load_state_dict(best[1])
        model.set_item_vectors(best[2])
    model.stage = None
    model.eval()
    if best is not None and cfg.checkpoint_dir is not None:
        valid = history[[h["stage"] for h in history].index(best[3]) + best[4]]["valid"]
        save_recformer(cfg.checkpoint_dir, model, {"stage": best[3], "epoch": best[4], "valid": valid})
    return {"history": history, "out_of_time": out_of_time, "best": None if best is None else
            {"stage": best[3], "epoch": best[4], cfg.monitor: best[0]}, "config": asdict(cfg)}

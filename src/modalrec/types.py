"""Batch dataclasses and the protocols that models, the trainer, the evaluator and the server share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class SeqBatch:
    """A batch of left-padded item sequences (0 = PAD).

    Training: `targets` is [B, L], the next item at every position (0 where there is none).
    Evaluation: `targets` is [B], the one item to rank, and `items` is the history before it.
    """

    items: torch.Tensor  # [B, L] int64
    targets: torch.Tensor  # [B, L] or [B] int64
    users: torch.Tensor  # [B] int64
    timestamps: torch.Tensor | None = None  # [B, L] int64 (event times of `items`), optional
    target_ts: torch.Tensor | None = None  # [B] or [B, L] time of the target event, optional

    def to(self, device: torch.device | str) -> SeqBatch:
        return replace(self, **{f.name: _move(getattr(self, f.name), device) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.items.shape[0])


@dataclass
class EventBatch:
    """A batch of timestamped user-item events in chronological order (for temporal graph models)."""

    users: torch.Tensor  # [B] int64
    items: torch.Tensor  # [B] int64
    ts: torch.Tensor  # [B] float64 or int64
    negatives: torch.Tensor | None = None  # [B] or [B, N] int64 sampled negative items

    def to(self, device: torch.device | str) -> EventBatch:
        return replace(self, **{f.name: _move(getattr(self, f.name), device) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.users.shape[0])


def _move(value: object, device: torch.device | str) -> object:
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


@runtime_checkable
class Scorer(Protocol):
    """Anything the evaluator can rank with: scores for every item index 0..n_items.

    `score(batch)` returns [B, n_items + 1] float scores (column 0 is PAD and is ignored).
    With `items` ([M] int64) it returns [B, M] scores for just those items.
    """

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class ItemBiasScorer(Protocol):
    """A scorer that may declare its scores `forward(batch) @ item_embeddings().T + item_bias(n_items + 1)`:
    `item_bias(n_rows)` is that per-item term ([n_rows]), or None when its scores are not of that form (or have no such term:
    then `dot_product_scores` says whether they are plain dot products)."""

    def item_bias(self, n_rows: int) -> torch.Tensor | None: ...


@runtime_checkable
class HistoryBonusScorer(Protocol):
    """A scorer whose scores are `base.score(batch)` plus `bonus` on the items of the batch's history window:
    `history_bonus()` returns (base, bonus)."""

    def history_bonus(self) -> tuple[Scorer, float]: ...


def batch_digest(batch: Any) -> bytes:
    """A digest of every tensor field of a batch dataclass (name, dtype, shape and values)."""
    if not is_dataclass(batch):
        raise TypeError(f"cannot key a batch digest by a {type(batch).__name__}")
    h = hashlib.blake2b(digest_size=20)
    for f in fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, torch.Tensor):
            h.update(f"{f.name}:{value.dtype}:{tuple(value.shape)}".encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()

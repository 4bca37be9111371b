"""What every model shares: the build context and the sequential-recommender base class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from modalrec.types import SeqBatch


@dataclass
class ModelContext:
    """Facts about the data a model is built for. Models never read files themselves.

    `item_features` maps a modality ("text", "image", ...) to a [n_items + 1, d] float tensor from the
    FeatureStore (row 0 = PAD) and `feature_missing` to a [n_items + 1] bool tensor. Content models keep
    these as buffers that can be replaced later (`set_item_features`) so new items become rankable.
    """

    n_items: int  # real items (excluding PAD)
    n_users: int
    max_len: int = 50
    train_item_counts: np.ndarray | None = None  # [n_items + 1] int64
    item_features: dict[str, torch.Tensor] = field(default_factory=dict)
    feature_missing: dict[str, torch.Tensor] = field(default_factory=dict)
    seed: int = 0
    hidden_states: Any = None  # features.hidden_cache.HiddenStateCache for adapter models (IISAN)
    item_table: Any = None  # data.items.ItemTable, for models that read item text themselves (Recformer)


class SequentialRecommender(nn.Module):
    """Base class: encode a history into a state [B, d]; score = state . item_embeddings().T.

    Subclasses implement `forward` (SeqBatch -> [B, d] state at the last position), `item_embeddings`
    ([n_items + 1, d]) and `loss`. Content models compute item embeddings from features, so an item
    added after training is scored the moment its features exist.
    """

    def forward(self, batch: SeqBatch) -> torch.Tensor:  # [B, d]
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:  # [n_items + 1, d]
        raise NotImplementedError

    def loss(self, batch: SeqBatch) -> torch.Tensor:
        raise NotImplementedError

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        state = self.forward(batch)  # [B, d]
        table = self.item_embeddings()  # [N + 1, d]
        if items is not None:
            table = table[items]  # [M, d]
        return state @ table.T  # [B, N + 1] or [B, M]

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        """Replace item features (e.g. after items were appended). ID-only models refuse."""
        raise TypeError(f"{type(self).__name__} has no content features; it cannot score new items")

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class CausalTowerRecommender(SequentialRecommender):
    """A causal sequence model over an item tower (SASRec, GRU4Rec): `encode` maps left-padded items
    [B, L] to per-position states [B, L, d] (state t has seen items[:, :t + 1]); training scores every
    position against the next item through `self.criterion` (a training.losses.NextItemLoss).

    Subclasses set `self.tower`, `self.criterion` and `self.cfg` (with `max_len`) and implement `encode`.
    """

    tower: ItemTower
    criterion: nn.Module
    cfg: Any

    def encode(self, items: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, d]
        raise NotImplementedError

    def reseed(self, seed: int) -> None:
        self.criterion.reseed(seed)

    def forward(self, batch: SeqBatch) -> torch.Tensor:  # [B, d] state after the last item
        return self.encode(batch.items)[:, -1]

    def item_embeddings(self) -> torch.Tensor:  # [n_items + 1, d]
        return self.tower.all()

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        state = self.forward(batch)  # [B, d]
        table = self.tower.all() if items is None else self.tower(items)  # [N + 1, d] or [M, d]
        return state @ table.T  # [B, N + 1] or [B, M]

    def loss(self, batch: SeqBatch) -> torch.Tensor:
        if batch.targets.dim() != 2:
            raise ValueError(f"{type(self).__name__}.loss needs training batches with [B, L] targets (TrainWindows)")
        L = min(batch.items.shape[1], self.cfg.max_len)
        return self.criterion(self.encode(batch.items), batch.targets[:, -L:], self.tower)

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        self.tower.set_item_features(features, missing)


class ItemTower(nn.Module):
    """Maps item indices to d-dim vectors. Row 0 (PAD) must be all zeros.

    `all()` returns [n_items + 1, d] for full-catalogue scoring; `forward(items)` gathers [..., d].
    Content towers compute rows from features, so `set_item_features` can grow the catalogue.
    """

    dim: int

    def all(self) -> torch.Tensor:  # [n_items + 1, d]
        raise NotImplementedError

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [..., d]
        return self.all()[items]

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        raise TypeError(f"{type(self).__name__} has no content features; it cannot score new items")

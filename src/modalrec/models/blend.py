"""A trained model's scores interpolated with another model's, typically its own untrained self.

Training a content tower on the warm items of a time-ordered log can lose the similarity structure that lets
the untrained tower rank items nobody has taken yet (docs/benchmarks.md, "Cold start and repeats on real
data"). Interpolating the fine-tuned model with its starting point keeps part of that structure — the
output-space form of WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022):

    score = (1 - weight) * trained.score + weight * reference.score

`weight` is chosen on VALID (training/selection.blend_sweep); 0 is the trained model, 1 the reference. Two dot-product models
blend into a dot-product model — the state and item vectors are concatenated, the first scaled by
(1 - weight) and the second by `weight` — so evaluation and serving keep the fast item-table path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.models.base import Recommender
from modalrec.types import ItemBiasScorer


class ScoreBlend(nn.Module):
    """Scores of `trained` and `reference` interpolated by `weight` (evaluation and serving only)."""

    def __init__(self, trained: Recommender, reference: Recommender, weight: float = 0.0) -> None:
        super().__init__()
        if trained.history_length != reference.history_length:
            raise ConfigError(f"blend: the models read {trained.history_length} and {reference.history_length} "
                              "history items; a blend needs one history window")
        self.trained, self.reference = trained, reference
        self.weight = weight

    @property
    def weight(self) -> float:
        return self._weight

    @weight.setter
    def weight(self, weight: float) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"blend weight must lie in [0, 1], got {weight}")
        self._weight = float(weight)

    @property
    def history_length(self) -> int:
        return int(self.trained.history_length)

    @property
    def dot_product_scores(self) -> bool:
        return bool(self.trained.dot_product_scores and self.reference.dot_product_scores)  # the model contract

    def item_bias(self, n_rows: int) -> torch.Tensor | None:
        """The parts' per-item terms, weighted, when both parts score as `forward @ item_embeddings().T` (plus such a
        term) and at least one has one; else None (the model contract, models/base.py)."""
        # a part without the method (a RepeatBonus: its bonus depends on the history) has no such term
        parts = [(m, m.item_bias(n_rows) if isinstance(m, ItemBiasScorer) else None)
                 for m in (self.trained, self.reference)]
        if not all(m.dot_product_scores or bias is not None for m, bias in parts) or all(b is None for _, b in parts):
            return None
        return sum(w * b for w, (_, b) in zip((1.0 - self._weight, self._weight), parts) if b is not None)

    def forward(self, batch: Any) -> torch.Tensor:  # [B, d1 + d2]; (biased) dot-product models only
        return torch.cat([(1.0 - self._weight) * self.trained(batch), self._weight * self.reference(batch)], -1)

    def item_embeddings(self) -> torch.Tensor:  # [n_items + 1, d1 + d2]
        return torch.cat([self.trained.item_embeddings(), self.reference.item_embeddings()], -1)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:  # [M] -> [M, d1 + d2]; rows of item_embeddings()
        return torch.cat([self.trained.embed_items(items), self.reference.embed_items(items)], -1)

    def score(self, batch: Any, items: torch.Tensor | None = None) -> torch.Tensor:
        return ((1.0 - self._weight) * self.trained.score(batch, items)
                + self._weight * self.reference.score(batch, items))

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        """Both models score the grown catalogue (serving's added items)."""
        self.trained.set_item_features(features, missing)
        self.reference.set_item_features(features, missing)

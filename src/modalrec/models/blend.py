"""A trained model's scores interpolated with another model's, typically its own untrained self.

Training a content tower on the warm items of a time-ordered log can lose the similarity structure that lets
the untrained tower rank items nobody has taken yet (docs/benchmarks.md, "Cold start and repeats on real
data"). Interpolating the fine-tuned model with its starting point keeps part of that structure — the
output-space form of WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022):

    score = (1 - weight) * trained.score + weight * reference.score

`weight` is chosen on VALID (`blend_sweep`); 0 is the trained model, 1 the reference. Two dot-product models
blend into a dot-product model — the state and item vectors are concatenated, the first scaled by
(1 - weight) and the second by `weight` — so evaluation and serving keep the fast item-table path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.models.base import Recommender


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

    def forward(self, batch: Any) -> torch.Tensor:  # [B, d1 + d2]; dot-product models only
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


def blend_sweep(blend: ScoreBlend, evaluate: Callable[[nn.Module], Any], weights: Sequence[float],
                metric: str = "ndcg@10") -> tuple[float, list[dict[str, Any]]]:
    """Choose the blend weight on VALID: the best overall `metric` among the weights that score at least the
    reference alone (weight 1) on every event group with events, so blending in the trained model costs no
    group anything on VALID; weight 1 always qualifies. Ties go to the larger weight (more of the reference).
    `evaluate(model)` returns a VALID Report. Returns (weight, each weight's overall and group metrics) and
    leaves `blend.weight` at the chosen weight."""
    if 1.0 not in weights:
        raise ConfigError(f"blend_sweep needs weight 1 (the reference alone) among the weights, got {list(weights)}")
    sweep = []
    for w in weights:
        blend.weight = w
        rep = evaluate(blend)
        groups = {g: rep.metric(metric, g) for g in rep.groups if rep.counts.get(g, 0) > 0}
        sweep.append({"weight": float(w), "overall": rep.metric(metric), "groups": groups})
    ref = next(s for s in sweep if s["weight"] == 1.0)

    def loses_nothing(s: dict[str, Any]) -> bool:
        return all((s["groups"][g] or 0.0) >= (v or 0.0) for g, v in ref["groups"].items())

    chosen = max((s for s in sweep if loses_nothing(s)), key=lambda s: (s["overall"] or 0.0, s["weight"]))
    blend.weight = chosen["weight"]
    return chosen["weight"], sweep

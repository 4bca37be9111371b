"""A model's scores plus a bonus for the items already in the user's history window: repeat consumption.

People take some items again (a consumable re-bought, a song replayed); a next-item model trained to rank what
comes next spreads its scores over the catalogue and need not put the user's own items first. The bonus is the
simplest repeat mode of repeat-aware recommenders (Ren et al., "RepeatNet", AAAI 2019): one constant, chosen on
VALID (training/selection.repeat_sweep), added to every history item's score:

    score(item) = model.score(item) + bonus * [item in the history window]

What it can change depends on the candidate rule (modalrec.protocol): with every item a candidate
(`exclude_seen=False`) it trades novel targets for repeat ones, and VALID picks the trade; with `exclude_seen`
and a repeat target left rankable, the target is the only history item left, so any bonus that lifts it above
the other candidates ranks it first and no novel target changes; when the target is masked with the history
(`repeat_targets='miss'`) it changes nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modalrec.errors import ConfigError


class RepeatBonus(nn.Module):
    """`model`'s scores, `bonus` added to the items of the batch's history window (evaluation and serving)."""

    dot_product_scores = False  # the bonus depends on the history, not on an item table

    def __init__(self, model: nn.Module, bonus: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.bonus = bonus

    @property
    def bonus(self) -> float:
        return self._bonus

    @bonus.setter
    def bonus(self, bonus: float) -> None:
        if not bonus >= 0.0:  # NaN too
            raise ConfigError(f"repeat bonus must be >= 0, got {bonus}")
        self._bonus = float(bonus)

    @property
    def history_length(self) -> int:
        return int(self.model.history_length)

    def history_bonus(self) -> tuple[Any, float]:
        """(the wrapped model, the bonus): the evaluator ranks the wrapped model's scores with the bonus on the target
        alone when every other history item is excluded (types.HistoryBonusScorer)."""
        return self.model, self._bonus

    def score(self, batch: Any, items: torch.Tensor | None = None) -> torch.Tensor:  # [B, N + 1] or [B, M]
        scores = self.model.score(batch, items)
        if not self._bonus:
            return scores
        history = batch.items  # [B, L], 0 = PAD
        if items is None:
            seen = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
            seen.scatter_(1, history.to(scores.device), True)
            seen[:, 0] = False  # PAD
        else:  # [B, M]: candidate m is one of the row's history items
            cand = items.to(history.device)[None, :, None]  # [1, M, 1]
            seen = ((cand == history[:, None, :]) & (cand != 0)).any(-1).to(scores.device)
        return scores + self._bonus * seen.to(scores.dtype)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:  # [M] -> [M, d]: item similarity (serving)
        return self.model.embed_items(items)

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        """The wrapped model scores the grown catalogue (serving's added items)."""
        self.model.set_item_features(features, missing)

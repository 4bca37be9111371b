"""Popularity baselines: every user gets the same ranking. Not trained by `fit`; call `fit_counts`.

`Pop` ranks by training frequency. `RecentPop` ranks by frequency in the last part of the training
time span (optionally with exponential time decay), breaking ties by overall frequency so items
without recent events are still ordered sensibly; with `launch_tie_break`, ties in recent frequency
are broken by launch time at the query time first (newest first), so new items lead the long tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from modalrec.data.interactions import Interactions
from modalrec.data.splits import Split
from modalrec.errors import ConfigError
from modalrec.models.base import ModelContext, Recommender, Training
from modalrec.models.coldstart import launch_ranks
from modalrec.types import SeqBatch


@dataclass
class PopConfig:
    pass


@dataclass
class RecentPopConfig:
    window: float = 0.1  # fraction of the training time span (ending at the last train event) counted
    half_life: float | None = None  # if set: weight 0.5 ** (age / (half_life * span)) inside the window
    tie_break: bool = True  # break ties among recent counts by overall training counts
    launch_tie_break: bool = False  # break ties among recent counts by launch time at the query first


class _CountScorer(Recommender):
    """Shared scorer: a [n_items + 1] buffer of scores (PAD = 0, never a real item) broadcast to every row."""

    training_kind = Training.COUNTS

    @property
    def history_length(self) -> int:
        return 0  # one ranking for everyone

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items = int(n_items)
        self.register_buffer("scores", torch.zeros(n_items + 1))  # [N + 1]

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        s = self.scores if items is None else self.scores[items]  # [N + 1] or [M]
        return s[None, :].expand(len(batch), -1)  # [B, N + 1] or [B, M]

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        return self.score(batch)

    def _set(self, scores: np.ndarray) -> None:
        if len(scores) != self.n_items + 1:
            raise ValueError(f"expected {self.n_items + 1} scores (items + PAD), got {len(scores)}")
        s = torch.as_tensor(np.asarray(scores, dtype=np.float64)).to(self.scores.dtype)  # [N + 1]
        s[0] = 0.0
        self.scores.copy_(s)


def _train_of(data: Split | Interactions) -> Interactions:
    return data.train if isinstance(data, Split) else data


class Pop(_CountScorer):
    """Most popular items in training first."""

    def __init__(self, cfg: PopConfig, ctx: ModelContext) -> None:
        super().__init__(ctx.n_items)
        self.cfg = cfg
        if ctx.train_item_counts is not None:
            self._set(np.asarray(ctx.train_item_counts, dtype=np.float64))

    @classmethod
    def build(cls, cfg: PopConfig, ctx: ModelContext) -> Pop:
        return cls(cfg, ctx)

    def fit_counts(self, data: Split | Interactions) -> Pop:
        self._set(_train_of(data).item_counts().astype(np.float64))
        return self


class RecentPop(_CountScorer):
    """Most popular items in the last `window` fraction of the training time span first."""

    def __init__(self, cfg: RecentPopConfig, ctx: ModelContext) -> None:
        super().__init__(ctx.n_items)
        if not 0.0 < cfg.window <= 1.0:
            raise ConfigError(f"recent_pop: window must be in (0, 1], got {cfg.window}")
        if cfg.half_life is not None and cfg.half_life <= 0:
            raise ConfigError(f"recent_pop: half_life must be > 0, got {cfg.half_life}")
        self.cfg = cfg
        self.launch = ctx.item_launch
        if cfg.launch_tie_break and self.launch is None:
            raise ConfigError("recent_pop: launch_tie_break needs item launch times (ModelContext.item_launch)")
        self.register_buffer("recent_rank", torch.zeros(ctx.n_items + 1, dtype=torch.float64))  # [N + 1]
        self.register_buffer("total_rank", torch.zeros(ctx.n_items + 1, dtype=torch.float64))  # [N + 1]

    @classmethod
    def build(cls, cfg: RecentPopConfig, ctx: ModelContext) -> RecentPop:
        return cls(cfg, ctx)

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        if not self.cfg.launch_tie_break:
            return super().score(batch, items)
        cols = torch.arange(self.n_items + 1) if items is None else items.cpu()
        q = None if batch.target_ts is None else batch.target_ts.cpu()
        launch = launch_ranks(self.launch, cols, q)  # [B or 1, M] 0..L
        n_launch = float(self.n_items + 1) * 2 + 1  # bound on distinct launch ranks
        n_total = float(self.n_items + 2)
        # (recent, launch, total) as one exact float64 key: every term is a small integer
        key = (self.recent_rank[cols] * n_launch + launch) * (n_total if self.cfg.tie_break else 1.0)
        if self.cfg.tie_break:
            key = key + self.total_rank[cols]
        key = key.expand(len(batch), -1).clone()
        if items is None:
            key[:, 0] = 0.0
        return key.to(batch.items.device)

    def fit_counts(self, data: Split | Interactions) -> RecentPop:
        train = _train_of(data)
        n = self.n_items + 1
        if len(train) == 0:
            self._set(np.zeros(n))
            return self
        ts = train.ts.astype(np.float64)
        t_min, t_max = float(ts.min()), float(ts.max())
        span = max(t_max - t_min, 1.0)
        cut = t_max - self.cfg.window * span
        inside = ts >= cut
        weights = np.ones(int(inside.sum()))
        if self.cfg.half_life is not None:
            weights = 0.5 ** ((t_max - ts[inside]) / (self.cfg.half_life * span))
        recent = np.bincount(train.item[inside], weights=weights, minlength=n)  # [N + 1]
        total = train.item_counts().astype(np.float64)
        self.recent_rank.copy_(torch.from_numpy(_dense_rank(recent)))
        self.total_rank.copy_(torch.from_numpy(_dense_rank(total)))
        keys = [recent, total] if self.cfg.tie_break else [recent]
        # Dense rank of (recent, total) pairs: exact ties stay tied, and float32 cannot blur the order.
        _, rank = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)  # [N + 1]
        scores = rank.reshape(-1).astype(np.float64) + 1.0
        self._set(scores)
        return self


def _dense_rank(values: np.ndarray) -> np.ndarray:
    """[N] float64 0-based dense rank (equal values share a rank)."""
    return np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.float64)

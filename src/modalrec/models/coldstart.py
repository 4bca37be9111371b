"""Rules with no learning that set the bar for new items and repeat consumption.

- `NewestFirst`: items by launch time at the query time, newest first (data/item_age.py: metadata launch,
  else first appearance strictly before the query; items not launched / not yet seen rank last);
- `ContentKNN`: cosine of the mean content vector of the user's history to every item's content vector
  (the frozen FeatureStore features; no training); `decay < 1` weights the history by recency instead; with
  modalities "text+lexical" half the similarity is the sentence encoder's and half exact words' (TF-IDF over the
  item text's n-grams), which tell apart the maker, series and size of near-identical products;
- `RepeatHistory`: the user's own history, most recent first; every other item ties below it.

All are fitted by `fit_counts` (nothing to fit) and scored by the shared evaluator like any model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from modalrec.errors import ConfigError
from modalrec.models.base import (
    ModelContext,
    Recommender,
    SequentialRecommender,
    Training,
    content_modality_set,
)
from modalrec.types import SeqBatch


def launch_ranks(launch: object, items: torch.Tensor, query_ts: torch.Tensor | None) -> torch.Tensor:
    """[B, M] float64 scores: 1 + dense rank of each item's launch time known at the query (0 = unknown).

    Ranks instead of raw seconds so that the score order is exact in any float type. Without a query time
    (ad-hoc serving) every launch the metadata or the log records counts.
    """
    from modalrec.data.item_age import NEVER

    q = torch.full((1, 1), NEVER - 1, dtype=torch.int64) if query_ts is None else query_ts.reshape(-1, 1)
    ts, known = launch.launch_at(items, q.to(items.device))  # type: ignore[attr-defined]
    values = torch.unique(torch.cat([launch.metadata_ts, launch.first_event_ts]))  # type: ignore[attr-defined]
    rank = torch.searchsorted(values.to(items.device), ts) + 1  # launch times are members of `values`
    return torch.where(known, rank, torch.zeros_like(rank)).to(torch.float64)


def _need_launch(name: str, ctx: ModelContext) -> object:
    if ctx.item_launch is None:
        raise ConfigError(f"{name} needs item launch times (ModelContext.item_launch; pipeline.item_launch builds them)")
    return ctx.item_launch


class _Rule(Recommender):
    """A model with nothing to train: `fit_counts` is a no-op so the pipeline treats it like Pop."""

    training_kind = Training.COUNTS

    def fit_counts(self, split: object) -> _Rule:
        return self


@dataclass
class NewestFirstConfig:
    pass


class NewestFirst(_Rule):
    """Every user gets the catalogue ordered by launch time at the query time, newest first."""

    def __init__(self, cfg: NewestFirstConfig, ctx: ModelContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = int(ctx.n_items)
        self.launch = _need_launch("newest_first", ctx)

    @classmethod
    def build(cls, cfg: NewestFirstConfig, ctx: ModelContext) -> NewestFirst:
        return cls(cfg, ctx)

    @property
    def history_length(self) -> int:
        return 0

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        cols = torch.arange(self.n_items + 1) if items is None else items.cpu()
        q = None if batch.target_ts is None else batch.target_ts.cpu()
        scores = launch_ranks(self.launch, cols, q).expand(len(batch), -1).clone()  # [B, N + 1] or [B, M]
        if items is None:
            scores[:, 0] = 0.0
        return scores.to(batch.items.device)


def recency_weights(length: int, decay: float, like: torch.Tensor) -> torch.Tensor:
    """[L, L] causal history weights over a left-padded window of `length` (`like`'s device and dtype): row t
    weighs position j <= t by decay ** (t - j) and later positions 0; the last row weighs the whole window."""
    steps = torch.arange(length, device=like.device)
    back = (steps[:, None] - steps[None, :]).to(like.dtype)
    return torch.where(back >= 0, decay ** back.clamp(min=0), torch.zeros_like(back))


# the FeatureStore modality of `features.lexical`: the item text as a bag of hashed word and character n-grams
LEXICAL = "lexical"


def idf_weights(bags: torch.Tensor) -> torch.Tensor:
    """[d] smoothed inverse document frequency of each column of bag-of-n-gram rows `bags` [N + 1, d] (row 0 PAD,
    all 0): log((1 + n) / (1 + df)) + 1 with df the number of items whose row is nonzero in the column, so a
    column every item shares weighs 1 and one a single item has weighs the most."""
    df = (bags[1:] != 0).sum(0).to(torch.float32)
    n = float(bags.shape[0] - 1)
    return torch.log((1.0 + n) / (1.0 + df)) + 1.0


def content_table(features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor],
                  modalities: list[str]) -> torch.Tensor:
    """[N + 1, D] unit item vectors: per-modality unit vectors (0 where missing) concatenated, renormalised
    (items with a missing modality stay unit length); row 0 (PAD) is 0. The `lexical` modality's columns are
    weighted by inverse document frequency first (TF-IDF cosine: the words few items share are the ones that say
    two items are alike), over the catalogue the features hold, so items added later move the weights too."""
    parts = []
    for m in modalities:
        x = features[m].float()  # [N + 1, d_m]
        if m == LEXICAL:
            x = x * idf_weights(x)
        x = F.normalize(x, dim=-1)
        if m in missing:
            x = x.masked_fill(missing[m].unsqueeze(1), 0.0)
        parts.append(x)
    table = F.normalize(torch.cat(parts, dim=1), dim=-1)
    table[0] = 0.0
    return table


@dataclass
class ContentKNNConfig:
    max_len: int = 50  # history items averaged
    # "text", "image", "text+image", "lexical" (features.lexical: exact words), "text+lexical", ..., or "auto":
    # text and / or image, whichever the features provide
    modalities: str = "auto"
    # weight of each history item relative to the next newer one: 1 = the plain mean (the rule's definition);
    # 0.5 halves the weight per step back, so the last item counts as much as all older ones together
    decay: float = 1.0


class ContentKNN(SequentialRecommender, _Rule):
    """Cosine of the history's mean content vector to each item's (per-modality unit vectors, concatenated);
    with `decay` < 1 the mean is weighted, the k-th newest history item by decay ** (k - 1)."""

    training_kind = Training.COUNTS

    def __init__(self, cfg: ContentKNNConfig, ctx: ModelContext) -> None:
        super().__init__()
        if cfg.max_len < 1:
            raise ConfigError(f"content_knn: max_len must be >= 1, got {cfg.max_len}")
        if not 0.0 < cfg.decay <= 1.0:
            raise ConfigError(f"content_knn: decay must be in (0, 1] (1 = the plain mean), got {cfg.decay}")
        self.cfg = cfg
        self.modalities = sorted(m for m in type(self).content_modalities(cfg) if m in ctx.item_features)
        if not self.modalities:
            raise ConfigError(f"content_knn needs content features ({cfg.modalities}); the features provide "
                              f"{sorted(ctx.item_features) or 'none'} (set features.text / features.image / features.lexical)")
        # rebuilt from the features wherever the model is built, not saved (nothing in it is learned)
        self.register_buffer("table", self._table(ctx.item_features, ctx.feature_missing), persistent=False)

    @classmethod
    def build(cls, cfg: ContentKNNConfig, ctx: ModelContext) -> ContentKNN:
        return cls(cfg, ctx)

    @classmethod
    def content_modalities(cls, cfg: ContentKNNConfig) -> frozenset[str]:
        return content_modality_set(cfg.modalities)

    def _table(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> torch.Tensor:
        return content_table(features, missing, self.modalities)

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        self.table = self._table(features, missing)

    def forward(self, batch: SeqBatch) -> torch.Tensor:  # [B, D] unit mean history vector (0: no history)
        hist = self.table[batch.items[:, -self.cfg.max_len:]]  # [B, L, D]; PAD rows are 0
        if self.cfg.decay == 1.0:
            return F.normalize(hist.sum(1), dim=-1)
        # left-padded histories: the newest item is the last column whatever the length, so the weights by
        # column are the same for every row (PAD rows add nothing)
        weights = recency_weights(hist.shape[1], self.cfg.decay, hist)[-1]
        return F.normalize(torch.einsum("bld,l->bd", hist, weights), dim=-1)

    def item_embeddings(self) -> torch.Tensor:
        return self.table


@dataclass
class RepeatHistoryConfig:
    max_len: int = 50  # most recent history items re-recommended


class RepeatHistory(_Rule):
    """The user's own items, most recent first (score = position of the last occurrence); others score 0."""

    def __init__(self, cfg: RepeatHistoryConfig, ctx: ModelContext) -> None:
        super().__init__()
        if cfg.max_len < 1:
            raise ConfigError(f"repeat_history: max_len must be >= 1, got {cfg.max_len}")
        self.cfg = cfg
        self.n_items = int(ctx.n_items)

    @classmethod
    def build(cls, cfg: RepeatHistoryConfig, ctx: ModelContext) -> RepeatHistory:
        return cls(cfg, ctx)

    @property
    def history_length(self) -> int:
        return int(self.cfg.max_len)

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        hist = batch.items[:, -self.cfg.max_len:]  # [B, L] left-padded, oldest first
        pos = torch.arange(1, hist.shape[1] + 1, device=hist.device, dtype=torch.float32).expand_as(hist)
        scores = torch.zeros(len(batch), self.n_items + 1, device=hist.device)
        scores.scatter_reduce_(1, hist, pos, reduce="amax")  # latest occurrence wins
        scores[:, 0] = 0.0
        return scores if items is None else scores[:, items]

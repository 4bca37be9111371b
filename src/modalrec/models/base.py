"""The model contract: what every model declares, and the build context it receives.

A model *declares* what the rest of the library needs to know about it, as class attributes and
properties of `Recommender`; the pipeline, trainer, evaluator and server read these declarations and
never probe a model with `hasattr`:

- `training_kind` (a `Training`): which data the trainer feeds it (windows, pairs, events, counts, staged);
- `dot_product_scores`: whether `score(batch) == forward(batch) @ item_embeddings().T`, so serving may rank
  with an (approximate) nearest-neighbour index over `item_embeddings()` (and `embed_items` for new rows);
- `item_bias(n_items + 1)`: a per-item term ([n_items + 1]) when `score(batch) == forward(batch) @
  item_embeddings().T + item_bias(n_items + 1)` (SASRec's new-item offset), else None; the evaluator then ranks without a score block, while
  serving, which reads only `dot_product_scores`, scores such a model through `score`;
- `stateful`: whether scores depend on state built from earlier events (`reset_state` / `observe`);
- `history_length`: how many of the user's most recent items it reads (training windows, evaluation and
  serving cut histories to this; 0 = it reads no history window);
- `content_modalities(cfg)`: which FeatureStore modalities ("text", "image") a configuration reads, so
  models that need none are built without encoding anything;
- `loss_terms(batch)`: how many terms `loss(batch)` averages over, so data-parallel training can weight
  each rank's loss and step on the mean over the whole global batch;
- `training_recipe(params)`: the training settings the family recommends (models/recipe.py), used by
  `run_experiment` wherever the user set none; None = the library defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from modalrec.costs import trainable_parameters
from modalrec.models.losses import NextItemLoss
from modalrec.types import SeqBatch

if TYPE_CHECKING:
    from modalrec.models.recipe import TrainingRecipe


class Training(str, Enum):
    """How a model learns; the pipeline chooses its training data (and the trainer its plan) from this."""

    WINDOWS = "windows"  # next-item targets over TrainWindows of the training sequences: loss(SeqBatch)
    PAIRS = "pairs"  # (user, positive, negatives) triples from training_data(split): loss(PairBatch)
    EVENTS = "events"  # the time-ordered event stream (stateful temporal models): loss(EventBatch)
    COUNTS = "counts"  # no gradient steps: fit_counts(split)
    STAGED = "staged"  # a model-specific sequence of training stages (Recformer's two-stage finetuning)


@dataclass
class ModelContext:
    """Facts about the data a model is built for. Models never read files themselves.

    `item_features` maps a modality ("text", "image", ...) to a [n_items + 1, d] float tensor from the
    FeatureStore (row 0 = PAD) and `feature_missing` to a [n_items + 1] bool tensor. Content models keep
    these as buffers that can be replaced later (`set_item_features`) so new items become rankable.
    """

    n_items: int  # real items (excluding PAD)
    n_users: int
    train_item_counts: np.ndarray | None = None  # [n_items + 1] int64
    item_features: dict[str, torch.Tensor] = field(default_factory=dict)
    feature_missing: dict[str, torch.Tensor] = field(default_factory=dict)
    seed: int = 0
    hidden_states: Any = None  # features.hidden_cache.HiddenStateCache for adapter models (IISAN)
    item_table: Any = None  # data.items.ItemTable, for models that read item text themselves (Recformer)
    item_launch: Any = None  # data.item_age.ItemLaunch: launch time / causal age of every item at a query time
    item_activity: Any = None  # data.item_age.ItemActivity: each item's events in the days before a query time
    train_targets: Any = None  # (item [E], ts [E]): training events that follow an earlier event of their user

    def items_with_training_events(self) -> torch.Tensor:  # [n_items + 1] bool, PAD False
        """The items training shows: the hybrid tower's ID rows, the items a new-item offset leaves alone (all
        False without training counts)."""
        seen = torch.zeros(self.n_items + 1, dtype=torch.bool)
        if self.train_item_counts is not None:
            seen = torch.as_tensor(self.train_item_counts[: self.n_items + 1] > 0).bool().clone()
            seen[0] = False
        return seen

    @classmethod
    def for_split(cls, split: Any, **facts: Any) -> ModelContext:
        """The facts every model takes from its split (catalogue size, user count, training item counts), with
        `facts` (features, seed, launch times...) on top."""
        return cls(n_items=split.n_items, n_users=split.n_users, train_item_counts=split.train.item_counts(), **facts)


def flag_of(flags: torch.Tensor, items: torch.Tensor) -> torch.Tensor:  # [N + 1], [...] -> [...] bool
    """`flags[items]`, False for items past the end of `flags` (appended to the catalogue after it was made)."""
    known = items < len(flags)
    return flags[torch.where(known, items, 0)] & known


ANY_CONTENT = frozenset({"text", "image"})  # "whichever of text / image the features provide"


def content_modality_set(spec: str) -> frozenset[str]:
    """A content modality option ("auto" = ANY_CONTENT, else "text", "image" or "text+image") as a set."""
    return ANY_CONTENT if spec == "auto" else frozenset(str(spec).split("+"))


def tower_modalities(kind: str, options: dict[str, Any] | None = None) -> frozenset[str]:
    """FeatureStore modalities an item tower of this kind reads (towers over hidden-state caches or
    live encoders read none)."""
    if kind == "hybrid":
        content = (options or {}).get("content", "auto")
        return content_modality_set(content)
    if kind in ("text", "image", "text+image"):
        return frozenset(kind.split("+"))
    return frozenset()


class Recommender(nn.Module):
    """The one model contract (see the module docstring). Subclasses set the class attributes and
    implement `history_length`, `score` and, unless `training_kind` is COUNTS, `loss`."""

    training_kind: ClassVar[Training]
    dot_product_scores: ClassVar[bool] = False
    stateful: ClassVar[bool] = False

    @property
    def history_length(self) -> int:
        """Most recent history items the model reads (0: it reads no history window)."""
        raise NotImplementedError

    @classmethod
    def content_modalities(cls, cfg: Any) -> frozenset[str]:
        """FeatureStore modalities this configuration reads; empty when it needs no content features."""
        return frozenset()

    @classmethod
    def training_recipe(cls, params: Mapping[str, Any]) -> TrainingRecipe | None:
        """The recommended training recipe for model params `params` (as the user gave them); None = the
        library defaults. Not inherited by accident: a subclass that is its own family returns None."""
        return None

    def score(self, batch: Any, items: torch.Tensor | None = None) -> torch.Tensor:  # [B, N + 1] or [B, M]
        raise NotImplementedError

    def item_bias(self, n_rows: int) -> torch.Tensor | None:
        """[n_rows] (items 0..n_rows - 1, the rows of `item_embeddings()`) when scores are `forward(batch) @
        item_embeddings().T` plus this per-item term; else None (plain dot products say so by `dot_product_scores`).
        The caller gives the row count, so the term costs no pass over the item tower."""
        return None

    def loss(self, batch: Any) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} is not trained by gradient steps ({self.training_kind.value})")

    def loss_terms(self, batch: Any) -> int:
        """Number of terms `loss(batch)` averages over; default: one per row (pairs, events)."""
        return len(batch)

    def training_source(self, split: Any) -> Any:
        """PAIRS models: the (user, positive, negatives) source over `split.train`. Others refuse."""
        raise TypeError(f"{type(self).__name__} is trained from {self.training_kind.value}, not pairs")

    def fit_counts(self, split: Any) -> Recommender:
        """COUNTS models: set scores from the training data. Others refuse."""
        raise TypeError(f"{type(self).__name__} is trained from {self.training_kind.value}, not fitted from counts")

    def reseed(self, seed: int) -> None:
        """Restart the model's own random streams (negatives, masks) for an epoch; default: none."""

    def reset_state(self) -> None:
        """Stateful models: forget all events (called before streaming events in time order)."""

    def observe(self, batch: Any) -> None:
        """Stateful models: commit events after they were scored. Stateless models ignore events."""

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        """Replace item features (e.g. after items were appended). ID-only models refuse."""
        raise TypeError(f"{type(self).__name__} has no content features; it cannot score new items")

    def num_trainable_parameters(self) -> int:
        return trainable_parameters(self)


class SequentialRecommender(Recommender):
    """A history encoder: state [B, d] from a SeqBatch; score = state . item_embeddings().T.

    Subclasses implement `forward` (SeqBatch -> [B, d] state at the last position), `item_embeddings`
    ([n_items + 1, d]) and `loss`. Content models compute item embeddings from features, so an item
    added after training is scored the moment its features exist.
    """

    training_kind = Training.WINDOWS
    dot_product_scores = True

    @property
    def history_length(self) -> int:
        return int(self.cfg.max_len)

    @classmethod
    def content_modalities(cls, cfg: Any) -> frozenset[str]:
        return tower_modalities(cfg.tower.kind, cfg.tower.options)

    def forward(self, batch: SeqBatch) -> torch.Tensor:  # [B, d]
        raise NotImplementedError

    def loss_terms(self, batch: Any) -> int:
        """A SeqBatch: one term per non-PAD target (every next-item target of [B, L] training windows);
        other batches (pairs): one per row."""
        if isinstance(batch, SeqBatch):
            return int((batch.targets > 0).sum())
        return len(batch)

    def item_embeddings(self) -> torch.Tensor:  # [n_items + 1, d]
        raise NotImplementedError

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:  # [M] -> [M, d]
        """Rows of `item_embeddings()` for `items` (towers compute only these rows)."""
        return self.item_embeddings()[items]

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        state = self.forward(batch)  # [B, d]
        table = self.item_embeddings()  # [N + 1, d]
        if items is not None:
            table = table[items]  # [M, d]
        return state @ table.T  # [B, N + 1] or [B, M]


class CausalTowerRecommender(SequentialRecommender):
    """A causal sequence model over an item tower (SASRec, GRU4Rec): `encode` maps left-padded items
    [B, L] to per-position states [B, L, d] (state t has seen items[:, :t + 1]); training scores every
    position against the next item through `self.criterion` (a models.losses.NextItemLoss).

    Subclasses set `self.tower`, `self.criterion` and `self.cfg` (with `max_len`) and implement `encode`;
    they may set `self.prior` (models/freshness.py), an additive per-item logit at the query time
    (`batch.target_ts`), in which case scores are no longer a fixed table's dot products.
    """

    tower: ItemTower
    criterion: NextItemLoss
    cfg: Any

    def __init__(self) -> None:
        super().__init__()
        self.prior: nn.Module | None = None  # an instance attribute: a class default would hide the submodule

    def encode(self, items: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, d]
        raise NotImplementedError

    def encode_at(self, items: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """`encode(items)[at]` ([M, d]) for a [B, L] bool `at`; models may compute only those states."""
        return self.encode(items)[at]

    def reseed(self, seed: int) -> None:
        self.criterion.reseed(seed)

    def encode_inputs(self, batch: SeqBatch) -> dict[str, Any]:
        """Keyword arguments of `encode` / `encode_at` beyond the items (SASRec: history event times)."""
        return {}

    def forward(self, batch: SeqBatch) -> torch.Tensor:  # [B, d] state after the last item
        return self.encode(batch.items, **self.encode_inputs(batch))[:, -1]

    def item_embeddings(self) -> torch.Tensor:  # [n_items + 1, d]
        return self.tower.all()

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:  # [M] -> [M, d]
        return self.tower(items)

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        state = self.forward(batch)  # [B, d]
        tower = self.scoring_tower()
        table = tower.all() if items is None else tower(items)  # [N + 1, d] or [M, d]
        scores = state @ table.T  # [B, N + 1] or [B, M]
        terms = self.score_terms()
        if terms is None:
            return scores
        cols = torch.arange(scores.shape[1], device=scores.device) if items is None else items
        q = None if batch.target_ts is None else batch.target_ts.reshape(-1, 1)  # [B, 1]
        return scores + terms(cols, q, state)

    def scoring_tower(self) -> nn.Module:
        """The tower whose item vectors are dotted with the user state to score items (and as the loss's
        classes): the item tower, unless a model scores part of each vector separately (`score_terms`)."""
        return self.tower

    def score_terms(self) -> Callable[..., torch.Tensor] | None:
        """Additive logits of (items, query times [B, 1] / [M], states) on top of the dot products, broadcast
        like FreshnessPrior: the freshness prior, or None."""
        return self.prior

    def loss(self, batch: SeqBatch) -> torch.Tensor:
        if batch.targets.dim() != 2:
            raise ValueError(f"{type(self).__name__}.loss needs training batches with [B, L] targets (TrainWindows)")
        L = min(batch.items.shape[1], self.cfg.max_len)
        targets = batch.targets[:, -L:]  # [B, L]
        at = targets > 0  # only these states are scored (with overlapping windows, few of them)
        states = self.encode_at(batch.items, at, **self.encode_inputs(batch))  # [M, d]
        if self.score_terms() is None and not self.criterion.needs_query_ts:
            return self.states_loss(states, targets[at], None)
        if batch.target_ts is None:
            raise ValueError(f"{type(self).__name__} has time-dependent score terms or a launch-aware loss catalogue: "
                             "training batches need target_ts")
        return self.states_loss(states, targets[at], batch.target_ts[:, -L:][at])

    def states_loss(self, states: torch.Tensor, targets: torch.Tensor, query_ts: torch.Tensor | None,
                    tower: nn.Module | None = None) -> torch.Tensor:
        """The criterion of states [M, d] against targets [M] (query_ts [M] or None) through `tower`
        (default: the item tower); subclasses add auxiliary terms here."""
        tower = self.scoring_tower() if tower is None else tower
        if query_ts is None:
            return self.criterion(states, targets, tower)
        return self.criterion(states, targets, tower, self.score_terms(), query_ts)

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

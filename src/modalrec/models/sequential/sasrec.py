"""SASRec: causal self-attention over the item sequence (Kang & McAuley, 2018), any item tower.

Inputs are left-padded, so the last slot is always the most recent item and the learnable position
embeddings are counted from the right (the last item always gets the same position). Training uses
the state at every position against the next item (TrainWindows' [B, L] targets), so one forward pass
yields up to L training targets per sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.models.base import CausalTowerRecommender, ItemTower, ModelContext, flag_of
from modalrec.models.first_event import FirstEventGate, ImputedIDScore, gated_id_scores
from modalrec.models.freshness import FreshnessPrior, HistoryAge
from modalrec.models.layers import SelfAttentionBlock, init_weights
from modalrec.models.losses import NextItemLoss
from modalrec.models.recipe import LIBRARY_RECIPE, TrainingRecipe
from modalrec.models.towers.content import HybridTower
from modalrec.models.towers.item_towers import TowerConfig, checked_tower, tower_from_config
from modalrec.seeding import torch_generator
from modalrec.types import SeqBatch


@dataclass
class SASRecConfig:
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn_dim: int | None = None  # feed-forward width; None = 4 * dim (RecBole's inner_size 256 at dim 64)
    dropout: float = 0.2
    attn_dropout: float | None = None  # None = dropout
    max_len: int = 50
    norm: str = "post"  # "post" (original SASRec / RecBole) or "pre" (more stable when deep)
    positions: str = "from_end"  # "from_end": slot from the right; "from_start": count from the first real item
    loss: str = "ce"  # "ce" | "sampled" | "bce" | "bpr" | "inbatch"
    n_negatives: int | None = None  # None: 100 for "sampled", 1 for "bce" / "bpr"
    negatives: str = "uniform"  # "uniform" | "popularity"
    label_smoothing: float = 0.0  # "ce" only: share of each target's mass spread over the catalogue
    loss_catalogue: str = "train"  # "train": items with training events; "all": every item (new ones too);
    # "launched": every item that exists at the event's time (never a negative before its launch)
    loss_popularity: float = 0.0  # "ce": weight of a log training-frequency term added to training logits only
    loss_popularity_scope: str = "all"  # "items": that term trains the item vectors only, the prior learns without it
    age: str = "none"  # "none" | "bias": a learned logit per bucket of item age at the query (models/freshness.py)
    # | "bias+trend": per (age bucket, bucket of the item's events in the last 7 days before the query)
    age_start: str = "rates"  # "rates": the prior starts at the training log's log event rates; "zero"
    age_personal: bool = False  # each age cell also gets a vector dotted with the user state (per-user freshness)
    age_input: bool = False  # each history item's input also gets a vector of its age bucket when it was taken
    # hybrid tower only: weight of a second loss term that scores the same states against the tower's content
    # part alone -- the vectors items without training events get -- so the content part learns to rank too
    content_aux: float = 0.0
    # hybrid tower only: "after_first_event" adds an item's ID vector to its score only once the item had an
    # event before the query time (models/first_event.py), so training scores not-yet-taken items as new ones
    # are scored at prediction time; "always": every item with training events, at every time
    id_scores: str = "always"
    # with "after_first_event", training only: share of items (drawn afresh at every step) scored without their ID
    # vector, so the freshness prior's no-ID cells learn what an item with recent activity but no ID vector --
    # an item without training events at prediction time -- is worth
    id_score_dropout: float = 0.0
    # content or hybrid tower, prediction only: added to the score of every item without training events (added
    # at serving too; the hybrid tower's items without an ID vector, with "after_first_event" also items not taken
    # before the query). 0 keeps the trained model; a positive offset ranks new items higher at some cost to the
    # others (select.new_item_offset picks it on VALID within a stated loss of overall NDCG@10)
    new_item_offset: float = 0.0
    # hybrid tower only: "score" adds the offset as logits; "id_spread" scores an item without an ID vector as
    # if its ID part were the user's mean ID score plus `new_item_offset` standard deviations of it
    # (first_event.ImputedIDScore: the same place in every user's own spread); 0 is the trained model either way
    new_item_offset_unit: str = "score"
    init_std: float = 0.02
    tower: TowerConfig = field(default_factory=TowerConfig)


# The recommended recipe (`modalrec train model.name=sasrec`, models/recipe.py). Chosen on VALID NDCG@10 of
# ID SASRec on ML-100K over 8 seeds (benchmarks/recbole_side_by_side.py): 0.0722 against 0.0656 for the library
# defaults and 0.0688 for RecBole 1.2.1; stride 1 was 0.0733 at about 5x the compute per epoch
# (benchmarks/results/recbole_seeds_stride10_ls05_ema998.json, recbole_seeds_stride1_ls05.json).
# lr 3e-3 instead of 1e-3: at 1e-3 VALID was still climbing after 20-30 epochs. Screened on VALID, 3e-3 had the
# best mean over the seeds each lr ran (1e-3 and 3e-3: 0, 1, 3; 2e-3: 0, 1; 5e-3: 1;
# results/recbole_seeds/lr_screen_s0_s1_s3.json); over seeds 0-9
# it peaks at epoch 12.4 on average instead of 17.5, with VALID 0.0785 against 0.0738 and fewer seconds to the
# best checkpoint (recbole_seeds_sasrec_defaults.json against recbole_seeds_sasrec_defaults_lr1e3.json).
SASREC_RECIPE = TrainingRecipe(
    batch_unit="targets",  # ~256 targets per step whatever the stride (RecBole's 256 samples per step)
    window_stride=10,  # every target sees >= 40 earlier items (or its whole history) at 1/5 of stride 1's cost
    grad_clip=0.0,
    ema_decay=0.998,
    lr=3e-3,  # ID tower only: the content towers' evidence (TOWERS_EVIDENCE) was measured at 1e-3
    model={"label_smoothing": 0.5},
    evidence="benchmarks/results/recbole_seeds_stride10_ls05_ema998.json, "
             "benchmarks/results/recbole_seeds_sasrec_defaults.json",
)
# Item towers the recipe is the default for. On VALID NDCG@10 (built-in data and ML-100K, 4 seeds,
# benchmarks/results/recipe_towers_gpu.json) it lifted text towers on both datasets, while hybrid towers lost
# cold-item quality on both (built-in -0.019, ML-100K -0.012) and image / text+image were measured on one
# dataset only, with cold items lower too: those keep the library defaults.
RECIPE_TOWERS = ("id", "text")
TOWERS_EVIDENCE = "benchmarks/results/recipe_towers_gpu.json"


class SASRec(CausalTowerRecommender):
    @classmethod
    def training_recipe(cls, params: Mapping[str, Any]) -> TrainingRecipe | None:
        """SASREC_RECIPE for the towers in RECIPE_TOWERS (else None: the library defaults); label smoothing
        only for the full-softmax loss, the stride at most max_len. Subclasses (IISAN, the PEFT baselines)
        are families of their own: the recipe was chosen for SASRec itself, so they get the library defaults."""
        kind = _tower_kind(params.get("tower"))
        if cls is not SASRec or kind not in RECIPE_TOWERS:
            return None
        evidence = SASREC_RECIPE.evidence if kind == "id" else f"{SASREC_RECIPE.evidence}, {TOWERS_EVIDENCE}"
        model = SASREC_RECIPE.model if params.get("loss", SASRecConfig.loss) == "ce" else {}
        stride = min(int(SASREC_RECIPE.window_stride or 1), int(params.get("max_len", SASRecConfig.max_len)))
        lr = SASREC_RECIPE.lr if kind == "id" else LIBRARY_RECIPE.lr
        return dataclasses.replace(SASREC_RECIPE, model=model, window_stride=stride, lr=lr, evidence=evidence)

    def __init__(self, cfg: SASRecConfig, ctx: ModelContext, tower: ItemTower | None = None) -> None:
        super().__init__()
        _check(cfg)
        self.cfg, self.n_items = cfg, ctx.n_items
        # a caller may hand in a prebuilt tower (IISAN, the PEFT baselines); else cfg.tower names one
        self.tower = tower_from_config(cfg.tower, ctx, cfg.dim) if tower is None else checked_tower(tower, cfg.dim)
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        self.input_norm = nn.LayerNorm(cfg.dim, eps=1e-8)
        self.input_drop = nn.Dropout(cfg.dropout)
        attn_p = cfg.dropout if cfg.attn_dropout is None else cfg.attn_dropout
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(
                cfg.dim, cfg.n_heads, cfg.ffn_dim or 4 * cfg.dim, cfg.dropout, attn_p, cfg.norm == "pre"
            )
            for _ in range(cfg.n_layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-8) if cfg.norm == "pre" else nn.Identity()
        self.criterion = NextItemLoss(
            cfg.loss, ctx.n_items, cfg.n_negatives, cfg.negatives, ctx.train_item_counts, seed=ctx.seed,
            label_smoothing=cfg.label_smoothing, catalogue=cfg.loss_catalogue, launch=ctx.item_launch,
            popularity=cfg.loss_popularity, popularity_scope=cfg.loss_popularity_scope,
        )
        if cfg.age != "none":
            if ctx.item_launch is None or (cfg.age == "bias+trend" and ctx.item_activity is None):
                raise ConfigError(f"sasrec: age={cfg.age!r} needs item launch times and, for the trend, a log with "
                                  "a clock (ModelContext.item_launch / item_activity)")
            start = None if cfg.age_start == "zero" or ctx.train_targets is None else (
                *ctx.train_targets, self.criterion.classes)
            self.prior = FreshnessPrior(ctx.item_launch, activity=ctx.item_activity if cfg.age == "bias+trend" else None,
                                        start_from=start, dim=cfg.dim if cfg.age_personal else None,
                                        launched_only=cfg.loss_catalogue == "launched",
                                        id_axis=cfg.id_scores == "after_first_event")
        self.history_age: HistoryAge | None = None
        if cfg.age_input:
            if ctx.item_launch is None:
                raise ConfigError("sasrec: age_input needs item launch times (ModelContext.item_launch)")
            self.history_age = HistoryAge(ctx.item_launch, cfg.dim)
        if cfg.content_aux and not isinstance(getattr(self.tower, "content", None), nn.Module):
            raise ConfigError("sasrec: content_aux needs the 'hybrid' item tower (a content part next to the IDs)")
        self.id_gate: FirstEventGate | None = None
        if cfg.id_scores == "after_first_event":
            if not isinstance(self.tower, HybridTower):
                raise ConfigError("sasrec: id_scores='after_first_event' needs the 'hybrid' item tower")
            if ctx.item_launch is None or ctx.item_launch.clock != "unix_seconds":
                raise ConfigError("sasrec: id_scores='after_first_event' needs a log with a clock (event times "
                                  "to tell when an item was first taken)")
            self.id_gate = FirstEventGate(ctx.item_launch)
        self._id_dropped: torch.Tensor | None = None  # [N + 1] bool during a training step (id_score_dropout)
        # the items a new-item offset lifts: no training events (for the hybrid tower exactly the items without an
        # ID vector); rows past the end -- items appended after training -- are new too. Derived from the training
        # counts each time the model is built, so not saved with the weights.
        self.register_buffer("trained_items", ctx.items_with_training_events(), persistent=False)
        if cfg.new_item_offset and (ctx.train_item_counts is None or not self.content_modalities(cfg)):
            raise ConfigError("sasrec: new_item_offset needs an item tower that scores items from content ('text', "
                              "'image', 'text+image' or 'hybrid') and the training item counts")
        if cfg.new_item_offset_unit == "id_spread" and not isinstance(self.tower, HybridTower):
            raise ConfigError("sasrec: new_item_offset_unit='id_spread' needs the 'hybrid' item tower (ID vectors "
                              "to measure each user's ID scores by)")
        self.imputed_id_score = ImputedIDScore() if cfg.new_item_offset_unit == "id_spread" else None
        self.new_item_offset = cfg.new_item_offset  # settable after training (benchmarks/cold_start.py)
        init_weights(self, cfg.init_std, torch_generator(ctx.seed, "init/sasrec"))

    def states_loss(self, states: torch.Tensor, targets: torch.Tensor, query_ts: torch.Tensor | None,
                    tower: nn.Module | None = None) -> torch.Tensor:
        loss = super().states_loss(states, targets, query_ts, tower)
        if tower is None and self.cfg.content_aux:
            loss = loss + self.cfg.content_aux * super().states_loss(states, targets, query_ts, self.tower.content)
        return loss

    @property
    def new_item_offset(self) -> float:
        return self._new_item_offset

    @new_item_offset.setter
    def new_item_offset(self, offset: float) -> None:
        self._new_item_offset = float(offset)
        # the contract, in one place: scores are a fixed table's dot products unless the prior (query time), the
        # first-event gate (query time) or the offset (a per-item term) adds to them; then ranking goes by `score`
        self.dot_product_scores = self.prior is None and self.id_gate is None and not self._new_item_offset

    def item_bias(self, n_rows: int) -> torch.Tensor | None:
        """The new-item offset as a per-item term, when it is the only term beyond the dot products (prediction)."""
        if (self.prior is not None or self.id_gate is not None or not self._new_item_offset or self.training
                or self.imputed_id_score is not None):  # that offset depends on the user state
            return None
        return self._offset_terms(torch.arange(n_rows, device=self.trained_items.device), None)

    def scoring_tower(self) -> nn.Module:
        return self.tower if self.id_gate is None else self.tower.content

    def score_terms(self) -> Any:
        if self.id_gate is not None:
            return self._gated_terms
        return self._offset_terms if self.new_item_offset and not self.training else self.prior

    def without_training_events(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [...] bool
        """Items with no training events (PAD too: never a candidate), or appended after training."""
        return ~flag_of(self.trained_items, items)

    def _offset_terms(self, items: torch.Tensor, query_ts: torch.Tensor | None,
                      state: torch.Tensor | None = None) -> torch.Tensor:
        """The new-item offset on every item without training events, plus the prior if any (prediction only)."""
        out = self._new_item_terms(self.without_training_events(items), state)
        return out if self.prior is None else out + self.prior(items, query_ts, state)

    def _new_item_terms(self, new: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """The offset on the `new` items ([C] shared by every row, or [B, C]): a constant, or (id_spread) each
        row's imputed ID score -> [C] or [B, C]."""
        if self.imputed_id_score is None:
            return self.new_item_offset * new.to(torch.float32)
        if state is None:
            raise ValueError("sasrec: new_item_offset_unit='id_spread' scores need the user states")
        # the tower's `warm` flags are its ID rows (one per embedding row): no per-call lookup of every item
        imputed = self.imputed_id_score(state, self.tower.id_embedding.weight, self.tower.warm,
                                        self.new_item_offset)  # [B]
        return new.to(imputed.dtype) * imputed[:, None]

    def _gated_terms(self, items: torch.Tensor, query_ts: torch.Tensor | None,
                     state: torch.Tensor | None = None) -> torch.Tensor:
        """The ID part of each item's score, counted once the item was taken before the query, plus the prior
        (its cells apart for items scored with and without an ID vector)."""
        per_row = items.dim() == 1 and query_ts is not None and query_ts.dim() == 1
        has_id = self.id_gate(items, query_ts) & self.tower.has_id_vector(items)
        if self._id_dropped is not None:
            has_id = has_id & ~self._id_dropped[items.clamp(max=len(self._id_dropped) - 1)]
        out = gated_id_scores(state, self.tower.id_vectors(items, rows=has_id), has_id, per_row)
        if self.new_item_offset and not self.training:
            out = out + self._new_item_terms(~has_id, state).to(out.dtype)
        return out if self.prior is None else out + self.prior(items, query_ts, state, has_id)

    def loss(self, batch: SeqBatch) -> torch.Tensor:
        if self.id_gate is None or not self.cfg.id_score_dropout:
            return super().loss(batch)
        # one draw per step, so an item is scored without its ID vector in every row and term of the step
        # (torch's RNG: the training loop seeds it per epoch)
        self._id_dropped = torch.rand(self.n_items + 1, device=batch.items.device) < self.cfg.id_score_dropout
        try:
            return super().loss(batch)
        finally:
            self._id_dropped = None

    @classmethod
    def build(cls, cfg: SASRecConfig, ctx: ModelContext) -> SASRec:
        return cls(cfg, ctx)

    def encode_inputs(self, batch: SeqBatch) -> dict[str, Any]:
        if self.history_age is None:
            return {}
        q = batch.target_ts if batch.target_ts is not None and batch.target_ts.dim() == 1 else None
        return {"timestamps": batch.timestamps, "query_ts": q}

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None,
               query_ts: torch.Tensor | None = None) -> torch.Tensor:
        """items [B, L] left-padded -> states [B, L, d] (state t has seen items[:, :t + 1]). `timestamps`
        ([B, L], the items' event times) and `query_ts` ([B]) are read only with `age_input`."""
        x, mask = self._embed_and_mask(items, timestamps, query_ts)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)

    def encode_at(self, items: torch.Tensor, at: torch.Tensor, timestamps: torch.Tensor | None = None,
                  query_ts: torch.Tensor | None = None) -> torch.Tensor:
        """`encode(items)[at]` ([M, d]); the last block computes only the `at` rows ([B, L] bool)."""
        x, mask = self._embed_and_mask(items, timestamps, query_ts)
        if not self.blocks:
            return self.final_norm(x[at])
        for block in self.blocks[:-1]:
            x = block(x, mask)
        return self.final_norm(self.blocks[-1].forward_at(x, mask, at))

    def _embed_and_mask(self, items: torch.Tensor, timestamps: torch.Tensor | None = None,
                        query_ts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """items [B, L] -> (block input [B, L, d], attention mask [B, 1, L, L])."""
        items = items[:, -self.cfg.max_len :]  # [B, L] keep the most recent max_len
        L = items.shape[1]
        valid = items > 0  # [B, L]
        x = self.tower(items) + self._position_embeddings(valid)  # [B, L, d]
        if self.history_age is not None:
            ts = None if timestamps is None else timestamps[:, -L:]
            x = x + self.history_age(items, ts, query_ts)
        x = self.input_drop(self.input_norm(x))
        causal = torch.ones(L, L, dtype=torch.bool, device=items.device).tril_()  # [L, L]
        eye = torch.eye(L, dtype=torch.bool, device=items.device)  # [L, L]
        # Real queries see earlier real items; a PAD query sees only itself (no all-masked row -> no NaN).
        mask = (causal & valid[:, None, :]) | eye  # [B, L, L]
        return x, mask[:, None]  # [B, 1, L, L] broadcast over heads

    def _position_embeddings(self, valid: torch.Tensor) -> torch.Tensor:
        """[B, L] real-item mask -> position embeddings, [L, d] (from_end) or [B, L, d] (from_start).

        from_start numbers items 0, 1, ... from the first real item of the row, so the state after the
        k-th item of a training window sees the same positions as an evaluation history of k items (the
        RecBole / original SASRec convention). from_end gives the most recent slot a fixed position, which
        makes a prefix at slot j in a long training window look different from the same prefix at
        evaluation, where the history always ends in the last slot.
        """
        L = valid.shape[1]
        if self.cfg.positions == "from_end":
            return self.positions.weight[self.cfg.max_len - L :]
        idx = (valid.long().cumsum(1) - 1).clamp_(min=0)  # [B, L] PAD slots -> 0 (they are masked as keys)
        return self.positions(idx)


def _check(cfg: SASRecConfig) -> None:
    if cfg.dim % cfg.n_heads:
        raise ConfigError(f"sasrec: dim ({cfg.dim}) must be divisible by n_heads ({cfg.n_heads})")
    if cfg.norm not in ("pre", "post"):
        raise ConfigError(f"sasrec: norm must be 'pre' or 'post', got {cfg.norm!r}")
    if cfg.positions not in ("from_end", "from_start"):
        raise ConfigError(f"sasrec: positions must be 'from_end' or 'from_start', got {cfg.positions!r}")
    if cfg.age not in ("none", "bias", "bias+trend"):
        raise ConfigError(f"sasrec: age must be 'none', 'bias' or 'bias+trend', got {cfg.age!r}")
    if cfg.age_personal and cfg.age == "none":
        raise ConfigError("sasrec: age_personal needs a freshness prior (age 'bias' or 'bias+trend')")
    if cfg.age_start not in ("rates", "zero"):
        raise ConfigError(f"sasrec: age_start must be 'rates' or 'zero', got {cfg.age_start!r}")
    if cfg.id_scores not in ("always", "after_first_event"):
        raise ConfigError(f"sasrec: id_scores must be 'always' or 'after_first_event', got {cfg.id_scores!r}")
    if cfg.content_aux and cfg.id_scores == "after_first_event":
        raise ConfigError("sasrec: content_aux scores the content part alone; with id_scores='after_first_event' "
                          "items not taken yet are already scored so")
    if not 0.0 <= cfg.id_score_dropout < 1.0 or (cfg.id_score_dropout and cfg.id_scores != "after_first_event"):
        raise ConfigError("sasrec: id_score_dropout must lie in [0, 1) and needs id_scores='after_first_event'")
    if cfg.content_aux < 0:
        raise ConfigError(f"sasrec: content_aux must be >= 0, got {cfg.content_aux}")
    if cfg.new_item_offset_unit not in ("score", "id_spread"):
        raise ConfigError(f"sasrec: new_item_offset_unit must be 'score' or 'id_spread', got {cfg.new_item_offset_unit!r}")
    if cfg.max_len < 1 or cfg.n_layers < 0:
        raise ConfigError("sasrec: max_len must be >= 1 and n_layers >= 0")


def _tower_kind(tower: Any) -> str:
    """The item tower kind of SASRec params: a `tower` mapping (config), a TowerConfig, or absent (ID)."""
    if tower is None:
        return TowerConfig.kind
    return str(tower.get("kind", TowerConfig.kind) if isinstance(tower, Mapping) else tower.kind)

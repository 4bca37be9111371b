"""SASRec that starts as content-kNN and learns a residual on top of it.

score(history, item) = tau * cos(mean unit content of the history, unit content of the item)
                       (the mean weighted by recency with `knn_decay` < 1, as content_knn's `decay`)
                       + gate * SASRec(history) . tower(item)

The first term is exactly the `content_knn` rule (frozen features, no training) scaled by a learned
temperature `tau`; `gate` starts at 0, so the untrained model ranks every item as content-kNN does and the
VALID evaluation at epoch 0 lets early stopping keep that starting point when training does not beat it.
Content similarity generalises to items without training events; what SASRec learns is added only as far as
it helps the training loss. Implemented as one dot product: the state is [gate * s ; tau * q] and the item
vector [e ; c], so the shared losses and the evaluator's table scoring apply unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.errors import ConfigError
from modalrec.models.base import CausalTowerRecommender, ItemTower, ModelContext, content_modality_set
from modalrec.models.coldstart import content_table, recency_weights
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig


@dataclass
class KNNSASRecConfig(SASRecConfig):
    temperature: float = 10.0  # initial tau (learned, kept positive through its log)
    knn_modalities: str = "auto"  # content of the kNN term: "text", "image", "text+image", "auto" = all provided
    knn_decay: float = 1.0  # the kNN term's history weights, as content_knn's `decay` (1 = the plain mean)


class _JointTower(ItemTower):
    """Item vectors [e ; c]: the backbone tower's next to the frozen unit content vectors `content`."""

    def __init__(self, backbone: ItemTower, ctx: ModelContext, modalities: list[str]) -> None:
        super().__init__()
        self.backbone, self.modalities = backbone, modalities
        # rebuilt from the features wherever the model is built (not saved: a text+lexical table is 2,432 floats an
        # item, hundreds of MB in every checkpoint for nothing training changes)
        self.register_buffer("content", content_table(ctx.item_features, ctx.feature_missing, modalities),
                             persistent=False)
        self.dim = backbone.dim + self.content.shape[1]

    def all(self) -> torch.Tensor:  # [N + 1, d + D]
        return torch.cat([self.backbone.all(), self.content], dim=-1)

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [..., d + D]
        return torch.cat([self.backbone(items), self.content[items]], dim=-1)

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        self.backbone.set_item_features(features, missing)  # an ID backbone refuses: it cannot score new items
        self.content = content_table(features, missing, self.modalities)


class KNNSASRec(CausalTowerRecommender):
    def __init__(self, cfg: KNNSASRecConfig, ctx: ModelContext) -> None:
        super().__init__()
        if cfg.temperature <= 0:
            raise ConfigError(f"knn_sasrec: temperature must be > 0, got {cfg.temperature}")
        if not 0.0 < cfg.knn_decay <= 1.0:
            raise ConfigError(f"knn_sasrec: knn_decay must be in (0, 1] (1 = the plain mean), got {cfg.knn_decay}")
        if cfg.age_personal:
            raise ConfigError("knn_sasrec: age_personal reads the SASRec state alone; use age 'bias' / 'bias+trend'")
        if cfg.age_input:
            raise ConfigError("knn_sasrec: age_input is not supported (the kNN term reads items alone)")
        if cfg.id_scores != "always":
            raise ConfigError("knn_sasrec: id_scores must be 'always' (its joint tower scores one vector per item)")
        self.cfg, self.n_items = cfg, ctx.n_items
        self.modalities = sorted(m for m in type(self).knn_modalities(cfg) if m in ctx.item_features)
        if not self.modalities:
            raise ConfigError(f"knn_sasrec needs content features ({cfg.knn_modalities}); the features provide "
                              f"{sorted(ctx.item_features) or 'none'} (set features.text / features.image / features.lexical)")
        # the offset is set after the backbone is built: SASRec alone refuses it on an ID tower, which cannot score
        # new items, but here the kNN term scores them from content
        self.backbone = SASRec(dataclasses.replace(cfg, new_item_offset=0.0), ctx)
        self.log_tau = nn.Parameter(torch.tensor(math.log(cfg.temperature)))
        self.gate = nn.Parameter(torch.zeros(()))
        self.tower = _JointTower(self.backbone.tower, ctx, self.modalities)
        self.criterion = self.backbone.criterion
        self.prior = self.backbone.prior
        self.new_item_offset = cfg.new_item_offset

    # The new-item offset (select.new_item_offset) is the backbone's: the same constant on every item without
    # training events, added to the joint score. Kept in one place, so a sweep that sets it here moves the scores.
    @property
    def new_item_offset(self) -> float:
        return self.backbone.new_item_offset

    @new_item_offset.setter
    def new_item_offset(self, offset: float) -> None:
        self.backbone.new_item_offset = offset

    @property
    def dot_product_scores(self) -> bool:  # the backbone's terms (prior, offset) are the joint score's
        return self.backbone.dot_product_scores

    def item_bias(self, n_rows: int) -> torch.Tensor | None:
        return self.backbone.item_bias(n_rows)

    def score_terms(self) -> Any:
        return self.backbone.score_terms()

    @classmethod
    def build(cls, cfg: KNNSASRecConfig, ctx: ModelContext) -> KNNSASRec:
        return cls(cfg, ctx)

    @classmethod
    def knn_modalities(cls, cfg: KNNSASRecConfig) -> frozenset[str]:
        return content_modality_set(cfg.knn_modalities)

    @classmethod
    def content_modalities(cls, cfg: KNNSASRecConfig) -> frozenset[str]:
        return super().content_modalities(cfg) | cls.knn_modalities(cfg)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """items [B, L] left-padded -> [B, L, d + D]: [gate * SASRec state ; tau * unit running content sum]."""
        items = items[:, -self.cfg.max_len :]
        content = self.tower.content[items]  # [B, L, D]; PAD rows are 0 and add nothing
        if self.cfg.knn_decay == 1.0:
            running = F.normalize(content.cumsum(1), dim=-1)
        else:  # position t sums the items up to t, the one k steps back weighted decay ** k
            weights = recency_weights(items.shape[1], self.cfg.knn_decay, content)
            running = F.normalize(torch.einsum("tj,bjd->btd", weights, content), dim=-1)
        return torch.cat([self.gate * self.backbone.encode(items), self.log_tau.exp() * running], dim=-1)

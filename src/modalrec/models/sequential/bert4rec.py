"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained to fill in masked items.

Training (train mode): each real item of a window is replaced by [MASK] with probability
`mask_prob` (a row with no mask gets its last item masked), and the model predicts the original
items at the masked slots with a full softmax over the catalogue. In eval mode the loss masks only
the last item of each row (deterministic: the next-item task the model is evaluated on).
Inference appends [MASK] after the (last max_len - 1) history items and scores every item with the
state at that slot.

The [MASK] token is index n_items + 1 in the model's input but has no row in the item tower: its
embedding is a separate learnable vector, so any tower (ID or content) works unchanged and
content towers need no "mask item" features. Training windows come from `TrainWindows` (inputs +
the window's last target = the original sub-sequence). Positions are counted from the right (the
[MASK] slot always has the same position), as in SASRec here, so left padding changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.models.base import ItemTower, ModelContext, SequentialRecommender
from modalrec.models.layers import SelfAttentionBlock, init_weights
from modalrec.models.losses import full_softmax_ce
from modalrec.models.towers.item_towers import TowerConfig, checked_tower, tower_from_config
from modalrec.seeding import derive_seed, torch_generator
from modalrec.types import SeqBatch


@dataclass
class BERT4RecConfig:
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn_dim: int | None = None  # None = 4 * dim
    dropout: float = 0.2
    attn_dropout: float | None = None  # None = dropout
    max_len: int = 50  # input slots, the [MASK] slot included
    mask_prob: float = 0.2
    init_std: float = 0.02
    tower: TowerConfig = field(default_factory=TowerConfig)


class BERT4Rec(SequentialRecommender):
    """Bidirectional masked-item model. `loss` averages over the positions it masks, drawn inside the call,
    so the inherited `loss_terms` (next-item targets of the window) is a weight proportional in expectation."""

    def __init__(self, cfg: BERT4RecConfig, ctx: ModelContext, tower: ItemTower | None = None) -> None:
        super().__init__()
        _check(cfg)
        self.cfg, self.n_items, self.mask_index = cfg, ctx.n_items, ctx.n_items + 1
        # a caller may hand in a prebuilt tower (IISAN, the PEFT baselines); else cfg.tower names one
        self.tower = tower_from_config(cfg.tower, ctx, cfg.dim) if tower is None else checked_tower(tower, cfg.dim)
        self.mask_embedding = nn.Parameter(torch.zeros(cfg.dim))  # the [MASK] token's input vector
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        self.input_norm = nn.LayerNorm(cfg.dim, eps=1e-12)
        self.input_drop = nn.Dropout(cfg.dropout)
        attn_p = cfg.dropout if cfg.attn_dropout is None else cfg.attn_dropout
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(cfg.dim, cfg.n_heads, cfg.ffn_dim or 4 * cfg.dim, cfg.dropout, attn_p, False)
            for _ in range(cfg.n_layers)
        )
        # Output projection of the original model (GELU + LayerNorm) before the tied item embeddings.
        self.head = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.LayerNorm(cfg.dim, eps=1e-12))
        gen = torch_generator(ctx.seed, "init/bert4rec")
        init_weights(self, cfg.init_std, gen)
        with torch.no_grad():
            nn.init.normal_(self.mask_embedding, 0.0, cfg.init_std, generator=gen)
        self.mask_generator = torch.Generator(device="cpu")
        self.mask_generator.manual_seed(derive_seed(ctx.seed, "bert4rec/mask"))

    @classmethod
    def build(cls, cfg: BERT4RecConfig, ctx: ModelContext) -> BERT4Rec:
        return cls(cfg, ctx)

    def reseed(self, seed: int) -> None:
        """Restart the masking stream (the training loop calls this at every epoch)."""
        self.mask_generator.manual_seed(derive_seed(seed, "bert4rec/mask"))

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """items [B, L] left-padded, may hold [MASK] (n_items + 1) -> [B, L, d] after the output head."""
        L = items.shape[1]
        is_mask = items == self.mask_index  # [B, L]
        x = self.tower(items.masked_fill(is_mask, 0))  # [B, L, d] (PAD row is zero)
        x = torch.where(is_mask[..., None], self.mask_embedding.to(x.dtype), x)
        x = x + self.positions.weight[self.cfg.max_len - L :]  # positions counted from the right
        x = self.input_drop(self.input_norm(x))
        valid = items > 0  # [B, L]
        eye = torch.eye(L, dtype=torch.bool, device=items.device)  # [L, L]
        # Bidirectional: every real slot sees every real slot; a PAD query sees only itself (no NaN rows).
        mask = (valid[:, None, :] | eye)[:, None]  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, mask)
        return self.head(x)

    def forward(self, batch: SeqBatch) -> torch.Tensor:  # [B, d] state at the appended [MASK]
        hist = batch.items[:, -(self.cfg.max_len - 1) :]  # [B, <= max_len - 1]
        masks = torch.full((hist.shape[0], 1), self.mask_index, dtype=hist.dtype, device=hist.device)
        return self.encode(torch.cat([hist, masks], dim=1))[:, -1]

    def item_embeddings(self) -> torch.Tensor:  # [n_items + 1, d]
        return self.tower.all()

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        state = self.forward(batch)  # [B, d]
        table = self.tower.all() if items is None else self.tower(items)  # [N + 1, d] or [M, d]
        return state @ table.T

    def loss(self, batch: SeqBatch) -> torch.Tensor:
        if batch.targets.dim() != 2:
            raise ValueError("BERT4Rec.loss needs training batches with [B, L] targets (TrainWindows)")
        # The window's original sub-sequence: inputs plus its last target (left padding keeps alignment).
        seq = torch.cat([batch.items, batch.targets[:, -1:]], dim=1)[:, -self.cfg.max_len :]  # [B, L]
        real = seq > 0
        if self.training:
            draw = torch.rand(seq.shape, generator=self.mask_generator).to(seq.device)  # [B, L]
            masked = real & (draw < self.cfg.mask_prob)
            none = ~masked.any(1) & real[:, -1]  # rows without a mask: mask their last item
            masked[:, -1] |= none
        else:
            masked = torch.zeros_like(real)
            masked[:, -1] = real[:, -1]
        if not bool(masked.any()):
            return self.mask_embedding.sum() * 0.0
        states = self.encode(seq.masked_fill(masked, self.mask_index))[masked]  # [M, d]
        logits = states @ self.tower.all()[1:].T  # [M, N] items 1..N
        return full_softmax_ce(logits, seq[masked], pad_column=False)

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        self.tower.set_item_features(features, missing)


def _check(cfg: BERT4RecConfig) -> None:
    if cfg.dim % cfg.n_heads:
        raise ConfigError(f"bert4rec: dim ({cfg.dim}) must be divisible by n_heads ({cfg.n_heads})")
    if cfg.max_len < 2 or cfg.n_layers < 0:
        raise ConfigError("bert4rec: max_len must be >= 2 (history + [MASK]) and n_layers >= 0")
    if not 0.0 < cfg.mask_prob < 1.0:
        raise ConfigError(f"bert4rec: mask_prob must lie in (0, 1), got {cfg.mask_prob}")

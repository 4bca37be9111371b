"""GRU4Rec: item vectors -> GRU -> state at each position (Hidasi et al., 2016), any item tower.

Inputs are left-padded; the GRU runs on right-aligned sequences (real items first, PADs after), so
PAD slots never touch a state we read (a GRU's biases would otherwise move it over leading PADs) and
a row's states do not depend on how much padding its batch has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.models.base import CausalTowerRecommender, ItemTower, ModelContext
from modalrec.models.layers import init_weights
from modalrec.models.losses import NextItemLoss
from modalrec.models.towers.item_towers import TowerConfig, checked_tower, tower_from_config
from modalrec.seeding import torch_generator


@dataclass
class GRU4RecConfig:
    dim: int = 64  # item / output dimension
    hidden: int | None = None  # GRU width; None = dim
    n_layers: int = 1
    dropout: float = 0.3  # on the item vectors fed to the GRU
    max_len: int = 50
    loss: str = "ce"  # "ce" | "sampled" | "bce" | "bpr" | "inbatch"
    n_negatives: int | None = None  # None: 100 for "sampled", 1 for "bce" / "bpr"
    negatives: str = "uniform"  # "uniform" | "popularity"
    label_smoothing: float = 0.0  # "ce" only: share of each target's mass spread over the catalogue
    init_std: float = 0.02
    tower: TowerConfig = field(default_factory=TowerConfig)


class GRU4Rec(CausalTowerRecommender):
    def __init__(self, cfg: GRU4RecConfig, ctx: ModelContext, tower: ItemTower | None = None) -> None:
        super().__init__()
        if cfg.n_layers < 1 or cfg.max_len < 1:
            raise ConfigError("gru4rec: n_layers and max_len must be >= 1")
        self.cfg, self.n_items = cfg, ctx.n_items
        hidden = cfg.hidden or cfg.dim
        # a caller may hand in a prebuilt tower (IISAN, the PEFT baselines); else cfg.tower names one
        self.tower = tower_from_config(cfg.tower, ctx, cfg.dim) if tower is None else checked_tower(tower, cfg.dim)
        self.input_drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.dim, hidden, num_layers=cfg.n_layers, batch_first=True)
        self.proj = nn.Linear(hidden, cfg.dim) if hidden != cfg.dim else nn.Identity()
        self.criterion = NextItemLoss(
            cfg.loss, ctx.n_items, cfg.n_negatives, cfg.negatives, ctx.train_item_counts, seed=ctx.seed,
            label_smoothing=cfg.label_smoothing,
        )
        gen = torch_generator(ctx.seed, "init/gru4rec")
        init_weights(self, cfg.init_std, gen)
        with torch.no_grad():
            for name, p in self.gru.named_parameters():  # RecBole / GRU4Rec: Xavier weights, zero biases
                nn.init.xavier_uniform_(p, generator=gen) if "weight" in name else p.zero_()

    @classmethod
    def build(cls, cfg: GRU4RecConfig, ctx: ModelContext) -> GRU4Rec:
        return cls(cfg, ctx)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """items [B, L] left-padded -> states [B, L, d]; PAD slots get zero states."""
        items = items[:, -self.cfg.max_len :]  # [B, L]
        L = items.shape[1]
        # An empty history runs one PAD step (a zero vector), so it still gets a (learned-bias) state.
        lengths = (items > 0).sum(1).clamp_min(1)  # [B]
        shift = L - lengths  # [B] number of leading slots that stay PAD
        ar = torch.arange(L, device=items.device)  # [L]
        right_idx = (ar[None, :] + shift[:, None]) % L  # [B, L] right-aligned slot j <- left slot j + shift
        x = self.input_drop(self.tower(items.gather(1, right_idx)))  # [B, L, d] real items first
        # PADs now trail the real items, so they cannot affect any output we read (no packing needed).
        out, _ = self.gru(x)  # [B, L, h]
        left_idx = (ar[None, :] - shift[:, None]) % L  # [B, L] back to the left-padded layout
        out = out.gather(1, left_idx[:, :, None].expand(-1, -1, out.shape[-1]))  # [B, L, h]
        out = out * (ar[None, :] >= shift[:, None])[:, :, None]  # [B, L, h] PAD slots: zero state
        return self.proj(out)

"""Item towers: how an item index becomes a d-dim vector. Sequence models take any tower.

The ID tower lives here; content towers ("text", "image", "text+image", "hybrid") live in
`towers/content.py`. Every kind a config can name is listed in `TOWERS` at the bottom; to add one, write a
builder `(ctx, dim, cfg) -> ItemTower` and add an entry there. Towers that need tensors (IISAN's adapters
over cached hidden states, the PEFT baselines' encoders) are built by their models and handed to the
sequence model (`SASRec(cfg, ctx, tower=...)`), never passed through config options.
Weight init: a sequence model draws every trainable Linear / Embedding of the whole model (tower
included) from N(0, init_std) with its seeded generator, then calls `init_weights(generator)` on
each submodule that defines it (towers override there). Frozen weights are left as loaded.
Row 0 (PAD) of `all()` must be zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.models.base import ItemTower, ModelContext
from modalrec.models.towers.config import TowerConfig
from modalrec.models.towers.content import build_content_tower, build_hybrid_tower

TowerBuilder = Callable[[ModelContext, int, TowerConfig], ItemTower]


def tower_from_config(cfg: TowerConfig, ctx: ModelContext, dim: int) -> ItemTower:
    if cfg.kind not in TOWERS:
        raise ConfigError(f"unknown item tower kind {cfg.kind!r}; known: {sorted(TOWERS)}")
    return checked_tower(TOWERS[cfg.kind](ctx, dim, cfg), dim)


def checked_tower(tower: ItemTower, dim: int) -> ItemTower:
    if tower.dim != dim:
        raise ConfigError(f"item tower {type(tower).__name__} has dim {tower.dim}, the model needs {dim}")
    return tower


class IDTower(ItemTower):
    """One learnable vector per item: nn.Embedding with padding_idx 0 (PAD row stays zero)."""

    def __init__(self, n_items: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.dim, self.n_items, self.init_std = int(dim), int(n_items), float(init_std)
        self.embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            nn.init.normal_(self.embedding.weight, 0.0, self.init_std, generator=generator)
            self.embedding.weight[0].zero_()

    def all(self) -> torch.Tensor:  # [n_items + 1, d]
        return self.embedding.weight

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [..., d]
        return self.embedding(items)


def _build_id(ctx: ModelContext, dim: int, cfg: TowerConfig) -> ItemTower:
    unknown = set(cfg.options) - {"init_std"}
    if unknown:
        raise ConfigError(f"item tower 'id' has no option(s) {sorted(unknown)}; known: ['init_std']")
    return IDTower(ctx.n_items, dim, **cfg.options)


# Every tower kind, by name.
TOWERS: dict[str, TowerBuilder] = {
    "id": _build_id,
    "text": build_content_tower,
    "image": build_content_tower,
    "text+image": build_content_tower,
    "hybrid": build_hybrid_tower,
}

"""LightGCN (He et al., SIGIR 2020): ID embeddings smoothed over the user-item graph, trained with BPR.

    e^(0) = ego embeddings of users and items;  e^(k+1) = D^-1/2 A D^-1/2 e^(k);  e = mean_k e^(k)
    score(u, i) = e_u . e_i;  loss = BPR(u, i+, i-) + reg * (|e_u^0|^2 + |e_i+^0|^2 + |e_i-^0|^2) / 2 / B

LightGCN is ID-only: an item without training events keeps its untrained initial embedding (it is
never a positive, and negatives are drawn from training items only), so it cannot be placed. The
conventions it shares with MMGCN and VBPR (cold users, attached graph, losses) are in `graph/user_item.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modalrec.data.pairs import PairBatch, sparse_propagate
from modalrec.errors import ConfigError
from modalrec.models.base import ModelContext
from modalrec.models.graph.user_item import UserItemRecommender
from modalrec.seeding import torch_generator

# --- LightGCN ---------------------------------------------------------------------------------------


@dataclass
class LightGCNConfig:
    dim: int = 64
    n_layers: int = 3
    reg: float = 1e-4  # L2 on the batch's ego embeddings (LightGCN's "decay"); keep TrainConfig.weight_decay 0
    init_std: float = 0.1
    n_negatives: int = 1
    max_len: int = 50  # history items averaged for cold users


class LightGCN(UserItemRecommender):
    graph_norm = "sym"

    def __init__(self, cfg: LightGCNConfig, ctx: ModelContext) -> None:
        if cfg.dim < 1 or cfg.n_layers < 0 or cfg.reg < 0:
            raise ConfigError("lightgcn: dim >= 1, n_layers >= 0 and reg >= 0 required")
        super().__init__(ctx, cfg.max_len, cfg.n_negatives, cfg.dim)
        self.cfg = cfg
        self.user_embedding = nn.Embedding(ctx.n_users + 1, cfg.dim, padding_idx=0)
        self.item_embedding = nn.Embedding(ctx.n_items + 1, cfg.dim, padding_idx=0)
        gen = torch_generator(ctx.seed, "init/lightgcn")
        with torch.no_grad():
            for emb in (self.user_embedding, self.item_embedding):
                nn.init.normal_(emb.weight, 0.0, cfg.init_std, generator=gen)
                emb.weight[0].zero_()

    @classmethod
    def build(cls, cfg: LightGCNConfig, ctx: ModelContext) -> LightGCN:
        return cls(cfg, ctx)

    def live_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])  # [V, d]
        if self.graph is None or self.cfg.n_layers == 0:  # no edges: every propagated layer is zero
            out = ego / (self.cfg.n_layers + 1)
        else:
            layers, x = [ego], ego
            for _ in range(self.cfg.n_layers):
                x = sparse_propagate(self.graph, x)  # [V, d]
                layers.append(x)
            out = torch.stack(layers).mean(0)  # [V, d]
        return out[: self.n_users + 1], out[self.n_users + 1 :]

    def regularizer(self, batch: PairBatch) -> torch.Tensor:
        if self.cfg.reg == 0:
            return torch.zeros((), device=batch.users.device)
        sq = (
            self.user_embedding(batch.users).pow(2).sum()
            + self.item_embedding(batch.pos).pow(2).sum()
            + self.item_embedding(batch.neg).pow(2).sum() / batch.neg.shape[1]
        )
        return self.cfg.reg * 0.5 * sq / len(batch)

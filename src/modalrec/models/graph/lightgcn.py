"""LightGCN (He et al., SIGIR 2020): ID embeddings smoothed over the user-item graph, trained with BPR.

    e^(0) = ego embeddings of users and items;  e^(k+1) = D^-1/2 A D^-1/2 e^(k);  e = mean_k e^(k)
    score(u, i) = e_u . e_i;  loss = BPR(u, i+, i-) + reg * (|e_u^0|^2 + |e_i+^0|^2 + |e_i-^0|^2) / 2 / B

Also here: `UserItemRecommender`, the base that LightGCN, MMGCN and VBPR share. These are *user*
models: `score(batch)` reads `batch.users` (user indices). Conventions of the base:

- The training graph is attached by `training_source(split)` (the pipeline calls it; it returns a
  `data.pairs.PairSource` of (user, positive, negatives) triples) or by `attach(train)`. It also fixes
  which users / items had training events (`user_known` / `item_known`, saved with the weights).
- Cold users (no training event, PAD, or an index beyond the trained users) are represented by the
  mean of their history items' final embeddings (`batch.items`, the last `max_len`); with an empty
  history the score is 0 for every item. Warm users use their own embedding (history ignored).
- LightGCN is ID-only: an item without training events keeps its untrained initial embedding (it
  is never a positive, and negatives are drawn from training items only), so it cannot be placed.
- Graph models save their propagated tables in the state dict (refreshed whenever `state_dict()` is
  taken while the graph is attached), so a model loaded from a checkpoint scores without the graph.
  Before a graph was ever attached, propagation runs over an empty graph (no edges).
- `loss(PairBatch)` is BPR (the papers' objective); `loss(SeqBatch)` (TrainWindows batches) is a full
  softmax of each (user, next item) pair — deterministic, so these models also train from sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modalrec.data.interactions import Interactions
from modalrec.data.pairs import Graph, PairBatch, PairSource, normalized_adjacency, sparse_propagate
from modalrec.data.splits import Split
from modalrec.errors import ConfigError
from modalrec.models.base import ModelContext, SequentialRecommender, Training
from modalrec.models.losses import bpr
from modalrec.seeding import torch_generator
from modalrec.types import SeqBatch


class UserItemRecommender(SequentialRecommender):
    """Base for user-embedding models: score = user state . item table (see the module docstring).

    Subclasses implement `live_tables()` -> (users [n_users + 1, D], items [n_items + 1, D]) with
    gradients, and `regularizer(batch)`; graph models set `graph_norm` ("sym" / "mean").
    """

    training_kind = Training.PAIRS
    graph_norm: str | None = None

    @property
    def history_length(self) -> int:
        return self.max_len  # a user unseen in training is the mean of its last max_len items

    def __init__(self, ctx: ModelContext, max_len: int, n_negatives: int, out_dim: int) -> None:
        super().__init__()
        if ctx.n_users < 1 or ctx.n_items < 1:
            raise ConfigError(f"{type(self).__name__}: needs n_users >= 1 and n_items >= 1")
        if n_negatives < 1 or max_len < 1:
            raise ConfigError(f"{type(self).__name__}: n_negatives and max_len must be >= 1")
        self.n_users, self.n_items, self.max_len, self.n_negatives = ctx.n_users, ctx.n_items, max_len, n_negatives
        known_u = torch.ones(ctx.n_users + 1, dtype=torch.bool)
        known_i = torch.ones(ctx.n_items + 1, dtype=torch.bool)
        known_u[0] = known_i[0] = False
        # Until a training graph is attached every real user / item counts as trained.
        self.register_buffer("user_known", known_u)  # [U + 1]
        self.register_buffer("item_known", known_i)  # [N + 1]
        self.graph: Graph | None = None
        if self.graph_norm is not None:
            self.register_buffer("saved_users", torch.zeros(ctx.n_users + 1, out_dim))  # [U + 1, D]
            self.register_buffer("saved_items", torch.zeros(ctx.n_items + 1, out_dim))  # [N + 1, D]
            self.register_buffer("saved_valid", torch.zeros((), dtype=torch.bool))

    # --- data -------------------------------------------------------------------------------------

    def attach(self, train: Interactions) -> None:
        """Use `train` as the training graph and record which users / items it covers."""
        if train.n_users != self.n_users or train.n_items != self.n_items:
            raise ConfigError(f"{type(self).__name__} was built for {self.n_users} users / {self.n_items} items; "
                              f"the training data has {train.n_users} / {train.n_items}")
        device = self.user_known.device
        self.user_known.copy_(torch.from_numpy(train.seq_lengths() > 0).to(device))
        self.item_known.copy_(torch.from_numpy(train.item_counts() > 0).to(device))
        if self.graph_norm is not None:
            self.graph = normalized_adjacency(train, self.graph_norm).to(device)

    def training_source(self, split: Split) -> PairSource:
        """Attach `split.train` and return its (user, positive, negatives) triples for `training.loop.fit`."""
        self.attach(split.train)
        return PairSource(split.train, self.n_negatives)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:  # keep the graph on the model's device
        out = super()._apply(fn, *args, **kwargs)
        if self.graph is not None:
            self.graph = self.graph.to(self.user_known.device)
        return out

    # --- tables -----------------------------------------------------------------------------------

    def live_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def regularizer(self, batch: PairBatch) -> torch.Tensor:
        raise NotImplementedError

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users [U + 1, D], items [N + 1, D]): live with a graph, else the saved ones if a checkpoint had them."""
        if self.graph_norm is None or self.graph is not None or not bool(self.saved_valid):
            return self.live_tables()
        if self.training and torch.is_grad_enabled():
            raise RuntimeError(f"{type(self).__name__} was loaded without its training graph; call "
                               "attach(train) or training_source(split) before training it further")
        _, items = self.live_tables()  # items beyond the saved rows (appended later) have no edges
        n = self.saved_items.shape[0]
        return self.saved_users, torch.cat([self.saved_items, items[n:]])

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        if self.graph_norm is not None and self.graph is not None:
            with torch.no_grad():  # the saved tables must match the weights being saved
                users, items = self.live_tables()
                self.saved_users.copy_(users)
                self.saved_items.copy_(items[: self.saved_items.shape[0]])
                self.saved_valid.fill_(True)
        return super().state_dict(*args, **kwargs)

    def item_embeddings(self) -> torch.Tensor:  # [N + 1, D]
        return self.tables()[1]

    def user_states(self, batch: SeqBatch, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, D]: the user's row if trained, else the mean of its history items' rows (0 if none)."""
        u = batch.users  # [B]
        in_range = (u > 0) & (u < users.shape[0])
        safe = torch.where(in_range, u, torch.zeros_like(u))
        warm = in_range & self.user_known[safe]  # [B]
        hist = batch.items[:, -self.max_len :]  # [B, L]
        hist = torch.where(hist < items.shape[0], hist, torch.zeros_like(hist))  # unknown items -> PAD
        valid = (hist > 0).to(items.dtype)  # [B, L]
        mean = (items[hist] * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1.0)  # [B, D]
        return torch.where(warm[:, None], users[safe], mean)

    def forward(self, batch: SeqBatch) -> torch.Tensor:  # [B, D]
        users, items = self.tables()
        return self.user_states(batch, users, items)

    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        users, table = self.tables()
        state = self.user_states(batch, users, table)  # [B, D]
        if items is not None:
            table = table[items]  # [M, D]
        return state @ table.T  # [B, N + 1] or [B, M]

    # --- losses -----------------------------------------------------------------------------------

    def loss(self, batch: PairBatch | SeqBatch) -> torch.Tensor:
        users, items = self.tables()
        if isinstance(batch, PairBatch):
            u = users[batch.users]  # [B, D]
            pos = (u * items[batch.pos]).sum(-1)  # [B]
            neg = torch.einsum("bd,bkd->bk", u, items[batch.neg])  # [B, K]
            return bpr(pos, neg) + self.regularizer(batch)
        if batch.targets.dim() != 2:
            raise ValueError(f"{type(self).__name__}.loss takes PairBatch or training SeqBatch ([B, L] targets)")
        state = self.user_states(batch, users, items)  # [B, D]
        logp = torch.log_softmax((state @ items[1:].T).float(), dim=-1)  # [B, N] items 1..N
        keep = batch.targets > 0  # [B, L]
        if not bool(keep.any()):
            return state.sum() * 0.0
        rows = torch.arange(len(batch), device=keep.device)[:, None].expand_as(keep)[keep]  # [M]
        return -logp[rows, batch.targets[keep] - 1].mean()


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

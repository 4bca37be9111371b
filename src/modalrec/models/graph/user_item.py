"""`UserItemRecommender`: the base that LightGCN, MMGCN and VBPR share. These are *user*
models: `score(batch)` reads `batch.users` (user indices). Conventions of the base:

- The training graph is attached by `training_source(split)` (the pipeline calls it; it returns a
  `data.pairs.PairSource` of (user, positive, negatives) triples) or by `attach(train)`. It also fixes
  which users / items had training events (`user_known` / `item_known`, saved with the weights).
- Cold users (no training event, PAD, or an index beyond the trained users) are represented by the
  mean of their history items' final embeddings (`batch.items`, the last `max_len`); with an empty
  history the score is 0 for every item. Warm users use their own embedding (history ignored).
- Graph models save their propagated tables in the state dict (refreshed whenever `state_dict()` is
  taken while the graph is attached), so a model loaded from a checkpoint scores without the graph.
  Before a graph was ever attached, propagation runs over an empty graph (no edges).
- `loss(PairBatch)` is BPR (the papers' objective); `loss(SeqBatch)` (TrainWindows batches) is a full
  softmax of each (user, next item) pair — deterministic, so these models also train from sequences.

`select_features` picks the content features MMGCN and VBPR read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from modalrec.data.interactions import Interactions
from modalrec.data.pairs import Graph, PairBatch, PairSource, normalized_adjacency
from modalrec.data.splits import Split
from modalrec.errors import ConfigError, MismatchError
from modalrec.models.base import ModelContext, SequentialRecommender, Training
from modalrec.models.losses import bpr
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

    @classmethod
    def content_modalities(cls, cfg: Any) -> frozenset[str]:
        return frozenset()  # ID embeddings; content models (VBPR, MMGCN) say which features they read

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


def select_features(
    ctx_features: dict[str, torch.Tensor], ctx_missing: dict[str, torch.Tensor], wanted: Sequence[str] | None, who: str
) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    """(modalities, [n + 1, d_m] float features, [n + 1] bool present) for the chosen modalities."""
    mods = sorted(ctx_features) if wanted is None else list(wanted)
    if not mods:
        raise ConfigError(f"{who} needs item features (text and/or image) but the model context has none; "
                          "set features.text / features.image or features.store")
    absent = [m for m in mods if m not in ctx_features]
    if absent:
        raise ConfigError(f"{who}: modality {absent} not in the model context (has {sorted(ctx_features)})")
    feats = [ctx_features[m].float() for m in mods]
    rows = {f.shape[0] for f in feats}
    if len(rows) != 1 or any(f.dim() != 2 for f in feats):
        raise MismatchError(f"{who}: features must be [n_items + 1, d] with one row count, got "
                            f"{ {m: tuple(f.shape) for m, f in zip(mods, feats)} }")
    present = []
    for m, f in zip(mods, feats):
        miss = ctx_missing.get(m)
        p = torch.ones(f.shape[0], dtype=torch.bool) if miss is None else ~miss.bool().reshape(-1).cpu()
        if p.shape[0] != f.shape[0]:
            raise MismatchError(f"{who}: {m} missing-mask has {p.shape[0]} rows, its features {f.shape[0]}")
        p[0] = False  # PAD has no content
        present.append(p.to(f.device))
    return mods, feats, present

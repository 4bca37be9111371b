"""MM-TGN: a temporal graph network over the user-item event stream with multimodal item features.

Users and items share one node space (0 = PAD, user u -> node u, item i -> node n_users + i). Each node
has a memory (tgn_memory.TGNMemory) and a most-recent-neighbour buffer; embeddings come from temporal
graph attention (tgn_embedding.GraphEmbedding) over raw node states h0(n) = memory(n) + x(n), where x
are learnable user vectors and, for items, fused FeatureStore vectors (or the ID / random ablations).

Scores are z_u(t) . z_i(t) + b(z_i(t)) (optionally with a user-state FiLM on the item side), so full
ranking over the catalogue is one matrix product per batch; b is a linear item term through which
memory can express popularity / recency for any item, new ones included.

Training (`loss`): "softmax" (default) is the full-ranking objective estimated on a candidate set -- the
batch's positives (in-batch negatives) plus a pool of uniformly drawn items shared by the batch, all
embedded at the batch's reference time exactly as `score` embeds the catalogue; logits are corrected by
log of each candidate's expected count in the set (logQ; the in-batch part follows item frequency,
estimated from the events observed so far) and accidental hits (a candidate equal to the event's own item)
are removed. With the whole catalogue as pool and no in-batch part it is the full softmax cross-entropy.
"bpr" / "bce" score each event against its own few negatives (link prediction).

No leakage: `loss(batch)` / `score(batch)` read only state built from earlier batches; `observe(batch)`
then commits the batch (messages + neighbours). With `observe_in_loss=True` (default) `loss` observes
the batch itself right after the loss is computed, so the shared training loop can drive the model
with nothing but `reset_state()` and `loss(batch)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.errors import ConfigError
from modalrec.models.base import ANY_CONTENT, ModelContext, Recommender, Training
from modalrec.models.tgn.embedding import GraphEmbedding, Neighbors, NodeFeatures
from modalrec.models.tgn.memory import NeighborBuffer, TGNMemory
from modalrec.seeding import derive_seed
from modalrec.types import EventBatch


@dataclass
class TGNConfig:
    dim: int = 64  # memory = node feature = embedding size
    time_dim: int = 32
    time_encoding: str = "log"  # log: cos(w log1p(dt) + b) | raw: cos(w dt + b) (TGAT grid)
    n_neighbors: int = 10
    n_layers: int = 1
    n_heads: int = 2
    dropout: float = 0.1
    embedding: str = "attn"  # attn | identity | time
    message: str = "mlp"  # mlp | identity
    aggregator: str = "last"  # last | mean
    updater: str = "gru"  # gru | rnn
    use_memory: bool = True
    item_features: str = "content"  # content | id | random
    fusion: str = "mlp"  # mlp (concat + MLP) | gated | film | sum, shared models.fusion (content only)
    random_dim: int = 128  # width of the fixed random item vectors ("random")
    user_film: bool = False  # user memory modulates the item side of the score
    item_bias: bool = True  # score += b(z_i): a user-independent term (popularity / recency from memory)
    user_init_std: float = 0.01  # small: a user never seen in training starts near zero, not as noise
    loss: str = "softmax"  # softmax (sampled, logQ-corrected) | bpr | bce
    n_negatives: int = 4  # random items per event drawn by EventStream (softmax: one pool of B * n per batch)
    in_batch: bool = True  # softmax: the batch's other positives are negatives too
    logq: bool = True  # softmax: subtract log expected count of each candidate (sampling-bias correction)
    memory_init: str = "features"  # features: a fresh item's memory = tanh(W x(item)) | zero
    observe_in_loss: bool = True
    rank_chunk: int = 4096  # items embedded per chunk in full ranking

    def __post_init__(self) -> None:
        choices = {
            "embedding": ("attn", "identity", "time"), "time_encoding": ("log", "raw"),
            "message": ("mlp", "identity"), "aggregator": ("last", "mean"), "updater": ("gru", "rnn"), "item_features": ("content", "id", "random"),
            "fusion": ("mlp", "concat", "gated", "film", "sum"), "loss": ("softmax", "bpr", "bce"),
            "memory_init": ("features", "zero"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"tgn.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        for key in ("dim", "time_dim", "n_neighbors", "n_heads", "n_negatives", "rank_chunk"):
            if getattr(self, key) < 1:
                raise ConfigError(f"tgn.{key} must be >= 1, got {getattr(self, key)}")
        if self.n_layers < 0 or self.user_init_std < 0 or not 0 <= self.dropout < 1:
            raise ConfigError("tgn.n_layers and tgn.user_init_std must be >= 0, tgn.dropout in [0, 1)")


@dataclass
class NodeContext:
    """Node state one batch is computed from: memory [N, d] and last update [N] with pending applied."""

    memory: torch.Tensor
    last_update: torch.Tensor


class TGN(Recommender):
    """MM-TGN. Stateful: call `reset_state()` before streaming events in time order."""

    training_kind = Training.EVENTS
    stateful = True  # scores read memory built from earlier events; not a dot product with a fixed table

    @property
    def history_length(self) -> int:
        return 0  # reads its memory and neighbour buffers, not a history window

    @classmethod
    def content_modalities(cls, cfg: TGNConfig) -> frozenset[str]:
        return ANY_CONTENT if cfg.item_features == "content" else frozenset()

    def __init__(
        self, cfg: TGNConfig, n_users: int, n_items: int, item_features: dict[str, torch.Tensor] | None = None,
        feature_missing: dict[str, torch.Tensor] | None = None, seed: int = 0,
    ) -> None:
        super().__init__()
        self.cfg, self.n_users, self.n_items, self.seed = cfg, int(n_users), int(n_items), int(seed)
        n_nodes = self.n_nodes
        with torch.random.fork_rng(devices=[]):  # deterministic init without touching global RNG state
            torch.manual_seed(derive_seed(seed, "tgn/init"))
            self.features = NodeFeatures(
                n_users, n_items, cfg.dim, cfg.item_features, cfg.fusion, item_features or {}, feature_missing or {},
                cfg.random_dim, cfg.dropout, seed, cfg.user_init_std,
            )
            self.memory = TGNMemory(
                n_nodes, cfg.dim, cfg.time_dim, cfg.message, cfg.aggregator, cfg.updater, cfg.time_encoding
            )
            self.embedding = GraphEmbedding(
                cfg.embedding, cfg.dim, cfg.time_dim, cfg.n_layers, cfg.n_heads, cfg.dropout,
                cfg.time_encoding,
            )
            self.bias = nn.Linear(cfg.dim, 1) if cfg.item_bias else None
            self.mem_init = nn.Linear(cfg.dim, cfg.dim) if cfg.memory_init == "features" else None
            if cfg.user_film:
                self.film = nn.Linear(cfg.dim, 2 * cfg.dim)
                nn.init.zeros_(self.film.weight)
                nn.init.zeros_(self.film.bias)
        self.neighbors = NeighborBuffer(n_nodes, cfg.n_neighbors)
        self.n_observed = 0  # running event index (edge idx in the neighbour buffer)
        # items observed since reset_state: the in-batch sampling frequencies of the softmax loss
        self.register_buffer("item_seen", torch.zeros(self.n_items + 1), persistent=False)
        self._feat_cache: torch.Tensor | None = None  # x(n) for all nodes, only in eval mode without grad

    # Weights can only change through training, loading or moving: each drops the eval-time feature cache.
    def train(self, mode: bool = True) -> TGN:
        self._feat_cache = None
        return super().train(mode)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self._feat_cache = None
        return super().load_state_dict(*args, **kwargs)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], *args: Any, **kwargs: Any) -> TGN:
        self._feat_cache = None
        return super()._apply(fn, *args, **kwargs)

    def node_features(self, nodes: torch.Tensor) -> torch.Tensor:
        """x(nodes) [..., d]; in eval mode without grad from a table computed once."""
        if self.training or torch.is_grad_enabled():
            return self.features(nodes)
        if self._feat_cache is None:
            self._feat_cache = self.features(torch.arange(self.n_nodes, device=self.device))  # [N, d]
        return self._feat_cache[nodes]

    @classmethod
    def build(cls, cfg: TGNConfig, ctx: ModelContext) -> TGN:
        return cls(cfg, ctx.n_users, ctx.n_items, ctx.item_features, ctx.feature_missing, ctx.seed)

    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items + 1

    @property
    def device(self) -> torch.device:
        return self.memory.memory.device

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def item_nodes(self, items: torch.Tensor) -> torch.Tensor:
        return torch.where(items > 0, items + self.n_users, torch.zeros_like(items))

    # ---- state --------------------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.memory.reset()
        self.neighbors.reset()
        self.n_observed = 0
        self.item_seen = torch.zeros_like(self.item_seen)

    def state_dict_memory(self) -> dict[str, torch.Tensor]:
        """A copy of all streaming state (memory, pending messages, neighbour buffer, event and item counters)."""
        out = {f"memory.{k}": getattr(self.memory, k).detach().clone() for k in TGNMemory.STATE}
        out.update({f"neighbors.{k}": getattr(self.neighbors, k).clone() for k in NeighborBuffer.STATE})
        out["n_observed"] = torch.tensor(self.n_observed, dtype=torch.int64)
        out["item_seen"] = self.item_seen.clone()
        return out

    def load_memory(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            if key == "n_observed":
                self.n_observed = int(value)
                continue
            if key == "item_seen":
                self.item_seen = value.clone().to(self.device)
                continue
            owner, name = key.split(".", 1)
            setattr(getattr(self, owner), name, value.detach().clone().to(self.device))

    @torch.no_grad()
    def observe(self, batch: EventBatch) -> None:
        """Commit a scored batch: store its messages (after applying its nodes' pending ones) and
        add its edges to the neighbour buffer."""
        src, dst = batch.users.to(self.device), self.item_nodes(batch.items.to(self.device))
        ts = batch.ts.to(self.device)
        if self.cfg.use_memory:
            self.memory.commit(src, dst, ts, self._init_fn)
        self.item_seen.index_add_(0, batch.items.to(self.device), self.item_seen.new_ones(src.shape[0]))
        eidx = torch.arange(self.n_observed, self.n_observed + src.shape[0], device=self.device)
        self.neighbors.insert(src, dst, ts, eidx)
        self.n_observed += int(src.shape[0])

    # ---- embeddings ---------------------------------------------------------------------------------
    @property
    def _init_fn(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self._memory_init if self.mem_init is not None else None

    def _memory_init(self, nodes: torch.Tensor) -> torch.Tensor:
        """Starting memory of fresh nodes [F] -> [F, d]: users zero, items tanh(W x(item)) (memory_init="features")."""
        out = torch.zeros(nodes.shape[0], self.cfg.dim, device=self.device)
        idx = (nodes > self.n_users).nonzero().squeeze(1)
        if idx.numel() == 0:
            return out
        return out.index_copy(0, idx, torch.tanh(self.mem_init(self.node_features(nodes[idx]))).to(out.dtype))

    def _neighbors(self, nodes: torch.Tensor) -> Neighbors:
        return self.neighbors.get(nodes)

    def context(self, nodes: torch.Tensor | None = None) -> NodeContext:
        """Node state for scoring (pending messages applied for `nodes`' receptive field, or all nodes)."""
        if not self.cfg.use_memory:
            return NodeContext(self.memory.memory, self.memory.last_update)
        if nodes is not None:
            nodes = self.embedding.receptive_field(self._neighbors, nodes)
        mem, last = self.memory.view(nodes, self._init_fn)
        return NodeContext(mem, last)

    def embed(self, ctx: NodeContext, nodes: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z(nodes, t): [B] node ids, [B] float64 times -> [B, d]."""

        def h0(n: torch.Tensor) -> torch.Tensor:
            x = self.node_features(n)  # [B, d]
            return x + ctx.memory[n] if self.cfg.use_memory else x

        return self.embedding(h0, self._neighbors, ctx.last_update, nodes, t)

    def _user_side(self, ctx: NodeContext, users: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """User query vector w [B, d] and per-user score offset [B]: score = w . z_item + offset."""
        z = self.embed(ctx, users, t)  # [B, d]
        if not self.cfg.user_film:
            return z, z.new_zeros(z.shape[0])
        state = ctx.memory[users] if self.cfg.use_memory else z
        gamma, beta = self.film(state).chunk(2, dim=-1)  # item' = z_i * (1 + gamma) + beta
        return z * (1.0 + gamma), (z * beta).sum(-1)

    def _bias(self, z_i: torch.Tensor) -> torch.Tensor:  # [..., d] -> [...]
        return self.bias(z_i).squeeze(-1) if self.bias is not None else z_i.new_zeros(z_i.shape[:-1])

    # ---- scoring ------------------------------------------------------------------------------------
    def pair_scores(self, batch: EventBatch, items: torch.Tensor, ctx: NodeContext | None = None) -> torch.Tensor:
        """Scores of each event's user against `items` ([B, M]) at the event's own time -> [B, M]."""
        users, ts = batch.users.to(self.device), batch.ts.to(self.device, torch.float64)
        items = items.to(self.device)
        b, m = items.shape
        i_nodes = self.item_nodes(items)
        if ctx is None:
            ctx = self.context(torch.cat([users, i_nodes.reshape(-1)]))
        w, off = self._user_side(ctx, users, ts)  # [B, d], [B]
        z_i = self.embed(ctx, i_nodes.reshape(-1), ts.repeat_interleave(m)).view(b, m, -1)  # [B, M, d]
        return torch.einsum("bd,bmd->bm", w, z_i) + off.unsqueeze(1) + self._bias(z_i)

    def loss(self, batch: EventBatch) -> torch.Tensor:
        """Sampled softmax (or BPR / BCE) of each event's item against `batch.negatives`; observes the batch
        afterwards when `observe_in_loss` and training."""
        if batch.negatives is None:
            raise ValueError("TGN.loss needs EventBatch.negatives (EventStream.batches samples them)")
        neg = batch.negatives.to(self.device)
        if self.cfg.loss == "softmax":
            loss = self._softmax_loss(batch, neg.reshape(-1))
        else:
            neg = neg.unsqueeze(1) if neg.dim() == 1 else neg  # [B, N]
            s = self.pair_scores(batch, torch.cat([batch.items.to(self.device).unsqueeze(1), neg], dim=1))  # [B, 1 + N]
            pos, negs = s[:, :1], s[:, 1:]
            if self.cfg.loss == "bpr":
                loss = -F.logsigmoid(pos - negs).mean()
            else:
                loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + \
                    F.binary_cross_entropy_with_logits(negs, torch.zeros_like(negs))
        if self.cfg.observe_in_loss and self.training:
            self.observe(batch)  # the loss graph only references tensors computed above
        return loss

    def _softmax_loss(self, batch: EventBatch, pool: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over [the batch's positives, `pool` ([N] uniform items shared by the batch)], scored
        like `score` (users at their event times, items at the batch's latest time)."""
        users, ts = batch.users.to(self.device), batch.ts.to(self.device, torch.float64)
        pos = batch.items.to(self.device)  # [B]
        b, n = pos.shape[0], pool.shape[0]
        cand = torch.cat([pos, pool])  # [B + N]
        ctx = self.context(torch.cat([users, self.item_nodes(cand)]))
        w, off = self._user_side(ctx, users, ts)  # [B, d], [B]
        table = self.item_table(ctx, ts.max(), cand)  # [B + N, d]
        logits = w @ table.T + off.unsqueeze(1) + self._bias(table).unsqueeze(0)  # [B, B + N]
        own = torch.arange(b, device=self.device)
        if self.cfg.logq:  # expected count of each candidate in the set: B p(item) (in-batch) + N / n_items
            count = torch.full_like(table[:, 0], n / self.n_items)  # [B + N]
            if self.cfg.in_batch:
                seen = self.item_seen + 1.0  # add-one: unseen and new items keep a finite correction
                count = count + b * seen[cand] / seen[1:].sum()
            logits = logits - torch.log(count).unsqueeze(0)
        drop = cand.unsqueeze(0) == pos.unsqueeze(1)  # [B, B + N] accidental hits: the event's own item
        if not self.cfg.in_batch:
            drop[:, :b] = True
        drop[own, own] = False  # the positive column itself
        return F.cross_entropy(logits.masked_fill(drop, float("-inf")), own)

    def item_table(self, ctx: NodeContext, t_ref: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of `items` (default: 1..n_items) at time t_ref (0-dim float64), in chunks -> [M, d]."""
        if items is None:
            items = torch.arange(1, self.n_items + 1, device=self.device)
        out = []
        for lo in range(0, items.shape[0], self.cfg.rank_chunk):
            chunk = self.item_nodes(items[lo : lo + self.cfg.rank_chunk])
            out.append(self.embed(ctx, chunk, t_ref.expand(chunk.shape[0])))
        return torch.cat(out) if out else torch.zeros(0, self.cfg.dim, device=self.device)

    def score(self, batch: EventBatch, items: torch.Tensor | None = None, ctx: NodeContext | None = None) -> torch.Tensor:
        """Full ranking: [B, n_items + 1] (column 0 = PAD = -inf), or [B, M] for `items` ([M]).

        Users are embedded at their event times; all items once per batch at the batch's latest time
        (state is from earlier batches only, so no event of this batch is visible to any score)."""
        users, ts = batch.users.to(self.device), batch.ts.to(self.device, torch.float64)
        if ctx is None:
            ctx = self.context()
        w, off = self._user_side(ctx, users, ts)  # [B, d], [B]
        t_ref = ts.max()
        if items is not None:
            table = self.item_table(ctx, t_ref, items.to(self.device))  # [M, d]
            return w @ table.T + off.unsqueeze(1) + self._bias(table).unsqueeze(0)  # [B, M]
        table = self.item_table(ctx, t_ref)  # [n_items, d]
        scores = w @ table.T + off.unsqueeze(1) + self._bias(table).unsqueeze(0)  # [B, n_items]
        pad = scores.new_full((scores.shape[0], 1), float("-inf"))
        return torch.cat([pad, scores], dim=1)  # [B, n_items + 1]

    # ---- catalogue ----------------------------------------------------------------------------------
    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        """Replace (same size) or extend (new items appended) the item feature tables."""
        if self.cfg.item_features != "content":
            raise TypeError(f"TGN with item_features={self.cfg.item_features!r} has no content features")
        n_new = int(next(iter(features.values())).shape[0]) - 1
        if n_new < self.n_items:
            raise ValueError(f"cannot shrink the catalogue from {self.n_items} to {n_new} items")
        grown = n_new > self.n_items
        self.features.grow_items(n_new, features, missing)
        self.n_items = n_new
        if grown:  # new items are appended after the existing nodes, so old node ids keep their state
            self.memory.grow(self.n_nodes)
            self.neighbors.grow(self.n_nodes)
            self.item_seen = torch.cat([self.item_seen, self.item_seen.new_zeros(n_new + 1 - self.item_seen.shape[0])])

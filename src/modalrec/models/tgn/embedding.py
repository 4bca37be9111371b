"""MM-TGN embedding side: functional time encoding, temporal graph attention over the k most recent
neighbours, the identity / time-projection alternatives, and the hybrid node features (learnable users,
items from fused multimodal features or the ID / random ablations).

Node space: 0 = PAD, users 1..U, items U+1..U+I (item i is node U + i).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.seeding import torch_generator


class TimeEncoder(nn.Module):
    """Functional time encoding phi(tau) = cos(w * tau + b) (Xu et al., TGAT) with learnable w, b.

    "raw": tau = dt in the data's time unit, w initialised on the geometric grid 1 .. 1e-9 (TGAT/TGN).
    "log" (default): tau = log1p(max(dt, 0)), w on 10^0.5 .. 10^-1.5. With unix seconds spanning months,
    most raw-grid frequencies turn dt into phase noise that a model can memorise but not generalise from
    (measured on ML-100K: the memory / attention variants fell below a static model); the log scale keeps
    every dimension a smooth function of elapsed time, from seconds to years.
    """

    def __init__(self, dim: int, mode: str = "log") -> None:
        super().__init__()
        if mode not in ("log", "raw"):
            raise ConfigError(f"time_encoding must be 'log' or 'raw', got {mode!r}")
        self.dim, self.mode = int(dim), mode
        self.w = nn.Parameter(torch.empty(dim))
        self.b = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.mode == "raw":
                self.w.copy_(1.0 / torch.pow(10.0, torch.linspace(0, 9, self.dim)))
            else:
                self.w.copy_(torch.pow(10.0, torch.linspace(0.5, -1.5, self.dim)))
            self.b.zero_()

    def forward(self, dt: torch.Tensor) -> torch.Tensor:  # [...] -> [..., dim]
        tau = dt.to(self.w.dtype)
        if self.mode == "log":
            tau = torch.log1p(tau.clamp(min=0.0))
        return torch.cos(tau.unsqueeze(-1) * self.w + self.b)


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


@dataclass
class Neighbors:
    """The k most recent neighbours of B nodes, oldest -> newest, left-padded (mask False = empty slot)."""

    ids: torch.Tensor  # [B, k] int64 node ids (0 where empty)
    ts: torch.Tensor  # [B, k] float64 event times
    eidx: torch.Tensor  # [B, k] int64 running event index (-1 where empty)
    mask: torch.Tensor  # [B, k] bool


class TemporalAttention(nn.Module):
    """One TGAT layer: query [h_self, phi(0)], keys/values [h_nbr, phi(t - t_nbr)], then an MLP
    merges the attention output with h_self, added residually (optimises like the identity embedding
    early on, then learns to use the neighbours)."""

    def __init__(self, dim: int, time_dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        q_dim = kv_dim = dim + time_dim
        if q_dim % n_heads:
            raise ConfigError(f"dim + time_dim = {q_dim} must be divisible by n_heads = {n_heads}")
        self.attn = nn.MultiheadAttention(q_dim, n_heads, dropout=dropout, kdim=kv_dim, vdim=kv_dim, batch_first=True)
        self.merge = mlp(q_dim + dim, dim, dim)

    def forward(
        self, h_self: torch.Tensor, t0: torch.Tensor, h_nbr: torch.Tensor, t_nbr: torch.Tensor, mask: torch.Tensor,
    ) -> torch.Tensor:
        # h_self [B, d], t0 [B, T], h_nbr [B, k, d], t_nbr [B, k, T], mask [B, k]
        q = torch.cat([h_self, t0], dim=-1).unsqueeze(1)  # [B, 1, d + T]
        kv = torch.cat([h_nbr, t_nbr], dim=-1)  # [B, k, d + T]
        lonely = ~mask.any(dim=1)  # [B] nodes without neighbours: attend to a dummy slot, output zeroed
        pad = ~mask
        pad[lonely, -1] = False
        out, _ = self.attn(q, kv, kv, key_padding_mask=pad, need_weights=False)  # [B, 1, d + T]
        out = out.squeeze(1).masked_fill(lonely.unsqueeze(1), 0.0)  # [B, d + T]
        return h_self + self.merge(torch.cat([out, h_self], dim=-1))  # [B, d] residual: starts near h_self


class GraphEmbedding(nn.Module):
    """z(n, t) from raw node states h0 (memory + features).

    "attn": n_layers of temporal attention; neighbours' lower-layer embeddings are evaluated at the same
    query time t (the neighbour buffer only holds events already observed, so nothing from the current
    batch or later is visible). "identity": z = h0. "time": z = h0 * (1 + w log1p(t - last_update)) (JODIE).
    """

    def __init__(
        self, mode: str, dim: int, time_dim: int, n_layers: int, n_heads: int, dropout: float,
        time_encoding: str = "log",
    ) -> None:
        super().__init__()
        self.mode, self.n_layers = mode, int(n_layers)
        if mode == "attn":
            self.time_enc = TimeEncoder(time_dim, time_encoding)
            self.layers = nn.ModuleList(
                TemporalAttention(dim, time_dim, n_heads, dropout) for _ in range(self.n_layers)
            )
        elif mode == "time":
            self.time_proj = nn.Linear(1, dim)
            with torch.no_grad():  # start as the identity: the projection learns how far to drift
                self.time_proj.weight.normal_(0.0, 0.01)
                self.time_proj.bias.zero_()
        elif mode != "identity":
            raise ConfigError(f"embedding must be 'attn', 'identity' or 'time', got {mode!r}")

    def forward(
        self,
        h0: Callable[[torch.Tensor], torch.Tensor],
        neighbors: Callable[[torch.Tensor], Neighbors],
        last_update: torch.Tensor,
        nodes: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        # nodes [B] int64, t [B] float64, last_update [N] float64 -> [B, d]
        if self.mode == "identity":
            return h0(nodes)
        if self.mode == "time":
            dt = (t - last_update[nodes]).clamp(min=0).float()  # [B]
            return h0(nodes) * (1.0 + self.time_proj(torch.log1p(dt).unsqueeze(-1)))
        return self._attend(h0, neighbors, nodes, t, self.n_layers)

    def _attend(self, h0: Callable, neighbors: Callable, nodes: torch.Tensor, t: torch.Tensor, layer: int) -> torch.Tensor:
        if layer == 0:
            return h0(nodes)  # [B, d]
        nb = neighbors(nodes)
        b, k = nb.ids.shape
        h_self = self._attend(h0, neighbors, nodes, t, layer - 1)  # [B, d]
        t_rep = t.unsqueeze(1).expand(b, k).reshape(-1)  # [B * k]
        h_nbr = self._attend(h0, neighbors, nb.ids.reshape(-1), t_rep, layer - 1).view(b, k, -1)  # [B, k, d]
        dt = (t.unsqueeze(1) - nb.ts).clamp(min=0)  # [B, k] float64
        t0 = self.time_enc(torch.zeros_like(t))  # [B, T]
        return self.layers[layer - 1](h_self, t0, h_nbr, self.time_enc(dt), nb.mask)

    def receptive_field(self, neighbors: Callable[[torch.Tensor], Neighbors], nodes: torch.Tensor) -> torch.Tensor:
        """Unique node ids whose memory the embedding of `nodes` reads ([M] int64)."""
        seen, frontier = [nodes], nodes
        if self.mode == "attn":
            for _ in range(self.n_layers):
                frontier = torch.unique(neighbors(frontier).ids.reshape(-1))
                seen.append(frontier)
        return torch.unique(torch.cat(seen))


class ContentFusion(nn.Module):
    """Per-modality LayerNorm + projection to `dim`, then the shared fusion (models.fusion.make_fusion:
    "mlp" = concat + MLP, "gated", "film" = first modality (text) modulates the others, "sum"); a missing
    modality contributes nothing."""

    def __init__(self, dims: dict[str, int], dim: int, fusion: str, dropout: float) -> None:
        from modalrec.models.towers.fusion import make_fusion

        super().__init__()
        self.names = list(dims)
        self.proj = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(d), nn.Dropout(dropout), nn.Linear(d, dim)) for m, d in dims.items()}
        )
        kind = "mlp" if fusion == "concat" else fusion
        self.fuse = make_fusion(kind, dim, len(dims)) if len(dims) > 1 or kind != "film" else make_fusion("sum", dim, 1)

    def forward(self, feats: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> torch.Tensor:
        # feats[m] [M, d_m], missing[m] [M] bool -> [M, dim]
        xs = [self.proj[m](feats[m]) for m in self.names]  # M x [M, dim]
        return self.fuse(xs, [~missing[m] for m in self.names])


class NodeFeatures(nn.Module):
    """Static node features x(n): learnable user embeddings; items from `mode`:
    "content" (fused FeatureStore vectors; any item with features can be scored, including new ones),
    "id" (learnable per-item embedding) or "random" (fixed seeded Gaussian vectors through an MLP)."""

    def __init__(
        self, n_users: int, n_items: int, dim: int, mode: str, fusion: str, features: dict[str, torch.Tensor],
        missing: dict[str, torch.Tensor], random_dim: int, dropout: float, seed: int, user_init_std: float = 0.01,
    ) -> None:
        super().__init__()
        self.n_users, self.n_items, self.mode, self.random_dim, self.seed = n_users, n_items, mode, random_dim, seed
        self.user = nn.Embedding(n_users + 1, dim, padding_idx=0)
        nn.init.normal_(self.user.weight, 0.0, user_init_std)
        with torch.no_grad():
            self.user.weight[0].zero_()
        if mode == "id":
            self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
            nn.init.normal_(self.item.weight, 0.0, 1.0 / math.sqrt(dim))
            with torch.no_grad():
                self.item.weight[0].zero_()
        elif mode == "random":
            self.register_buffer("rand", self._random_table(n_items), persistent=False)
            self.proj = mlp(random_dim, dim, dim, dropout)
        elif mode == "content":
            if not features:
                raise ConfigError("item_features='content' needs ModelContext.item_features (a FeatureStore)")
            self.modalities = sorted(features, key=lambda m: (m != "text", m))  # text first: FiLM conditioner
            self.set_content(features, missing)
            self.fuse = ContentFusion({m: int(features[m].shape[1]) for m in self.modalities}, dim, fusion, dropout)
        else:
            raise ConfigError(f"item_features must be 'content', 'id' or 'random', got {mode!r}")

    def _random_table(self, n_items: int) -> torch.Tensor:
        gen = torch_generator(self.seed, "tgn/random_item_features")
        table = torch.randn(n_items + 1, self.random_dim, generator=gen)  # [n + 1, r]
        table[0] = 0.0
        return table

    def set_content(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        """Install [n_items + 1, d_m] feature tables (row 0 = PAD) and [n_items + 1] missing masks."""
        for m in self.modalities:
            if m not in features:
                raise ConfigError(f"item feature modality {m!r} is missing (have {sorted(features)})")
            f = features[m].float()
            miss = missing.get(m, torch.zeros(f.shape[0], dtype=torch.bool)).bool()
            if f.shape[0] != self.n_items + 1 or miss.shape[0] != f.shape[0]:
                raise ConfigError(f"features[{m!r}] has {f.shape[0]} rows, expected n_items + 1 = {self.n_items + 1}")
            old = getattr(self, f"feat_{m}", None)
            device = old.device if old is not None else f.device
            self.register_buffer(f"feat_{m}", f.to(device), persistent=False)
            self.register_buffer(f"miss_{m}", miss.to(device), persistent=False)

    def grow_items(
        self, n_items: int, features: dict[str, torch.Tensor] | None = None, missing: dict[str, torch.Tensor] | None = None
    ) -> None:
        """Extend the item table to `n_items` (new items appended at the end); content installs `features`."""
        extra = n_items - self.n_items
        if extra < 0:
            raise ValueError(f"cannot shrink the catalogue from {self.n_items} to {n_items} items")
        self.n_items = n_items
        if self.mode == "content":
            self.set_content(features or {}, missing or {})
        elif self.mode == "random":
            self.rand = self._random_table(n_items).to(self.rand.device)
        elif extra:
            w = self.item.weight
            gen = torch_generator(self.seed, f"tgn/new_item_ids/{n_items}")
            new = torch.randn(extra, w.shape[1], generator=gen).to(w.device) / math.sqrt(w.shape[1])
            self.item = nn.Embedding.from_pretrained(torch.cat([w.detach(), new]), freeze=False, padding_idx=0)

    def items(self, idx: torch.Tensor) -> torch.Tensor:  # [M] item indices -> [M, dim]
        if self.mode == "id":
            return self.item(idx)
        if self.mode == "random":
            return self.proj(self.rand[idx])
        feats = {m: getattr(self, f"feat_{m}")[idx] for m in self.modalities}
        miss = {m: getattr(self, f"miss_{m}")[idx] for m in self.modalities}
        return self.fuse(feats, miss)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:  # [...] node ids -> [..., dim]
        flat = nodes.reshape(-1)
        uniq, inv = torch.unique(flat, return_inverse=True)  # features once per distinct node
        is_item = uniq > self.n_users
        out = self.user(torch.where(is_item, torch.zeros_like(uniq), uniq))  # [U, dim]
        if bool(is_item.any()):
            items = self.items(uniq[is_item] - self.n_users)  # [I, dim]
            out = out.to(items.dtype).index_copy(0, is_item.nonzero().squeeze(1), items)
        return out[inv].view(*nodes.shape, -1)

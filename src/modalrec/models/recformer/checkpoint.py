"""Recformer's own checkpoint: config.json + model.safetensors (+ frozen item vectors)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modalrec.io import write_bytes_atomic, write_json_atomic
from modalrec.models.recformer.input import ItemTokens
from modalrec.models.recformer.model import RecformerConfig, RecformerModel


def save_recformer(directory: str | Path, model: RecformerModel, extra: Mapping[str, Any] | None = None) -> None:
    """config.json + model.safetensors (+ item_vectors.safetensors when the vectors are frozen)."""
    from safetensors.torch import save

    d = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_bytes_atomic(d / "model.safetensors", save(state))
    if model.item_vectors_frozen:
        vecs = model.item_embeddings().cpu().contiguous()
        write_bytes_atomic(d / "item_vectors.safetensors", save({"item_vectors": vecs}))
    else:  # vectors follow from the weights; never leave an older run's frozen vectors beside new weights
        (d / "item_vectors.safetensors").unlink(missing_ok=True)
    write_json_atomic(d / "config.json", {"model": "recformer", "config": model.config_dict(), "extra": dict(extra or {})})


def load_recformer(directory: str | Path, items: ItemTokens | None = None) -> RecformerModel:
    from safetensors.torch import load_file

    d = Path(directory)
    meta = json.loads((d / "config.json").read_text())
    saved = {k: v for k, v in meta["config"].items() if k != "seed"}  # older checkpoints stored the init seed
    cfg = RecformerConfig(**{**saved, "init_from": None})
    model = RecformerModel(cfg, items)
    model.load_state_dict(load_file(str(d / "model.safetensors")))
    vec_path = d / "item_vectors.safetensors"
    if vec_path.is_file() and items is not None:
        vecs = load_file(str(vec_path))["item_vectors"]
        if len(vecs) == len(items):
            model.set_item_vectors(vecs)
    return model.eval()

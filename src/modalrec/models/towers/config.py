"""The tower choice nested in a sequence model's config; its own module so towers and their
registry both import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TowerConfig:
    """Which tower a sequence model uses; nested in the model config (e.g. `model.tower.kind`)."""

    kind: str = "id"  # "id" | "text" | "image" | "text+image" | "hybrid"
    fusion: str = "mlp"  # how content towers fuse modalities (ignored by "id")
    dropout: float = 0.0  # dropout on content projections (ignored by "id")
    options: dict[str, Any] = field(default_factory=dict)  # builder-specific extras

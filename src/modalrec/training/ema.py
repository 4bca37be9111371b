"""Exponential moving average of the trainable weights (`TrainConfig.ema_decay`).

Validation, the best-checkpoint snapshot and the weights `fit` returns use the average; the optimizer
keeps stepping the live weights. The average is kept in float32 whatever the parameter dtype, and its
decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates so that the random
initialisation does not linger in it. Buffers are not averaged (they follow the live model).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from modalrec.errors import ConfigError


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1) (0 = off), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {
            name: p.detach().clone().float() for name, p in model.named_parameters() if p.requires_grad
        }

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold the live weights in after an optimizer step."""
        weight = 1.0 - self.current_decay()
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), weight)
        self.updates += 1

    @contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The model holds the averaged weights inside the block and its live weights again after it."""
        live = {name: p.detach().clone() for name, p in model.named_parameters() if name in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in live:
                        p.copy_(live[name])

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name])

    def tensors(self, prefix: str = "ema.") -> dict[str, torch.Tensor]:
        return {prefix + name: t for name, t in self.shadow.items()}

    def load(self, tensors: dict[str, torch.Tensor], updates: int, prefix: str = "ema.") -> None:
        """Inverse of `tensors()`; refuses a saved average that does not cover the same weights."""
        saved = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if set(saved) != set(self.shadow):
            missing, extra = sorted(set(self.shadow) - set(saved)), sorted(set(saved) - set(self.shadow))
            raise ValueError(f"saved weight average does not fit the model: missing {missing[:5]}, "
                             f"unexpected {extra[:5]}")  # fmt: skip
        for name, t in saved.items():
            self.shadow[name].copy_(t)
        self.updates = int(updates)

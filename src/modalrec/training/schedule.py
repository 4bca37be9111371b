"""Learning-rate schedule: linear warmup, then constant, cosine decay, or reduce-on-plateau.

Implemented as a pure function of (step, plateau multiplier) so its whole state is three numbers
that a checkpoint stores as JSON.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from modalrec.errors import ConfigError

SCHEDULERS = ("none", "cosine", "plateau")


class LRSchedule:
    def __init__(self, cfg: Any, total_steps: int) -> None:
        if cfg.scheduler not in SCHEDULERS:
            raise ConfigError(f"train.scheduler must be one of {SCHEDULERS}, got {cfg.scheduler!r}")
        self.kind, self.base_lr = cfg.scheduler, float(cfg.lr)
        self.warmup, self.total = int(cfg.warmup_steps), max(int(total_steps), 1)
        self.min_ratio = float(cfg.min_lr_ratio)
        self.plateau_factor, self.plateau_patience = float(cfg.plateau_factor), int(cfg.plateau_patience)
        self.step_count = 0
        self.plateau_mult = 1.0
        self.plateau_bad = 0
        self.current_lr = self.lr_at(0)

    def lr_at(self, step: int) -> float:
        f = 1.0
        if self.warmup and step < self.warmup:
            f = (step + 1) / self.warmup
        if self.kind == "cosine":
            progress = min(max((step - self.warmup) / max(self.total - self.warmup, 1), 0.0), 1.0)
            f *= self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base_lr * f * self.plateau_mult

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """Set the lr for the coming step."""
        self.current_lr = self.lr_at(self.step_count)
        for group in optimizer.param_groups:
            group["lr"] = self.current_lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_count += 1

    def on_validation(self, value: float, improved: bool) -> None:
        if self.kind != "plateau":
            return
        self.plateau_bad = 0 if improved else self.plateau_bad + 1
        if self.plateau_bad >= self.plateau_patience:
            self.plateau_mult *= self.plateau_factor
            self.plateau_bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "step_count": self.step_count,
            "plateau_mult": self.plateau_mult,
            "plateau_bad": self.plateau_bad,
            "current_lr": self.current_lr,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_mult = float(state["plateau_mult"])
        self.plateau_bad = int(state["plateau_bad"])
        self.current_lr = float(state.get("current_lr", self.lr_at(self.step_count)))

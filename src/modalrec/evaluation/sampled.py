"""Sampled-negative evaluation (only on explicit request; full ranking is the default).

Each event's target is ranked against `n` negatives drawn WITHOUT replacement from the same candidate
set as full ranking (items 1..n_items minus the target and, with exclude_seen, minus the user's
history), uniformly or proportionally to training popularity. Sampling uses the Gumbel-top-k trick
(Efraimidis-Spirakis keys: the top-n of log(u) / w is an exact weighted draw without replacement), so it is vectorised.

Negatives depend only on (evalset, n_items, config): every model scored by the same Evaluator sees
the same negatives, and the draw does not depend on the evaluator's score chunking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from modalrec.seeding import torch_generator

# Random keys materialised per sampling block; fixed, so the draws never depend on the score batch size.
_BLOCK_FLOATS = 2**22


@dataclass(frozen=True)
class SampledConfig:
    """n negatives per event, `kind` "uniform" or "popularity" (needs item_counts [n_items + 1])."""

    n: int = 100
    kind: str = "uniform"
    seed: int = 0
    item_counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"sampled.n must be >= 1, got {self.n}")
        if self.kind not in ("uniform", "popularity"):
            raise ValueError(f"sampled.kind must be 'uniform' or 'popularity', got {self.kind!r}")
        if self.kind == "popularity" and self.item_counts is None:
            raise ValueError("sampled.kind='popularity' needs item_counts (training counts per item index)")

    def describe(self) -> dict[str, object]:
        return {
            "n": self.n,
            "kind": self.kind,
            "seed": self.seed,
            "definition": f"SAMPLED metrics: the target is ranked against {self.n} {self.kind} negatives drawn "
            "without replacement from the full-ranking candidates (target excluded); pessimistic ties; "
            "keys are prefixed 'sampled_'. Not comparable with full-ranking metrics."
            + (" Items with zero training count are never drawn." if self.kind == "popularity" else ""),
        }


def draw_negatives(
    n_events: int,
    n_items: int,
    targets: np.ndarray,
    mask_offsets: np.ndarray,
    mask_items: np.ndarray,
    cfg: SampledConfig,
) -> np.ndarray:
    """[E, n] int64 negatives; -1 where an event has fewer than n eligible items.

    targets: [E]; mask_offsets [E + 1] / mask_items: CSR of extra items excluded per event (history).
    """
    weights = torch.ones(n_items + 1, dtype=torch.float32)  # [N + 1]
    if cfg.kind == "popularity":
        counts = np.asarray(cfg.item_counts, dtype=np.float64)
        if counts.shape != (n_items + 1,):
            raise ValueError(f"sampled.item_counts must have shape ({n_items + 1},), got {counts.shape}")
        if (counts < 0).any():
            raise ValueError("sampled.item_counts must be non-negative")
        weights = torch.from_numpy(counts.astype(np.float32))
    weights[0] = 0.0  # PAD is never a negative
    out = np.full((n_events, cfg.n), -1, dtype=np.int64)
    block = max(1, _BLOCK_FLOATS // (n_items + 1))
    k = min(cfg.n, n_items + 1)
    t_targets = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    for b, lo in enumerate(range(0, n_events, block)):
        hi = min(n_events, lo + block)
        gen = torch_generator(cfg.seed, f"sampled/{cfg.kind}/block{b}")
        # Efraimidis-Spirakis: the top-n of log(u) / w (u ~ U(0,1)) is an exact weighted draw without
        # replacement; with equal weights the top-n of u suffices. Ineligible items get key -inf.
        keys = torch.rand((hi - lo, n_items + 1), generator=gen)  # [b, N + 1]
        if cfg.kind == "popularity":
            keys = keys.clamp_(min=1e-38).log_().div_(weights.unsqueeze(0))  # w = 0 -> -inf
        keys[:, 0] = -math.inf
        rows = torch.arange(hi - lo)
        keys[rows, t_targets[lo:hi]] = -math.inf
        a, z = int(mask_offsets[lo]), int(mask_offsets[hi])
        if z > a:
            ev = np.repeat(np.arange(hi - lo), np.diff(mask_offsets[lo : hi + 1]))
            keys[torch.from_numpy(ev), torch.from_numpy(mask_items[a:z])] = -math.inf
        top, idx = keys.topk(k, dim=1)  # [b, k]
        idx[torch.isinf(top)] = -1  # fewer eligible items than n
        out[lo:hi, :k] = idx.numpy()
    return out

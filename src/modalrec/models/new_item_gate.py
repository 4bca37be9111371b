"""A per-user new-item offset: how likely is it that this user's next item is one nobody took in training?

The new-item offset (SASRec `new_item_offset`, training/selection.offset_sweep) lifts every item without training
events by one constant, the same for every user. Who takes a new item next differs: on IISAN Scientific
leave-one-out 18% of VALID targets have no training events, more after histories of rarely taken items. The gate
is a logistic regression over five facts of the history window (GATE_FEATURES, from the items' training event
counts), fitted on VALID's events (label: the target has no training events), and it moves the new items' scores
per user:

    score(u, i) = model.score(u, i) + (offset + slope * z_u) * [item i has no training events]

z_u is the user's logit standardised over VALID (mean 0, sd 1), so `slope` is in score units per sd; `offset` and
`slope` are chosen on VALID (selection.gate_sweep) after the gate is fitted there, so a gated model's VALID numbers
are in-sample for its eight numbers (five weights, bias, offset, slope; against thousands of VALID events); TEST is
evaluated once.
Items added to a served catalogue have no training events: the gate lifts them as it lifts the items nobody took.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.models.base import flag_of
from modalrec.types import batch_digest

# in this order, the columns of history_features (log1p of training event counts; the window's newest item last)
GATE_FEATURES = ("log_history_length", "mean_log_count", "min_log_count", "last_log_count", "rare_share")
CACHE_BYTES = 4 * 2**30  # reused_scores keeps at most this much of the wrapped model's scores; the rest is recomputed
L2 = 1e-3  # ridge on the standardised features' weights: five weights fitted on thousands of VALID events


def history_features(history: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[B, L] left-padded history windows (0 = PAD), [N + 1] training events per item -> [B, 5] float64
    (GATE_FEATURES). Items past `counts` (added after training) count as never taken; an empty window gives 0s."""
    counts = counts.to(history.device, torch.float64)
    real = history > 0
    known = history < len(counts)
    c = torch.where(known, counts[history.clamp(max=len(counts) - 1)], torch.zeros((), dtype=torch.float64,
                                                                                    device=history.device))
    log_c = torch.log1p(c)
    n = real.sum(1)
    per = n.clamp(min=1).to(torch.float64)
    mean = (log_c * real).sum(1) / per
    lowest = torch.where(real, log_c, torch.full_like(log_c, float("inf"))).min(1).values
    lowest = torch.where(n > 0, lowest, torch.zeros_like(lowest))
    last = log_c[:, -1] * real[:, -1]
    rare = ((c <= 1) & real).sum(1) / per  # taken at most once in training: by nobody, or by this user alone
    return torch.stack([torch.log(per), mean, lowest, last, rare], 1)


@dataclass(frozen=True)
class GateFit:
    """A fitted gate: feature standardisation, logistic weights, the logit's VALID mean / sd, and how well it
    separates VALID's new-item targets (ROC AUC) -- recorded in the run's selection."""

    feature_mean: list[float]
    feature_std: list[float]
    weights: list[float]
    bias: float
    logit_mean: float
    logit_std: float
    valid_auc: float
    valid_events: int
    valid_new_share: float

    def z(self, features: torch.Tensor) -> torch.Tensor:  # [B, 5] -> [B] float64: the standardised logit
        t = {"dtype": torch.float64, "device": features.device}
        x = (features.to(torch.float64) - torch.tensor(self.feature_mean, **t)) / torch.tensor(self.feature_std, **t)
        return (x @ torch.tensor(self.weights, **t) + self.bias - self.logit_mean) / self.logit_std

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(GATE_FEATURES), **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateFit:
        if list(d.get("features", GATE_FEATURES)) != list(GATE_FEATURES):
            raise ConfigError(f"new-item gate: fitted on features {d.get('features')}, this version computes "
                              f"{list(GATE_FEATURES)}")
        return cls(**{k: v for k, v in d.items() if k != "features"})


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    pos, n_pos = labels.astype(bool), int(labels.sum())
    n_neg = len(labels) - n_pos
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def newton_logistic(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 50) -> np.ndarray:
    """Ridge logistic regression by Newton's method (a handful of weights: no optimizer, no randomness); the last
    column of `x` is the unpenalised bias. Returns the weights."""
    theta = np.zeros(x.shape[1])
    ridge = np.full(x.shape[1], 2 * l2)
    ridge[-1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ theta)))
        grad = x.T @ (p - y) / len(y) + ridge * theta
        hess = (x * (p * (1 - p))[:, None]).T @ x / len(y) + np.diag(ridge)
        step = np.linalg.solve(hess + 1e-12 * np.eye(len(theta)), grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta


def fit_gate(features: torch.Tensor, is_new: torch.Tensor, l2: float = L2) -> GateFit:
    """Logistic regression of `is_new` ([E] bool: the event's target has no training events) on `features`
    ([E, 5]), on standardised features with a ridge `l2` (mean loss + l2 * |w|^2, by newton_logistic)."""
    y = is_new.to(torch.float64).cpu()
    n_new = int(y.sum())
    if n_new == 0 or n_new == len(y):
        raise ConfigError(f"select.new_item_gate: the {len(y)} VALID events need targets both with and without "
                          f"training events to fit the gate ({n_new} without)")
    x = features.to(torch.float64).cpu().numpy()
    mean, std = x.mean(0), np.maximum(x.std(0, ddof=1), 1e-9)
    xs = (x - mean) / std
    theta = newton_logistic(np.hstack([xs, np.ones((len(xs), 1))]), y.numpy(), l2)  # the last column: the bias
    logit = xs @ theta[:-1] + theta[-1]
    return GateFit([float(v) for v in mean], [float(v) for v in std], [float(v) for v in theta[:-1]],
                   float(theta[-1]), float(logit.mean()), max(float(logit.std(ddof=1)), 1e-9),
                   roc_auc(logit, y.numpy()), len(y), n_new / len(y))


def valid_events(split: Any, max_len: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """What the gate is fitted on: VALID's history windows ([E, max_len], left-padded), targets ([E]) and the
    training event counts per item ([N + 1])."""
    from modalrec.data.sequences import eval_batch

    batch = eval_batch(split.valid, np.arange(len(split.valid)), max_len)
    return batch.items, batch.targets, split.train.item_counts()


class NewItemGate(nn.Module):
    """`model`'s scores plus (offset + slope * z_user) on every item without training events (evaluation and
    serving). `counts`: [N + 1] training events per item; items past it (added at serving) are new."""

    dot_product_scores = False  # the lift depends on the history, not on an item table

    def __init__(self, model: nn.Module, counts: Any, fit: GateFit, offset: float = 0.0, slope: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("counts", torch.as_tensor(np.asarray(counts), dtype=torch.int64).clone(),
                             persistent=False)
        self.fit = fit
        self.offset, self.slope = float(offset), float(slope)
        self._cache: dict[bytes, torch.Tensor] | None = None

    @property
    def history_length(self) -> int:
        return int(self.model.history_length)

    def lift(self, batch: Any) -> torch.Tensor:  # [B]: the per-user offset of new items
        z = self.fit.z(history_features(batch.items, self.counts))
        return (self.offset + self.slope * z).to(torch.float32)

    def is_new(self, items: torch.Tensor) -> torch.Tensor:  # [...] bool; PAD (0) never
        return ~flag_of(self.counts.to(items.device) > 0, items) & (items > 0)  # items past counts: added, new

    def score(self, batch: Any, items: torch.Tensor | None = None) -> torch.Tensor:  # [B, N + 1] or [B, M]
        scores = self._model_scores(batch, items)
        if not (self.offset or self.slope):
            return scores
        cand = torch.arange(scores.shape[1], device=scores.device) if items is None else items.to(scores.device)
        return scores + self.lift(batch).to(scores.device)[:, None] * self.is_new(cand).to(scores.dtype)

    def _model_scores(self, batch: Any, items: torch.Tensor | None) -> torch.Tensor:
        if self._cache is None or items is not None:
            return self.model.score(batch, items)
        key = batch_digest(batch)
        if key in self._cache:
            return self._cache[key]
        scores = self.model.score(batch)
        if sum(t.numel() * t.element_size() for t in self._cache.values()) + scores.numel() * scores.element_size() \
                <= CACHE_BYTES:
            self._cache[key] = scores
        return scores

    def score_scale(self) -> float:
        """The mean over the reused batches' users of the standard deviation of their finite scores over the
        catalogue (PAD excluded): the unit of the gate's offset and slope grids. 1.0 with nothing reused."""
        stds = []
        for scores in (self._cache or {}).values():
            s = scores[:, 1:].to(torch.float64)
            finite = torch.isfinite(s)
            n = finite.sum(1).clamp(min=2)
            mean = torch.where(finite, s, 0).sum(1) / n
            var = torch.where(finite, (s - mean[:, None]) ** 2, 0).sum(1) / (n - 1)
            stds.append(var.sqrt())
        scale = float(torch.cat(stds).mean()) if stds else 1.0
        return scale if scale > 0 and np.isfinite(scale) else 1.0

    @contextmanager
    def reused_scores(self) -> Iterator[None]:
        """Within a sweep the wrapped model's full-catalogue scores depend on the batch alone: each VALID batch is
        scored once (memory: VALID events x catalogue floats) and the candidates add their lifts to it."""
        self._cache = {}
        try:
            yield
        finally:
            self._cache = None

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:  # [M] -> [M, d]: item similarity (serving)
        return self.model.embed_items(items)

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        """The wrapped model scores the grown catalogue; added items are past `counts`, so new."""
        self.model.set_item_features(features, missing)


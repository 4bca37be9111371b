"""Fusion of per-modality item vectors (e.g. text and image) into one vector, with missing modalities.

Every fusion module has the same call: `fusion(xs, present) -> [N, dim]` where `xs` is a list of
[N, dim] tensors (one per modality, in a fixed order, e.g. [text, image]) and `present` a list of
[N] bool masks (None = all present). A missing modality contributes nothing: its input values never
reach the output, so garbage (or zeros) in a missing row cannot leak. A row with no modality gives 0.

    FUSIONS = {"sum", "mlp" (concat + MLP), "film" (FiLM: the first modality modulates the others),
               "gated" (softmax modality weights per item, from all inputs)}

`make_fusion(kind, dim, n_modalities)` builds one; the MM-TGN and the content item towers share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modalrec.errors import ConfigError

Masks = Sequence[torch.Tensor] | None


def _masks(xs: Sequence[torch.Tensor], present: Masks, n_modalities: int) -> list[torch.Tensor]:
    """Validated [N] bool masks, one per modality (all True when `present` is None)."""
    if len(xs) != n_modalities:
        raise ValueError(f"fusion expects {n_modalities} modality tensors, got {len(xs)}")
    n = xs[0].shape[0]
    for x in xs:
        if x.dim() != 2 or x.shape[0] != n:
            raise ValueError(f"fusion inputs must all be [N, dim] with the same N; got {[tuple(t.shape) for t in xs]}")
    if present is None:
        return [torch.ones(n, dtype=torch.bool, device=xs[0].device) for _ in xs]
    if len(present) != n_modalities:
        raise ValueError(f"fusion expects {n_modalities} present-masks, got {len(present)}")
    return [p.to(device=xs[0].device, dtype=torch.bool).reshape(n) for p in present]


def _zero_missing(xs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    # torch.where (not multiplication) so that NaN / inf in a missing row cannot leak through 0 * x.
    return [torch.where(m[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device)) for x, m in zip(xs, masks)]


class Fusion(nn.Module):
    """Base class: subclasses implement `fuse(xs, masks)` on inputs whose missing rows are already zero."""

    def __init__(self, dim: int, n_modalities: int = 2) -> None:
        super().__init__()
        if dim < 1 or n_modalities < 1:
            raise ConfigError(f"fusion needs dim >= 1 and n_modalities >= 1, got {dim}, {n_modalities}")
        self.dim, self.n_modalities = int(dim), int(n_modalities)

    def forward(self, xs: Sequence[torch.Tensor], present: Masks = None) -> torch.Tensor:  # -> [N, dim]
        masks = _masks(xs, present, self.n_modalities)
        out = self.fuse(_zero_missing(xs, masks), masks)  # [N, dim]
        anything = torch.stack(masks, 1).any(1)  # [N] rows with at least one modality
        return torch.where(anything[:, None], out, torch.zeros((), dtype=out.dtype, device=out.device))

    def fuse(self, xs: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Re-apply this module's own initialisation (sequence models call it after their generic init)."""


class SumFusion(Fusion):
    """Sum of the present modalities (no parameters)."""

    def fuse(self, xs: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(xs, 0).sum(0)  # [N, dim]


class MLPFusion(Fusion):
    """concat(x_1 .. x_M, presence flags) -> Linear -> GELU -> Linear, plus the mean of present inputs.

    The residual mean keeps the fused vector in the inputs' space from the start (the MLP learns the
    interaction on top); presence flags tell the MLP which slots are empty rather than truly zero.
    """

    def __init__(self, dim: int, n_modalities: int = 2, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(dim, n_modalities)
        hidden = hidden or 2 * dim
        self.mlp = nn.Sequential(
            nn.Linear(n_modalities * dim + n_modalities, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.init_weights()

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            for layer in (self.mlp[0], self.mlp[3]):
                nn.init.xavier_normal_(layer.weight, generator=generator)
                layer.bias.zero_()

    def fuse(self, xs: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        flags = torch.stack(masks, 1).to(xs[0].dtype)  # [N, M]
        mean = torch.stack(xs, 0).sum(0) / flags.sum(1, keepdim=True).clamp_min(1.0)  # [N, dim]
        return mean + self.mlp(torch.cat([*xs, flags], 1))  # [N, dim]


class FiLMFusion(Fusion):
    """FiLM: the first modality (text) modulates the others (image): gamma(t) * x + beta(t).

    gamma = 1 + W_g t and beta = W_b t with W_g, W_b (and biases) initialised to zero, so at
    initialisation FiLM is the identity on the modulated branch. Missing conditioner: gamma = 1,
    beta = 0 (the other branches pass unchanged). With no modulated branch present the conditioner
    itself is the output, so a text-only item still gets a vector. Several modulated branches are averaged.
    """

    def __init__(self, dim: int, n_modalities: int = 2) -> None:
        if n_modalities < 2:
            raise ConfigError("film fusion needs at least 2 modalities (a conditioner and a modulated one)")
        super().__init__(dim, n_modalities)
        self.gamma = nn.Linear(dim, dim * (n_modalities - 1))
        self.beta = nn.Linear(dim, dim * (n_modalities - 1))
        self.init_weights()

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            for layer in (self.gamma, self.beta):
                layer.weight.zero_()
                layer.bias.zero_()

    def fuse(self, xs: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        cond, rest = xs[0], xs[1:]  # [N, dim], (M - 1) x [N, dim]
        n, m1 = cond.shape[0], len(rest)
        # A missing conditioner is already zero, so gamma = 1 + b_g and beta = b_b there; force exact 1 / 0.
        has_cond = masks[0][:, None, None]  # [N, 1, 1]
        gamma = torch.where(has_cond, 1.0 + self.gamma(cond).view(n, m1, -1), 1.0)  # [N, M-1, dim]
        beta = torch.where(has_cond, self.beta(cond).view(n, m1, -1), 0.0)  # [N, M-1, dim]
        rest_t = torch.stack(rest, 1)  # [N, M-1, dim]
        rest_mask = torch.stack(masks[1:], 1)  # [N, M-1]
        modulated = (gamma * rest_t + beta) * rest_mask[:, :, None]  # [N, M-1, dim] missing -> 0
        n_rest = rest_mask.sum(1, keepdim=True)  # [N, 1]
        fused = modulated.sum(1) / n_rest.clamp_min(1)  # [N, dim]
        return torch.where(n_rest > 0, fused, cond)  # no modulated branch: the conditioner alone

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) [N, M-1, dim] for conditioner vectors [N, dim] (for inspection / tests)."""
        n = cond.shape[0]
        m1 = self.n_modalities - 1
        return 1.0 + self.gamma(cond).view(n, m1, -1), self.beta(cond).view(n, m1, -1)


class GatedFusion(Fusion):
    """Per-item modality weights: w = softmax over present modalities of a gate MLP on all inputs.

    fused = sum_m w_m x_m; missing modalities get weight 0 and the rest renormalise (the softmax is
    taken over present modalities only). Zero-initialised gate output: equal weights at the start.
    """

    def __init__(self, dim: int, n_modalities: int = 2, hidden: int | None = None) -> None:
        super().__init__(dim, n_modalities)
        hidden = hidden or dim
        self.gate = nn.Sequential(nn.Linear(n_modalities * dim + n_modalities, hidden), nn.GELU(),
                                  nn.Linear(hidden, n_modalities))
        self.init_weights()

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            nn.init.xavier_normal_(self.gate[0].weight, generator=generator)
            self.gate[0].bias.zero_()
            self.gate[2].weight.zero_()
            self.gate[2].bias.zero_()

    def weights(self, xs: Sequence[torch.Tensor], present: Masks = None) -> torch.Tensor:
        """[N, M] modality weights: >= 0, 0 for missing modalities, summing to 1 over present ones."""
        masks = _masks(xs, present, self.n_modalities)
        return self._weights(_zero_missing(xs, masks), masks)

    def _weights(self, xs: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        mask = torch.stack(masks, 1)  # [N, M]
        logits = self.gate(torch.cat([*xs, mask.to(xs[0].dtype)], 1)).float()  # [N, M]
        anything = mask.any(1, keepdim=True)  # [N, 1]
        # Rows with no modality keep finite logits (no all -inf softmax -> no NaN) and get zero weights.
        logits = logits.masked_fill(~mask & anything, float("-inf"))
        w = torch.softmax(logits, 1) * anything  # [N, M]
        return w.to(xs[0].dtype)

    def fuse(self, xs: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        w = self._weights(xs, masks)  # [N, M]
        return (torch.stack(xs, 1) * w[:, :, None]).sum(1)  # [N, dim]


FUSIONS: dict[str, type[Fusion]] = {
    "sum": SumFusion,
    "mlp": MLPFusion,
    "film": FiLMFusion,
    "gated": GatedFusion,
}


def make_fusion(kind: str, dim: int, n_modalities: int = 2, generator: torch.Generator | None = None) -> Fusion:
    """A fusion module by name: one of FUSIONS ("sum", "mlp" = concat + MLP, "film", "gated").

    With `generator` the random initialisation draws from it (reproducible without the global RNG).
    """
    if kind not in FUSIONS:
        raise ConfigError(f"unknown fusion {kind!r}; known: {sorted(FUSIONS)}")
    fusion = FUSIONS[kind](dim, n_modalities)
    if generator is not None:
        fusion.init_weights(generator)
    return fusion

"""Layers and initialisation shared by several model families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttentionBlock(nn.Module):
    """Multi-head self-attention + position-wise feed-forward, each with a residual and LayerNorm."""

    def __init__(
        self, dim: int, n_heads: int, ffn_dim: int, dropout: float, attn_dropout: float, pre_norm: bool
    ):
        super().__init__()
        self.n_heads, self.attn_dropout, self.pre_norm = n_heads, attn_dropout, pre_norm
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm1 = nn.LayerNorm(dim, eps=1e-8)
        self.norm2 = nn.LayerNorm(dim, eps=1e-8)
        self.drop = nn.Dropout(dropout)

    def _attend(self, x: torch.Tensor, mask: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """Attention output [B, L, d], or [M, d] at the rows `at` ([B, L] bool) only."""
        b, L, d = x.shape
        q, k, v = (
            self.qkv(x).view(b, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        )  # 3 x [B, H, L, dh]
        p = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p).transpose(1, 2)  # [B, L, H, dh]
        a = a.reshape(b, L, d) if at is None else a[at].reshape(-1, d)  # [B, L, d] or [M, d]
        return self.drop(self.out(a))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [B, L, d] -> [B, L, d]
        if self.pre_norm:
            x = x + self._attend(self.norm1(x), mask)
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self._attend(x, mask))
        return self.norm2(x + self.drop(self.ffn(x)))

    def forward_at(self, x: torch.Tensor, mask: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """`forward(x, mask)[at]` ([M, d]) for the rows `at` ([B, L] bool) alone.

        Attention runs over every row (each is a key and a value), but its output projection, the
        feed-forward and the norms (most of a block's cost) run on the M selected rows: a last block whose
        other states nobody reads (training windows whose early positions are context only) costs less."""
        if self.pre_norm:
            h = x[at] + self._attend(self.norm1(x), mask, at)  # [M, d]
            return h + self.drop(self.ffn(self.norm2(h)))
        h = self.norm1(x[at] + self._attend(x, mask, at))
        return self.norm2(h + self.drop(self.ffn(h)))


def init_weights(model: nn.Module, std: float, generator: torch.Generator) -> None:
    """Deterministic init from one generator (no global RNG): N(0, std) linears/embeddings, unit norms.

    Submodules with their own `init_weights(generator)` (item towers, adapters) run it afterwards and
    may override. Frozen weights (requires_grad=False, e.g. pretrained parts) are never touched.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.requires_grad:
                nn.init.normal_(m.weight, 0.0, std, generator=generator)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
                if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm) and m.weight is not None and m.weight.requires_grad:
                nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in model.modules():
            if m is not model and callable(getattr(m, "init_weights", None)):
                m.init_weights(generator)

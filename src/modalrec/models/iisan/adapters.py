"""IISAN building blocks: LayerDrop selection, gates, adapter blocks, intra- and inter-modal side adapter networks.

All networks here run on *cached*, pooled per-layer hidden states of frozen encoders
(features.hidden_cache: [n_items + 1, n_layers, d], layer 0 = embedding-layer output), so training never
runs an encoder forward or backward pass — that is where IISAN's time and memory savings come from.

Layer numbering follows the cache: 0 = embedding layer, 1..L = transformer layers of an L-layer encoder.
The embedding layer (0) is always the start of every chain; `layerdrop_layers` picks which transformer layers
get a side-adapter block.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from modalrec.errors import ConfigError

LAYERDROP_MODES = ("auto", "symmetric", "group", "all")


def _evenly_from_top(n_layers: int, n_blocks: int, stride: int) -> list[int]:
    """n_blocks layers ending at the last layer, `stride` apart, ascending: [L - (n-1)s, ..., L - s, L]."""
    return [n_layers - j * stride for j in range(n_blocks - 1, -1, -1)]


def _check_explicit(select: Sequence[int], n_layers: int, name: str) -> list[int]:
    out = [int(i) for i in select]
    if not out:
        raise ConfigError(f"{name}: empty layer selection")
    if any(i < 1 or i > n_layers for i in out):
        raise ConfigError(f"{name}: layers must lie in 1..{n_layers} (0 is the embedding layer, always used); got {out}")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ConfigError(f"{name}: layers must be strictly increasing; got {out}")
    return out


def layerdrop_layers(
    text_layers: int,
    image_layers: int | None = None,
    *,
    mode: str = "auto",
    n_blocks: int | None = None,
    text_select: Sequence[int] | None = None,
    image_select: Sequence[int] | None = None,
) -> tuple[list[int], list[int]]:
    """Which encoder layers get a side-adapter block (LayerDrop). Returns (text_layers, image_layers), ascending.

    `text_layers` / `image_layers` are encoder depths L (number of transformer layers; the cache has L + 1
    rows per item). Layer 0 (embeddings) is never listed: it is the input of every chain.

    - "symmetric": keep every second layer, ending at the last one: L = 12 -> [2, 4, 6, 8, 10, 12];
      L = 6 -> [2, 4, 6]; odd L = 5 -> [1, 3, 5]. With `n_blocks` = n the stride is L // n instead of 2.
      Both modalities must have the same depth.
    - "group" (asymmetric group LayerDrop, IISAN-Versa): the image side as "symmetric" (n = ceil(L_image / 2)
      blocks, default 6 for a 12-layer ViT); the text side takes n blocks with the largest stride k such
      that L_text - k * n >= 1, ending at the last layer: 28 / 12 -> k = 4, text [8, 12, 16, 20, 24, 28];
      32 / 12 -> k = 5, text [7, 12, 17, 22, 27, 32]; image [2, 4, ..., 12] in both cases. When the text
      encoder is the shallower one the roles swap: 6 / 12 -> text [2, 4, 6], image (k = 3) [6, 9, 12].
    - "all": no LayerDrop, every layer 1..L (depths must match when both modalities are present).
    - "auto": "symmetric" for text-only or equal depths, else "group".
    - `text_select` / `image_select`: explicit selections override the mode (validated: 1..L, increasing).

    With both modalities the two lists have equal length: block i of the inter-modal SAN pairs them.
    """
    if text_layers < 1 or (image_layers is not None and image_layers < 1):
        raise ConfigError(f"encoder depths must be >= 1; got text={text_layers}, image={image_layers}")
    if mode not in LAYERDROP_MODES:
        raise ConfigError(f"layerdrop mode must be one of {LAYERDROP_MODES}; got {mode!r}")
    if n_blocks is not None and n_blocks < 1:
        raise ConfigError(f"n_blocks must be >= 1; got {n_blocks}")
    if mode == "auto":
        mode = "symmetric" if image_layers is None or image_layers == text_layers else "group"

    def symmetric(depth: int) -> list[int]:
        if n_blocks is None:  # every second layer: ceil(L / 2) blocks
            return _evenly_from_top(depth, (depth + 1) // 2, 2)
        if n_blocks > depth:
            raise ConfigError(f"n_blocks={n_blocks} exceeds the encoder depth {depth}")
        return _evenly_from_top(depth, n_blocks, depth // n_blocks)

    if mode == "all":
        text = list(range(1, text_layers + 1))
        image = list(range(1, image_layers + 1)) if image_layers is not None else []
    elif mode == "symmetric":
        if image_layers is not None and image_layers != text_layers and text_select is None and image_select is None:
            raise ConfigError(
                f"symmetric LayerDrop needs equal depths; got text={text_layers}, image={image_layers} (use 'group')"
            )
        text = symmetric(text_layers)
        image = symmetric(image_layers) if image_layers is not None else []
    else:  # group: the shallower side keeps every second layer, the deeper side the same number of blocks
        if image_layers is None:
            raise ConfigError("group LayerDrop needs an image encoder depth; use 'symmetric' for text-only")
        text, image = _group(text_layers, image_layers, symmetric)

    if text_select is not None:
        text = _check_explicit(text_select, text_layers, "text_select")
    if image_select is not None:
        if image_layers is None:
            raise ConfigError("image_select given but there is no image encoder")
        image = _check_explicit(image_select, image_layers, "image_select")
    if image_layers is not None and len(text) != len(image):
        raise ConfigError(
            f"text and image selections must pair up block by block; got {len(text)} text {text} "
            f"and {len(image)} image {image}"
        )
    return text, image


def _group(text_layers: int, image_layers: int, symmetric) -> tuple[list[int], list[int]]:
    text_deeper = text_layers >= image_layers
    deep, shallow = (text_layers, image_layers) if text_deeper else (image_layers, text_layers)
    small = symmetric(shallow)
    n = len(small)
    k = (deep - 1) // n  # largest k with L_deep - k * n >= 1 (paper: L_text - k * L_image / 2 >= 1)
    if k < 1:
        raise ConfigError(f"group LayerDrop: depth {deep} is too shallow for {n} blocks; use explicit selections")
    big = _evenly_from_top(deep, n, k)
    return (big, small) if text_deeper else (small, big)


class Gate(nn.Module):
    """A learned mixing weight in [0, 1]: sigmoid of one unconstrained scalar (so no step can leave [0, 1])."""

    def __init__(self, init: float = 0.5):
        super().__init__()
        if not 0.0 < init < 1.0:
            raise ConfigError(f"gate init must lie strictly inside (0, 1); got {init}")
        self.logit = nn.Parameter(torch.logit(torch.tensor(float(init))))

    def forward(self) -> torch.Tensor:  # [] scalar in [0, 1]
        return torch.sigmoid(self.logit)


class AdapterBlock(nn.Module):
    """x + up(act(down(x))). The up-projection starts at zero, so a fresh block is the identity."""

    def __init__(self, dim: int, bottleneck: int, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__()
        acts = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}
        if activation not in acts:
            raise ConfigError(f"adapter activation must be one of {sorted(acts)}; got {activation!r}")
        self.down = nn.Linear(dim, bottleneck)
        self.act = acts[activation]()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.down.reset_parameters()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, d] -> [N, d]
        return x + self.up(self.drop(self.act(self.down(x))))


class IntraSAN(nn.Module):
    """Intra-modal side adapter network over one modality's cached hidden states.

    x_0 = h_0 (embedding layer); block i: x_i = Adapter_i(mu_i * h_{l_i} + (1 - mu_i) * x_{i-1}).
    Input `hidden` is [N, 1 + n_blocks, d]: slot 0 = embedding layer, slot i = the i-th selected layer.
    """

    def __init__(self, dim: int, n_blocks: int, bottleneck: int, dropout: float = 0.0, gate_init: float = 0.5):
        super().__init__()
        self.blocks = nn.ModuleList(AdapterBlock(dim, bottleneck, dropout) for _ in range(n_blocks))
        self.gates = nn.ModuleList(Gate(gate_init) for _ in range(n_blocks))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [N, 1 + n, d] -> [N, d]
        x = hidden[:, 0]  # [N, d] embedding layer
        for i, (block, gate) in enumerate(zip(self.blocks, self.gates)):
            mu = gate()
            x = block(mu * hidden[:, i + 1] + (1.0 - mu) * x)  # [N, d]
        return x

    def gate_values(self) -> list[float]:
        return [float(g().detach()) for g in self.gates]


class StageProjection(nn.Module):
    """Per cached slot: LayerNorm over the slot's true width, then Linear to one common width.

    CNN stages (EfficientNet: stem 32, stages 16 .. 320, head 1280) have unequal widths and scales; the cache
    zero-pads them to the widest. Mixing such zero-padded vectors in one chain lets a few wide slots dominate
    and blows up the branch norm, so each slot is normalised on its real features and mapped to `width` first.
    Input [N, S, W_cache] (slot j real in [:, j, :dims[j]]) -> [N, S, width].
    """

    def __init__(self, dims: Sequence[int], width: int):
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in self.dims)
        self.projs = nn.ModuleList(nn.Linear(d, width) for d in self.dims)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [N, S, W_cache] -> [N, S, width]
        return torch.stack([proj(norm(hidden[:, j, :d]))
                            for j, (d, norm, proj) in enumerate(zip(self.dims, self.norms, self.projs))], dim=1)


class InterSAN(nn.Module):
    """Inter-modal side adapter network over paired text and image hidden states.

    X_i = text hidden state (symmetric, same width) or `transform(text)` (asymmetric: a dimension
    transformation layer, one Linear shared by all blocks, mapping e.g. 1536/4096-d LLM text to the
    768-d image width). x_0 = beta_0 * v_0 + (1 - beta_0) * X_0 over the embedding layers; block i:
    x_i = Adapter_i(beta_i * v_{l_i} + (1 - beta_i) * X_{l_i} + x_{i-1}). Works in the image width.
    """

    def __init__(
        self, text_dim: int, image_dim: int, n_blocks: int, bottleneck: int, dropout: float = 0.0,
        gate_init: float = 0.5,
    ):
        super().__init__()
        self.transform: nn.Module = nn.Identity() if text_dim == image_dim else nn.Linear(text_dim, image_dim)
        self.blocks = nn.ModuleList(AdapterBlock(image_dim, bottleneck, dropout) for _ in range(n_blocks))
        self.gates = nn.ModuleList(Gate(gate_init) for _ in range(n_blocks + 1))  # + the embedding-layer mix

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """text [N, 1 + n, d_t], image [N, 1 + n, d_v] -> [N, d_v]."""
        x_text = self.transform(text)  # [N, 1 + n, d_v]
        beta = self.gates[0]()
        x = beta * image[:, 0] + (1.0 - beta) * x_text[:, 0]  # [N, d_v]
        for i, block in enumerate(self.blocks):
            beta = self.gates[i + 1]()
            x = block(beta * image[:, i + 1] + (1.0 - beta) * x_text[:, i + 1] + x)  # [N, d_v]
        return x

    def gate_values(self) -> list[float]:
        return [float(g().detach()) for g in self.gates]

"""HiddenStateCache: pooled per-layer hidden states [n_items + 1, n_layers, d] of frozen encoders.

Adapter models (IISAN) train small side networks over the hidden states of every (or every k-th)
layer of a frozen text / image encoder. Running the backbone once and caching the pooled states
turns every training epoch into a cheap lookup. Each modality is ONE memmap (never a file per item);
meta.json records the encoder, the selected layer indices (0 = embedding / stem output) and the
true width of each cached layer (narrower CNN stages are zero-padded to the widest).
Built by `modalrec.features.build.encode_hidden_cache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from modalrec.errors import ConfigError
from modalrec.features.store import ArrayStore

LayerSpec = str | int | Sequence[int]


def cached_layers(n_layers: int, spec: LayerSpec) -> list[int]:
    """Which of an encoder's n_layers hidden states a hidden-state cache keeps (index 0 = embedding output).

    "all"       every layer, 0..n_layers-1
    "every:k"   0, k, 2k, ... and always the last layer (the one the frozen encoder's output uses)
    "last:k"    the last k layers
    int k       same as "last:k"
    [i, j, ...] explicit indices; negatives count from the end; duplicates are an error
    """
    if n_layers < 1:
        raise ConfigError(f"encoder exposes no hidden layers (n_layers={n_layers})")
    if isinstance(spec, str):
        kind, _, arg = spec.partition(":")
        if kind == "all" and not arg:
            return list(range(n_layers))
        if kind in ("every", "last") and arg.isdigit() and int(arg) >= 1:
            k = int(arg)
            if kind == "every":
                return sorted(set(range(0, n_layers, k)) | {n_layers - 1})
            if k > n_layers:
                raise ConfigError(f"last:{k} asks for more layers than the encoder has ({n_layers})")
            return list(range(n_layers - k, n_layers))
        if spec.replace(",", "").replace("-", "").replace(" ", "").isdigit():
            return cached_layers(n_layers, [int(x) for x in spec.split(",") if x.strip()])
        raise ConfigError(f"layer selection must be 'all', 'every:K', 'last:K' or a list of indices, got {spec!r}")
    if isinstance(spec, int):
        return cached_layers(n_layers, f"last:{spec}")
    out = []
    for i in spec:
        j = int(i) + n_layers if int(i) < 0 else int(i)
        if not 0 <= j < n_layers:
            raise ConfigError(f"layer index {i} out of range for an encoder with {n_layers} hidden states")
        if j in out:
            raise ConfigError(f"layer {i} selected twice")
        out.append(j)
    if not out:
        raise ConfigError("empty layer selection")
    return out


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def estimate_bytes(n_items: int, n_layers: int, width: int, dtype: str = "float16") -> int:
    """Size of one modality's cache file: (n_items + 1) x n_layers x width x itemsize."""
    return (int(n_items) + 1) * int(n_layers) * int(width) * np.dtype(dtype).itemsize


class HiddenStateCache(ArrayStore):
    """Per-layer pooled hidden states per modality: `.array(m)` is a read-only [n+1, L, W] memmap."""

    FORMAT: ClassVar[str] = "modalrec.hidden_cache"
    KIND: ClassVar[str] = "hidden-state cache"

    def layers(self, modality: str) -> list[int]:
        """Encoder layer index of each cached slot (0 = embedding / stem output)."""
        return list(self._get(modality)["layers"])

    def layer_dims(self, modality: str) -> list[int]:
        """True width of each cached slot; slot j's features are array[:, j, :layer_dims[j]]."""
        return list(self._get(modality)["layer_dims"])

    def n_layers(self, modality: str) -> int:
        return len(self.layers(modality))

    def width(self, modality: str) -> int:
        return int(self._get(modality)["shape"][1])

    def size_bytes(self) -> int:
        return sum(int(np.asarray(self.array(m)).nbytes) for m in self.modalities)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["size"] = human_bytes(self.size_bytes())
        return out

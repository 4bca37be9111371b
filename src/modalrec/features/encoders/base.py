"""What every item-content encoder shares: the batch result, the interface, device / precision helpers.

An encoder maps a batch of inputs (texts or image paths) to float32 vectors. Inputs it cannot use
(empty text, missing or unreadable image) get a zero vector, `missing=True` and a reason; they never
raise, so one bad item cannot stop a catalogue-wide job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass
class EncodedBatch:
    """Result of encoding a batch of B inputs.

    features: [B, d] (or [B, n_layers, d] for hidden states) float32; zero rows where missing.
    missing: [B] bool. problems: position in the batch -> human-readable reason.
    """

    features: np.ndarray
    missing: np.ndarray
    problems: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HiddenLayout:
    """Per-layer output sizes of an encoder. Layer 0 is the embedding / stem output.

    Layers of different width (CNN stages) are zero-padded to `max(dims)` in the cache; the true
    width of each cached layer is recorded so adapters can slice it off.
    """

    dims: tuple[int, ...]  # width of each layer output, index = layer number
    names: tuple[str, ...]

    @property
    def n_layers(self) -> int:
        return len(self.dims)

    @property
    def width(self) -> int:
        return max(self.dims)


# Keys of `Encoder.info()` that decide the vector space: encoders agreeing on these give the same vectors.
ENCODER_IDENTITY = ("class", "name", "revision", "pooling", "dim", "instruction_prefix", "normalize")
# A store adds what it fed the encoder: the text template and (hidden-state caches) the layers it kept.
STORE_IDENTITY = (*ENCODER_IDENTITY, "template", "layers")


def identity_mismatch(have: Mapping[str, Any], want: Mapping[str, Any], keys: Sequence[str] = ENCODER_IDENTITY) -> str:
    """'' when `have` and `want` agree on every identity key, else 'key: have vs want, ...' for a message."""
    return ", ".join(f"{k}: {have.get(k)!r} vs {want.get(k)!r}" for k in keys if have.get(k) != want.get(k))


class Encoder(ABC):
    """Base class. Subclasses set `input_kind` ("text" or "image"), `name`, `dim`, implement `encode`."""

    input_kind: ClassVar[str] = "text"
    name: str = "encoder"
    dim: int = 0
    pooling: str = "none"
    revision: str = ""

    @abstractmethod
    def encode(self, inputs: Sequence[Any]) -> EncodedBatch:
        """Encode one batch. Never raises for a bad single input: it is reported as missing."""

    def sort_key(self, item: Any) -> int:
        """Length proxy used to group similar inputs into one batch (less padding). Default: no sorting."""
        return 0

    def info(self) -> dict[str, Any]:
        """Everything that determines the vectors (stored in meta.json; resume needs it to match)."""
        return {
            "class": type(self).__name__,
            "name": self.name,
            "revision": self.revision,
            "pooling": self.pooling,
            "dim": int(self.dim),
            "input": self.input_kind,
            **self.extra_info(),
        }

    def extra_info(self) -> dict[str, Any]:
        return {}

    # ---- per-layer hidden states (adapter models); optional ---------------------------------
    supports_hidden: ClassVar[bool] = False

    def hidden_layout(self) -> HiddenLayout:
        raise NotImplementedError(f"{type(self).__name__} does not expose per-layer hidden states")

    def encode_hidden(self, inputs: Sequence[Any], layers: Sequence[int]) -> EncodedBatch:
        """[B, len(layers), hidden_layout().width] pooled hidden states of the selected layers."""
        raise NotImplementedError(f"{type(self).__name__} does not expose per-layer hidden states")


def resolve_dtype(precision: str, device: str) -> Any:
    """Weights / activation dtype for 'fp32' | 'fp16' | 'bf16'. fp16 on CPU falls back to fp32 (slow, lossy)."""
    import torch

    if precision not in PRECISIONS:
        from modalrec.errors import ConfigError

        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and not str(device).startswith("cuda"):
        import logging

        logging.getLogger(__name__).warning("fp16 requested on %s; using fp32 (fp16 is a GPU option)", device)
        return torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def pad_layers(arrays: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Stack per-layer [B, d_l] arrays into [B, L, width], zero-padding narrower layers."""
    batch = arrays[0].shape[0]
    out = np.zeros((batch, len(arrays), width), dtype=np.float32)  # [B, L, W]
    for j, arr in enumerate(arrays):
        out[:, j, : arr.shape[1]] = arr
    return out


def with_missing(
    n: int, ok: Sequence[int], encoded: np.ndarray | None, tail: tuple[int, ...], problems: dict[int, str]
) -> EncodedBatch:
    """Scatter encodings of the usable positions `ok` into a zero batch of size n; the rest are missing."""
    out = np.zeros((n, *tail), dtype=np.float32)
    missing = np.ones(n, dtype=bool)
    if len(ok):
        assert encoded is not None
        out[np.asarray(ok)] = encoded.astype(np.float32, copy=False)
        missing[np.asarray(ok)] = False
    return EncodedBatch(out, missing, problems)


class TextEncoder(Encoder):
    """Text encoders: empty text is reported missing; subclasses implement `_encode_texts`."""

    input_kind: ClassVar[str] = "text"

    def sort_key(self, item: Any) -> int:
        return len(item or "")

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> np.ndarray:  # [k, d]
        ...

    def _hidden_texts(self, texts: list[str], layers: Sequence[int]) -> np.ndarray:  # [k, L, W]
        raise NotImplementedError

    def _split(self, inputs: Sequence[Any]) -> tuple[list[int], dict[int, str]]:
        ok = [i for i, t in enumerate(inputs) if t is not None and str(t).strip()]
        usable = set(ok)
        problems = {i: "empty text" for i in range(len(inputs)) if i not in usable}
        return ok, problems

    def encode(self, inputs: Sequence[Any]) -> EncodedBatch:
        ok, problems = self._split(inputs)
        enc = self._encode_texts([str(inputs[i]) for i in ok]) if ok else None
        return with_missing(len(inputs), ok, enc, (self.dim,), problems)

    def encode_hidden(self, inputs: Sequence[Any], layers: Sequence[int]) -> EncodedBatch:
        ok, problems = self._split(inputs)
        enc = self._hidden_texts([str(inputs[i]) for i in ok], layers) if ok else None
        return with_missing(len(inputs), ok, enc, (len(layers), self.hidden_layout().width), problems)

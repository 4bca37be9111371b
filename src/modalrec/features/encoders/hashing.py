"""Dependency-light text fallback: signed feature hashing of character and word n-grams (numpy + zlib)."""

from __future__ import annotations

import re
import unicodedata
import zlib
from typing import Any

import numpy as np

from modalrec.errors import ConfigError
from modalrec.features.encoders.base import TextEncoder

_WORD = re.compile(r"\w+", re.UNICODE)


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


class HashingText(TextEncoder):
    """Bag of hashed n-grams -> `dim` floats, log(1 + tf) weighted, L2-normalised.

    `ngrams=(lo, hi)`: character n-gram lengths, taken inside each word padded with spaces (so
    "cat" yields " c", "ca", "at", "t " ...); `word_ngrams=(lo, hi)`: word n-grams. Every n-gram is
    hashed with crc32 (stable across processes, unlike Python's salted `hash`); the low bits pick
    the column and bit 31 the sign, so collisions cancel in expectation.
    """

    def __init__(
        self,
        dim: int = 256,
        ngrams: tuple[int, int] = (1, 3),
        word_ngrams: tuple[int, int] | None = (1, 2),
        seed: int = 0,
        normalize: bool = True,
    ):
        if dim < 1:
            raise ConfigError(f"hashing dim must be >= 1, got {dim}")
        for rng in (ngrams, word_ngrams):
            if rng is not None and not (1 <= rng[0] <= rng[1]):
                raise ConfigError(f"n-gram range must satisfy 1 <= lo <= hi, got {rng}")
        self.dim = int(dim)
        self.ngrams = (int(ngrams[0]), int(ngrams[1]))
        self.word_ngrams = None if word_ngrams is None else (int(word_ngrams[0]), int(word_ngrams[1]))
        self.seed = int(seed) & 0xFFFFFFFF
        self.normalize = normalize
        self.name = f"hashing-{self.dim}"
        self.revision = "1"
        self.pooling = "sum"

    def extra_info(self) -> dict[str, Any]:
        return {"ngrams": list(self.ngrams), "word_ngrams": self.word_ngrams and list(self.word_ngrams),
                "seed": self.seed, "normalize": self.normalize}

    def grams(self, text: str) -> list[str]:
        """All n-grams of one text (exposed for tests and debugging)."""
        words = _WORD.findall(_normalise(text))
        out: list[str] = []
        lo, hi = self.ngrams
        for w in words:
            padded = f" {w} "
            for n in range(lo, hi + 1):
                out.extend("c:" + padded[i : i + n] for i in range(len(padded) - n + 1))
        if self.word_ngrams is not None:
            wlo, whi = self.word_ngrams
            for n in range(wlo, whi + 1):
                out.extend("w:" + " ".join(words[i : i + n]) for i in range(len(words) - n + 1))
        return out

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float64)
        counts: dict[str, int] = {}
        for g in self.grams(text):
            counts[g] = counts.get(g, 0) + 1
        for g, c in counts.items():
            h = zlib.crc32(g.encode(), self.seed)
            sign = 1.0 if (h >> 31) & 1 else -1.0
            vec[(h & 0x7FFFFFFF) % self.dim] += sign * np.log1p(c)
        if self.normalize:
            norm = np.linalg.norm(vec)
            if norm > 0:
                vec /= norm
        return vec

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._vector(t) for t in texts]).astype(np.float32)  # [k, dim]

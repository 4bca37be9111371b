"""The experiment pipeline: data -> split -> features -> model -> fit on TRAIN/VALID -> one TEST evaluation.

Each step is a plain function so that the CLI, benchmarks and notebooks compose the same pieces.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modalrec.config import to_dict
from modalrec.costs import dir_size_bytes, peak_memory, trainable_parameters
from modalrec.data.dataset import Dataset
from modalrec.data.item_age import ItemActivity, ItemLaunch
from modalrec.data.splits import Split, cold_items, from_presplit, global_temporal, leave_one_out
from modalrec.devices import resolve_device
from modalrec.errors import ConfigError
from modalrec.evaluation.metrics import definitions
from modalrec.experiment import (
    DataConfig,
    ExperimentConfig,
    FeaturesConfig,
    SplitConfig,
    seeded,
    with_model_defaults,
)
from modalrec.io import write_json_atomic
from modalrec.models.base import ModelContext, Training
from modalrec.validation import check_experiment

log = logging.getLogger(__name__)
UNTRAINED_DIR = "untrained"  # a run's untrained weights, kept when `select.blend_untrained` blends with them

def load_data(cfg: DataConfig) -> Dataset:
    """Load a source and apply the configured filters (each is recorded in `Dataset.summary`).
    A synthetic source's seed comes from the experiment (`experiment.seeded`)."""
    from modalrec.data import filters
    from modalrec.data.sources import load_dataset

    options = dict(cfg.options)
    if cfg.min_rating is not None:  # ratings are applied by the loader, before vocabularies are built
        options["min_rating"] = cfg.min_rating
    try:
        ds = load_dataset(cfg.source, **options)
    except TypeError as exc:  # an option the loader does not take
        raise ConfigError(f"data.options for source {cfg.source!r}: {exc}") from exc
    return filters.apply_filters(ds, dedupe_events=cfg.dedupe, user_k=cfg.user_core, item_k=cfg.item_core,
                                 max_len=cfg.max_seq_len)


def make_split(ds: Dataset, cfg: SplitConfig, seed: int = 0) -> Split:
    if cfg.kind == "leave_one_out":
        split = leave_one_out(ds.interactions)
    elif cfg.kind == "global_temporal":
        split = global_temporal(ds.interactions, tuple(cfg.ratios))  # type: ignore[arg-type]
    elif cfg.kind == "presplit":
        if ds.presplit is None:
            raise ConfigError(f"split.kind=presplit but dataset {ds.name!r} ships no split")
        split = from_presplit(ds.interactions, ds.presplit["valid_rows"], ds.presplit["test_rows"], name="presplit")
    else:  # pragma: no cover - guarded by the Literal type
        raise ConfigError(f"unknown split kind {cfg.kind!r}")
    if cfg.cold_item_fraction > 0:
        split = cold_items(split, cfg.cold_item_fraction, seed)
    return split


def load_features(ds: Dataset, cfg: FeaturesConfig, shard: tuple[int, int] | None = None,
                  barrier: Any = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Feature tensors for the dataset's items: from an existing store, or encoded once and cached.

    shard / barrier (under a process group): each rank encodes its chunks, rank 0 finalises, and every
    rank opens the finished store after a second barrier.
    """
    from modalrec.features.store import FeatureStore

    if cfg.store:
        return FeatureStore.open(cfg.store, ds.item_vocab).tensors()
    if not cfg.encoders():
        return {}, {}
    from modalrec.features.build import encode_catalogue

    out_dir = feature_cache_dir(ds, cfg)
    store = encode_catalogue(
        ds.items, out_dir, cfg.encoders(), template=cfg.template,
        batch_size=cfg.batch_size, device=cfg.device, resume=True, shard=shard, barrier=barrier,
    )
    if shard is not None and barrier is not None:  # distributed: wait for rank 0's finalisation
        barrier()
        return FeatureStore.open(out_dir, ds.item_vocab).tensors()
    return store.tensors()


def feature_cache_dir(ds: Dataset, cfg: FeaturesConfig) -> Path:
    """Where `load_features` caches a catalogue's features: one directory per dataset, item vocabulary,
    encoders and text template, so any change to what is encoded gets its own directory."""
    parts = [ds.name, ds.item_vocab.hash, cfg.text or "none", cfg.image or "none"]
    if cfg.lexical:  # only then, so that the directories of runs without it keep their names
        parts.append("lex_" + cfg.lexical)
    if (cfg.text or cfg.lexical) and cfg.template is not None:
        parts.append("t" + hashlib.sha256(cfg.template.encode()).hexdigest()[:12])
    return Path(cfg.cache_dir) / "-".join(parts).replace("/", "_").replace(":", "_")


def features_for(cfg: FeaturesConfig, modalities: frozenset[str]) -> FeaturesConfig:
    """The encoders a model actually reads: a modality it does not read is not encoded (none for pop, ID
    towers, hidden-state models). A prebuilt store is opened as it is."""
    if cfg.store:
        return cfg
    return _replace(cfg, text=cfg.text if "text" in modalities else None,
                    image=cfg.image if "image" in modalities else None,
                    lexical=cfg.lexical if "lexical" in modalities else None)


def item_launch(ds: Dataset, split: Split) -> ItemLaunch:
    """Item launch times for models of this split (metadata, else first appearance; causal at query time)."""
    return ItemLaunch.for_split(split, ds.items, ds.summary.get("time", "unix_seconds"))


def model_context(ds: Dataset, split: Split, features: tuple[dict, dict], seed: int,
                  hidden_states: Any = None) -> ModelContext:
    unix_clock = ds.summary.get("time", "unix_seconds") == "unix_seconds"
    return ModelContext.for_split(split, item_features=features[0], feature_missing=features[1], seed=seed,
                                  hidden_states=hidden_states, item_table=ds.items, item_launch=item_launch(ds, split),
                                  item_activity=ItemActivity.for_split(split) if unix_clock else None,
                                  train_targets=split.train.targets())


def load_hidden_states(ds: Dataset, cfg: FeaturesConfig) -> Any:
    """The per-layer hidden-state cache named by `features.hidden` (vocabulary-checked), or None."""
    if not cfg.hidden:
        return None
    from modalrec.features.hidden_cache import HiddenStateCache

    return HiddenStateCache.open(cfg.hidden, ds.item_vocab)


def build_model(name: str, params: dict[str, Any], ctx: ModelContext) -> Any:
    from modalrec.config import from_dict
    from modalrec.models import MODELS

    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    model_cls, config_cls = MODELS[name]
    model_cfg = from_dict(config_cls, params, where="model.params")
    return model_cls.build(model_cfg, ctx), model_cfg


@dataclass
class RunResult:
    test: Any  # Report
    valid: Any  # Report of the selected checkpoint
    history: Any
    manifest: dict[str, Any]
    model: Any  # what VALID and TEST ranked with: the trained model after any `select` setting
    run_dir: Path | None
    split: Split | None = None  # the split trained and evaluated on (for further evaluations of the same model)


def training_data(model: Any, split: Split, max_len: int, train_cfg: Any) -> Any:
    """What `fit` trains a gradient-trained model on: its (user, item) pairs for PAIRS models, else windows of
    the training sequences (`train_cfg`: a TrainConfig, for the window stride and first-event targets)."""
    from modalrec.data.sequences import TrainWindows

    if model.training_kind is Training.PAIRS:
        return model.training_source(split)
    return TrainWindows(split.train, max_len, stride=train_cfg.window_stride, first_events=train_cfg.first_event_targets)


def run_experiment(cfg: ExperimentConfig, write: bool = True, distributed: Any = None) -> RunResult:
    """Train on TRAIN, select on VALID, evaluate TEST once; write config, manifest, report and weights.

    distributed: a `training.distributed.DistributedTraining` (DDP under torchrun): features are
    encoded sharded, training is data-parallel, evaluations are sharded, and only rank 0 writes.
    """
    from modalrec.data.sequences import TrainWindows
    from modalrec.evaluation.evaluator import Evaluator
    from modalrec.training.checkpoint import save_checkpoint
    from modalrec.training.loop import fit

    started = time.perf_counter()
    cfg, defaults = with_model_defaults(cfg)  # the model's training recipe where the user set nothing
    checked = check_experiment(cfg)  # the whole config, before any data is read or encoded
    cfg = seeded(cfg)
    ds = load_data(cfg.data)
    split = make_split(ds, cfg.split, cfg.seed)
    features_cfg = features_for(cfg.features, checked.modalities)
    # --- distributed hook (training/distributed.py, evaluation/distributed.py) ---
    if distributed is not None and distributed.world_size > 1:
        from modalrec.parallel import barrier

        features = load_features(ds, features_cfg, (distributed.rank, distributed.world_size), barrier)
    else:
        features = load_features(ds, features_cfg)
    ctx = model_context(ds, split, features, cfg.seed, load_hidden_states(ds, cfg.features))
    model, model_cfg = build_model(cfg.model.name, cfg.model.params, ctx)
    max_len = model.history_length  # the contract: what the model reads is what evaluation cuts to
    out_dir = Path(cfg.output_dir) / cfg.name if write else None  # train_state is read by every rank
    run_dir = out_dir if distributed is None or distributed.is_main else None  # written by rank 0 only

    def run_eval(ev: Evaluator, m: Any, name: str) -> Any:
        return ev.run(m, name=name) if distributed is None else distributed.evaluate(ev, m, name)

    def evaluator(part: str) -> Evaluator:
        return evaluator_for(cfg, split, part, max_len)

    history, untrained, selection = None, None, None
    scorer = model  # what VALID and TEST rank with: the trained model, or it after the `select` settings
    train_cfg = cfg.train
    if out_dir is not None and train_cfg.checkpoint_dir is None:
        train_cfg = _replace(train_cfg, checkpoint_dir=str(out_dir / "train_state"))
    if model.training_kind is Training.EVENTS:  # stateful: the event stream in time order, streaming evaluation
        from modalrec.evaluation.streaming import run_protocol
        from modalrec.training.events import fit_tgn

        if distributed is not None and distributed.world_size > 1:
            raise ConfigError(f"model {cfg.model.name!r} learns from the time-ordered event stream in one process")
        streams, stream_cfg = _event_streams(split, cfg)
        history = fit_tgn(model, streams[0], streams[1], train_cfg, stream_cfg)
        reports = run_protocol(model, *streams, stream_cfg, seed=cfg.seed)
        valid_report, test_report = reports["valid"], reports["test"]
    else:
        valid_eval = evaluator("valid")
        if model.training_kind is Training.COUNTS:
            model.fit_counts(split)
        else:
            source = training_data(model, split, max_len, train_cfg)
            if isinstance(source, TrainWindows) and train_cfg.batch_unit == "targets":
                defaults["windows_per_step"] = source.windows_per_step(train_cfg.batch_size)
            untrained = copy.deepcopy(model) if cfg.select.blend_untrained else None  # the state fit starts from
            history = fit(model, source, train_cfg, validate=lambda m: run_eval(valid_eval, m, "valid"),
                          distributed=distributed)
        if cfg.select.new_item_offset or cfg.select.blend_untrained or cfg.select.new_item_gate \
                or cfg.select.repeat_bonus:  # chosen on VALID
            from modalrec.training.selection import select_on_valid

            def fitted_rule(name: str) -> Any:  # a rule baseline of select.offset_reach, with its default params
                rule, _ = build_model(name, {}, ctx)
                rule.fit_counts(split)
                return rule

            # each sweep's first candidate (offset 0 / weight 0) is the trained model's VALID pass
            def gate_events() -> tuple[torch.Tensor, torch.Tensor, Any]:  # select.new_item_gate's fit
                from modalrec.models.new_item_gate import valid_events

                return valid_events(split, model.history_length)

            scorer, selection, valid_report = select_on_valid(model, untrained, cfg.select,
                                                              lambda m: run_eval(valid_eval, m, "valid"), fitted_rule,
                                                              gate_events)
        else:
            valid_report = run_eval(valid_eval, model, "valid")
        test_report = run_eval(evaluator("test"), scorer, "test")
    wall = time.perf_counter() - started
    manifest = {
        "name": cfg.name,
        "dataset": ds.describe(),
        "split": split.describe(),
        "item_launch": ctx.item_launch.describe() if ctx.item_launch is not None else None,
        "seed": cfg.seed,
        "config": to_dict(cfg),  # effective: the model's recipe filled in
        "training_defaults": defaults,  # where each recipe value came from (user, model recipe, library)
        "model": {"name": cfg.model.name, "config": to_dict(model_cfg),
                  "trainable_parameters": trainable_parameters(model)},
        "metric_definitions": definitions(),
        "protocol": {"ranking": "full", "ties": "pessimistic", "exclude_seen": cfg.eval.exclude_seen,
                     "selection": "best VALID epoch; TEST evaluated once"},
        "wall_time_s": wall,
        "peak_memory_mb": peak_memory(cfg.train.device)[0] / 2**20,
        "efficiency": _efficiency(model, history, cfg),
        "history": history.to_dict() if history is not None else None,
        "selection": selection,  # settings chosen on VALID after training (training/selection.py), or None
        "platform": {"python": platform.python_version(), "torch": torch.__version__},
    }
    if distributed is not None:
        manifest["distributed"] = {"world_size": distributed.world_size, "accumulate": distributed.accumulate,
                                   "global_batch": cfg.train.batch_size * distributed.accumulate}
    test_report.meta.update({k: manifest[k] for k in ("dataset", "split", "seed", "wall_time_s", "peak_memory_mb")})
    test_report.meta["model"] = manifest["model"]
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "manifest.json", manifest)
        test_report.to_json(run_dir / "report.json")
        valid_report.to_json(run_dir / "valid_report.json")  # the selection evidence, next to TEST
        (run_dir / "report.md").write_text(test_report.to_markdown() + "\n")
        if isinstance(model, torch.nn.Module):
            extra = {"item_vocab_hash": ds.item_vocab.hash, "dataset_hash": ds.content_hash(),
                     "experiment": to_dict(cfg)}
            meta = {"model": cfg.model.name, "config": to_dict(model_cfg)}
            save_checkpoint(run_dir / "model", model, meta, extra)
            if untrained is not None:  # the blend's other half, so `evaluate` rebuilds the blended scores
                save_checkpoint(run_dir / UNTRAINED_DIR, untrained, meta, extra)
    return RunResult(test_report, valid_report, history, manifest, scorer, run_dir, split)


def evaluator_for(cfg: ExperimentConfig, split: Split, part: str, max_len: int, device: Any = None) -> Any:
    """The full-ranking Evaluator of `split`'s VALID or TEST events under the experiment's `eval` settings."""
    from modalrec.evaluation.evaluator import Evaluator

    es = split.valid if part == "valid" else split.test
    return Evaluator(es, split.n_items, ks=tuple(cfg.eval.ks), exclude_seen=cfg.eval.exclude_seen,
                     repeat_targets=cfg.eval.repeat_targets, max_len=max_len,
                     device=cfg.eval.device if device is None else device)


def _event_streams(split: Split, cfg: ExperimentConfig) -> tuple[list[Any], Any]:
    """([train, valid, test] EventStreams, StreamEvalConfig) for a stateful model's run."""
    from modalrec.data.events import EventStream
    from modalrec.evaluation.streaming import StreamEvalConfig

    streams = [EventStream.from_interactions(split.train)] + [
        EventStream.from_evalset(es, split.n_items) for es in (split.valid, split.test)]
    return streams, StreamEvalConfig(ks=tuple(cfg.eval.ks), exclude_seen=cfg.eval.exclude_seen)


def _efficiency(model: Any, history: Any, cfg: ExperimentConfig) -> dict[str, Any]:
    """Cost of the run: trainable parameters, seconds per epoch, peak memory, size of the caches it read."""
    epoch_s = history.epoch_seconds if history is not None else []
    caches = [p for p in (cfg.features.store, cfg.features.hidden) if p]
    return {
        "trainable_parameters": trainable_parameters(model),
        "seconds_per_epoch": sum(epoch_s) / len(epoch_s) if epoch_s else None,
        "seconds_to_best": history.seconds_to_best if history is not None else None,
        "peak_memory_mb": peak_memory(cfg.train.device)[0] / 2**20,
        "cache_mb": {p: round(dir_size_bytes([p]) / 2**20, 2) for p in caches},
    }


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def evaluate_run(run_dir: str | Path, part: str = "valid", device: str = "cpu",
                 repeat_targets: str | None = None) -> Any:
    """Rebuild a trained run from its directory (data, split, features, weights) and evaluate one part.

    repeat_targets: the candidate rule for targets already in the history ("rankable" / "miss"), e.g. to restate
    a run under the papers' rule; default the run's own (`eval.repeat_targets`). The run's epochs and `select`
    settings stay those chosen under its own rule."""
    import json

    from modalrec.config import from_dict
    from modalrec.errors import MismatchError
    from modalrec.training.checkpoint import load_state

    run_dir, device = Path(run_dir), resolve_device(device)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    cfg = seeded(from_dict(ExperimentConfig, manifest["config"]))
    if repeat_targets is not None:
        cfg = _replace(cfg, eval=_replace(cfg.eval, repeat_targets=repeat_targets))
    checked = check_experiment(cfg)  # the override too, before any data is read
    ds = load_data(cfg.data)
    if ds.content_hash() != manifest["dataset"]["hash"]:
        raise MismatchError(
            f"dataset hash {ds.content_hash()} differs from the one the run was trained on "
            f"({manifest['dataset']['hash']}); the data files changed"
        )
    split = make_split(ds, cfg.split, cfg.seed)
    features_cfg = features_for(cfg.features, checked.modalities)
    model, _ = build_model(cfg.model.name, cfg.model.params,
                           model_context(ds, split, load_features(ds, features_cfg), cfg.seed,
                                         load_hidden_states(ds, cfg.features)))
    if isinstance(model, torch.nn.Module) and (run_dir / "model").is_dir():
        load_state(run_dir / "model", model)
    elif model.training_kind is Training.COUNTS:
        model.fit_counts(split)
    if model.training_kind is Training.EVENTS:  # memory is rebuilt by replaying the streams in time order
        from modalrec.evaluation.streaming import run_protocol

        streams, stream_cfg = _event_streams(split, cfg)
        return run_protocol(model.to(device), *streams, stream_cfg, seed=cfg.seed)[part]
    if manifest.get("selection"):  # the settings chosen on VALID after training
        from modalrec.training.selection import apply_selection

        untrained = None
        if (run_dir / UNTRAINED_DIR).is_dir():
            untrained = copy.deepcopy(model)
            load_state(run_dir / UNTRAINED_DIR, untrained)
        model = apply_selection(model, untrained, manifest["selection"], split.train.item_counts())
    return evaluator_for(cfg, split, part, model.history_length, device).run(model, name=part)

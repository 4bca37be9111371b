"""Check a whole ExperimentConfig before any data is read or anything is encoded.

Everything that can be decided from the config alone is decided here, so a typo costs seconds, not a
text encoding: model name and parameters, item tower kinds and fusions, the monitored metric, the
data source's options (names and input paths), feature caches, and which content modalities the
model reads (models that read none skip encoding).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalrec.config import from_dict
from modalrec.errors import ConfigError
from modalrec.experiment import ExperimentConfig


@dataclass(frozen=True)
class CheckedConfig:
    """What validation established: the model's class and built config, and the modalities it reads."""

    model_cls: type
    model_cfg: Any
    modalities: frozenset[str]


def check_experiment(cfg: ExperimentConfig) -> CheckedConfig:
    """Raise ConfigError naming the first bad key (and the valid choices); return what was checked."""
    model_cls, model_cfg = check_model(cfg.model.name, cfg.model.params)
    check_data(cfg.data.source, cfg.data.options)
    _check_split(cfg)
    for key in ("store", "hidden"):
        value = getattr(cfg.features, key)
        if value and not Path(value).exists():
            raise ConfigError(f"features.{key}: {value} does not exist")
    _check_monitor(cfg, model_cls)
    from modalrec.models.base import CausalTowerRecommender

    if cfg.train.first_event_targets and not issubclass(model_cls, CausalTowerRecommender):
        raise ConfigError(f"train.first_event_targets: model {cfg.model.name!r} does not score the next item from "
                          "each position's state (SASRec, GRU4Rec and the models built on them do)")
    if cfg.split.kind == "global_temporal" and len(cfg.split.ratios) != 3:
        raise ConfigError(f"split.ratios needs three numbers (train, valid, test), got {cfg.split.ratios}")
    for key, device in (("train", cfg.train.device), ("eval", cfg.eval.device), ("features", cfg.features.device)):
        _check_device(f"{key}.device", device)
    if not cfg.eval.ks or any(k < 1 for k in cfg.eval.ks):
        raise ConfigError(f"eval.ks must be positive cut-offs, got {cfg.eval.ks}")
    _check_select(cfg, model_cls, model_cfg)
    _check_repeat_targets(cfg, model_cls)
    modalities = frozenset(model_cls.content_modalities(model_cfg))
    _check_features(cfg, modalities)
    return CheckedConfig(model_cls, model_cfg, modalities)


def _check_features(cfg: ExperimentConfig, modalities: frozenset[str]) -> None:
    """A model that reads content needs an encoder (or a store) for it: for ANY_CONTENT at least one."""
    from modalrec.models.base import ANY_CONTENT

    if not modalities or cfg.features.store:
        return
    given = set(cfg.features.encoders())
    missing = sorted(modalities - given) if modalities != ANY_CONTENT else ([] if given & ANY_CONTENT
                                                                           else ["text or image"])
    if missing:
        raise ConfigError(f"model {cfg.model.name!r} reads {' + '.join(sorted(modalities))} features, but "
                          f"features.{missing[0].split()[0]} is not set (e.g. features.text=minilm, "
                          "features.image=efficientnet-lite0, features.lexical=hashing:2048, or features.store=DIR)")


def check_model(name: str, params: dict[str, Any]) -> tuple[type, Any]:
    """(model class, config dataclass) for `model.name` / `model.params`; every tower inside is checked."""
    from modalrec.models import MODELS

    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; available: {sorted(MODELS)}")
    model_cls, config_cls = MODELS[name]
    model_cfg = from_dict(config_cls, params, where="model.params")
    for where, tower in _towers(model_cfg, "model.params"):
        _check_tower(tower, where)
    return model_cls, model_cfg


def check_data(source: str, options: dict[str, Any]) -> None:
    """The loader's option names (all required ones given) and that every input path it names exists."""
    from modalrec.data.sources import LOADERS

    if source not in LOADERS:
        raise ConfigError(f"data.source: unknown source {source!r}; available: {sorted(LOADERS)}")
    sig = inspect.signature(LOADERS[source])
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # a generator that takes its own keyword arguments (synthetic)
    valid = [n for n in params if n != "min_rating"]  # min_rating is data.min_rating
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"data.options: unknown option(s) {unknown} for source {source!r}; valid: {valid}")
    missing = [n for n, p in params.items() if p.default is p.empty and n not in options]
    if missing:
        raise ConfigError(f"data.options: source {source!r} needs {missing}")
    for key, value in options.items():
        if value is not None and "Path" in str(params[key].annotation) and not Path(value).exists():
            raise ConfigError(f"data.options.{key}: {value} does not exist")


def _check_split(cfg: ExperimentConfig) -> None:
    """A table read from train / valid / test files is evaluated on that split, and only such a table is."""
    if cfg.data.source != "table":
        return
    from modalrec.data.sources.tabular import check_options, ships_split

    check_options(**cfg.data.options)
    if ships_split(cfg.data.options) and cfg.split.kind != "presplit":
        raise ConfigError(f"data.options give train_path / valid_path / test_path, so split.kind must be 'presplit' "
                          f"(got {cfg.split.kind!r})")
    if cfg.split.kind == "presplit" and not ships_split(cfg.data.options):
        raise ConfigError("split.kind 'presplit' needs data.options train_path / valid_path / test_path")


def _towers(obj: Any, where: str) -> list[tuple[str, Any]]:
    """(dotted key, TowerConfig) of every tower nested in a model config."""
    from modalrec.models.towers.item_towers import TowerConfig

    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, TowerConfig):
            out.append((f"{where}.{f.name}", value))
        elif dataclasses.is_dataclass(value):
            out += _towers(value, f"{where}.{f.name}")
    return out


def _check_tower(tower: Any, where: str) -> None:
    from modalrec.models.towers.fusion import FUSIONS
    from modalrec.models.towers.item_towers import TOWERS

    if tower.kind not in TOWERS:
        raise ConfigError(f"{where}.kind: unknown item tower {tower.kind!r}; available: {sorted(TOWERS)}")
    if tower.fusion not in FUSIONS:
        raise ConfigError(f"{where}.fusion: unknown fusion {tower.fusion!r}; available: {sorted(FUSIONS)}")


def _check_device(key: str, device: str) -> None:
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}={device!r}, but torch sees no CUDA device here; use cpu")


def _check_monitor(cfg: ExperimentConfig, model_cls: type) -> None:
    from modalrec.evaluation.metrics import metric_names
    from modalrec.models.base import Training

    if getattr(model_cls, "training_kind", None) in (Training.EVENTS, Training.COUNTS):
        return  # streaming evaluation has its own metrics; count models are not trained
    from modalrec.data.splits import GROUPS

    names = metric_names(cfg.eval.ks)
    group, _, name = cfg.train.monitor.rpartition("/")
    if name not in names:
        raise ConfigError(f"train.monitor: {cfg.train.monitor!r} is not computed with eval.ks={cfg.eval.ks}; "
                          f"available: {names} (or GROUP/metric)")
    if group and group not in ("overall", *GROUPS):
        raise ConfigError(f"train.monitor: unknown group {group!r} in {cfg.train.monitor!r}; groups: {list(GROUPS)}")


def _check_gate(cfg: ExperimentConfig, model_cls: type, model_cfg: Any) -> None:
    """The new-item gate lifts items without training events per user: it needs a model that ranks from a history
    (not the event stream's memory) and scores such items from content, else it would lift them all alike."""
    from modalrec.models.base import Training

    if getattr(model_cls, "training_kind", None) is Training.EVENTS:
        raise ConfigError(f"select.new_item_gate: model {cfg.model.name!r} scores from memory built by the event "
                          "stream; the gate applies to models that rank from a history")
    if not model_cls.content_modalities(model_cfg):
        raise ConfigError(f"select.new_item_gate: model {cfg.model.name!r} reads no item content, so it cannot tell "
                          "items without training events apart; the gate needs a content or hybrid model")


def _check_select(cfg: ExperimentConfig, model_cls: type, model_cfg: Any) -> None:
    """`select` settings need a model trained by `fit` and scored from its weights; the new-item offset needs a
    model with `new_item_offset` whose tower scores items without training events from content."""
    from modalrec.models.base import Training

    sel = cfg.select
    if sel.offset_reach:
        _check_reach(sel)
    if sel.new_item_gate:
        _check_gate(cfg, model_cls, model_cfg)
    if sel.gate_tolerance is not None and not sel.new_item_gate:
        raise ConfigError("select.gate_tolerance sets how the new-item gate is chosen; it needs select.new_item_gate")
    if sel.gate_tolerance is not None and not 0.0 <= sel.gate_tolerance < 1.0:
        raise ConfigError(f"select.gate_tolerance must lie in [0, 1), got {sel.gate_tolerance}")
    if not (sel.new_item_offset or sel.blend_untrained or sel.repeat_bonus):
        return
    if getattr(model_cls, "training_kind", None) in (Training.EVENTS, Training.COUNTS):
        raise ConfigError(f"select: model {cfg.model.name!r} is not trained by gradient steps on TRAIN and scored "
                          "from its weights; select.new_item_offset / blend_untrained / repeat_bonus do not apply")
    if not 0.0 <= sel.offset_tolerance < 1.0:
        raise ConfigError(f"select.offset_tolerance must lie in [0, 1), got {sel.offset_tolerance}")
    tower = getattr(model_cfg, "tower", None)
    if sel.new_item_offset and not (hasattr(model_cfg, "new_item_offset") and model_cls.content_modalities(model_cfg)):
        raise ConfigError(f"select.new_item_offset: model {cfg.model.name!r} with tower "
                          f"{getattr(tower, 'kind', None)!r} cannot score items without training events from "
                          "content; it needs sasrec with a content or hybrid model.params.tower.kind")
    if sel.new_item_offset and model_cfg.new_item_offset:
        raise ConfigError("select.new_item_offset chooses the offset on VALID; drop model.params.new_item_offset "
                          f"(= {model_cfg.new_item_offset})")


def _check_reach(sel: Any) -> None:
    from modalrec.models import MODELS
    from modalrec.models.base import Training

    if not sel.new_item_offset:
        raise ConfigError("select.offset_reach sets the rule of select.new_item_offset; set that too")
    rules = sorted(n for n, (cls, _) in MODELS.items() if getattr(cls, "training_kind", None) is Training.COUNTS)
    for name in sel.offset_reach:
        if name not in rules:
            raise ConfigError(f"select.offset_reach: {name!r} is not a rule baseline (fitted from counts, no "
                              f"training); rule baselines: {rules}")


def _check_repeat_targets(cfg: ExperimentConfig, model_cls: type) -> None:
    from modalrec.models.base import Training

    if cfg.eval.repeat_targets != "miss":
        return
    if not cfg.eval.exclude_seen:
        raise ConfigError("eval.repeat_targets='miss' masks a repeat target with the rest of the history; it needs "
                          "eval.exclude_seen=true")
    if getattr(model_cls, "training_kind", None) is Training.EVENTS:
        raise ConfigError(f"eval.repeat_targets='miss': model {cfg.model.name!r} is evaluated by the streaming "
                          "protocol, which keeps repeat targets rankable")

"""Experiment configuration: the one config tree that the CLI, the Python API and benchmarks share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from modalrec.errors import ConfigError
from modalrec.protocol import RepeatTargets
from modalrec.training.loop import TrainConfig


@dataclass
class DataConfig:
    """Which source to load and how to filter it. `options` are the loader's keyword arguments."""

    source: str = "synthetic"
    options: dict[str, Any] = field(default_factory=dict)
    min_rating: float | None = None
    dedupe: bool = True  # collapse exact duplicate (user, item, timestamp) events; counted in the summary
    user_core: int = 0  # k-core: keep users with >= user_core events (iterated with item_core)
    item_core: int = 0
    max_seq_len: int | None = None  # keep each user's last N events


@dataclass
class SplitConfig:
    kind: Literal["leave_one_out", "global_temporal", "presplit"] = "leave_one_out"
    ratios: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    cold_item_fraction: float = 0.0  # additionally hold out this share of items from training


@dataclass
class FeaturesConfig:
    """Item content features. Either an existing FeatureStore directory, or encoders to run (cached)."""

    store: str | None = None
    text: str | None = None  # e.g. "minilm", "hashing", or any sentence-transformers / HF model name
    image: str | None = None  # e.g. "efficientnet-lite0", "stats", "clip:NAME", "siglip:NAME"
    # a second encoding of the item text, for similarity rules over exact words: "hashing:2048" (word and character
    # n-grams; content_knn's modalities "text+lexical" weight them by inverse document frequency)
    lexical: str | None = None
    template: str | None = None  # item text template, e.g. "{title}. {genres}" (for `text` and `lexical`)
    hidden: str | None = None  # HiddenStateCache directory (per-layer states) for adapter models such as IISAN
    cache_dir: str = ".cache/features"
    device: str = "cpu"
    batch_size: int = 64

    def encoders(self) -> dict[str, str]:
        """{FeatureStore modality: encoder spec} of the encoders this config names (a prebuilt `store` wins over
        them where it is read; serving still encodes added items with them)."""
        return {m: s for m, s in (("text", self.text), ("image", self.image), ("lexical", self.lexical)) if s}


@dataclass
class ModelSpec:
    name: str = "sasrec"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    exclude_seen: bool = True
    repeat_targets: RepeatTargets = "rankable"  # a target already in the history: modalrec.protocol
    device: str = "cpu"


@dataclass
class SelectConfig:
    """Settings chosen on VALID after training, before TEST's one evaluation (training/selection.py).

    The first two exist because training on the warm items of a time-ordered log can cost items without training
    events, the third because people take items again (docs/benchmarks.md, "Cold start and repeats on real
    data"); each is a sweep over VALID, recorded in the run's manifest, and kept with the weights, so `evaluate`
    and serving score the chosen model.
    """

    new_item_offset: bool = False  # SASRec, content or hybrid tower: the score offset of items without training events
    offset_tolerance: float = 0.01  # share of the offset-0 model's VALID overall metric the offset may cost
    # rule baselines (e.g. newest_first, recent_pop, content_knn): the offset is the smallest one whose VALID
    # cold-item metric reaches the best of theirs on VALID, within offset_tolerance (then set it to the most
    # overall metric the new items may cost, e.g. 0.05); none reaching it: the tolerance rule alone
    offset_reach: list[str] = field(default_factory=list)
    blend_untrained: bool = False  # score = (1 - w) * trained + w * the model's untrained state, w on VALID
    # a per-user offset of items without training events: a logistic regression on VALID over the history's
    # training event counts says how likely the next item is new; its offset and slope chosen on VALID
    # (models/new_item_gate.py)
    new_item_gate: bool = False
    # None: the gate's offset and slope with the best VALID overall metric; a share (e.g. 0.01): the best VALID
    # cold-item metric among those costing at most that share of the ungated model's VALID overall metric
    gate_tolerance: float | None = None
    repeat_bonus: bool = False  # a constant added to the scores of the user's history items, chosen on VALID


@dataclass
class ExperimentConfig:
    name: str = "run"
    seed: int = 0  # the experiment's one seed; see `seeded`
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    select: SelectConfig = field(default_factory=SelectConfig)


def seeded(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with its one seed handed to every component: the one place an experiment's seed is derived.

    Data (a synthetic source's `options.seed` unless given), the split, the initial weights
    (`ModelContext.seed`), batch order / dropout / negatives (`TrainConfig.seed`) and streaming-evaluation
    negatives all start from `cfg.seed`; each component draws its own streams from it with
    `seeding.derive_seed(seed, purpose)`. A `train.seed` other than the experiment's is refused rather
    than silently overridden: an experiment has one seed.
    """
    if cfg.train.seed not in (0, cfg.seed):
        raise ConfigError(f"train.seed ({cfg.train.seed}) differs from the experiment seed ({cfg.seed}); "
                          "set only the top-level `seed`")
    data = cfg.data
    if data.source == "synthetic" and "seed" not in data.options:
        data = dataclasses.replace(data, options={**data.options, "seed": cfg.seed})
    return dataclasses.replace(cfg, data=data, train=dataclasses.replace(cfg.train, seed=cfg.seed))


def with_model_defaults(cfg: ExperimentConfig) -> tuple[ExperimentConfig, dict[str, Any]]:
    """(`cfg` with the model's training recipe filled in where the user set nothing, the provenance).

    Unset TrainConfig fields (None) take the recipe's values, else the library defaults; model params the
    user did not give take the recipe's `model` values. The provenance, recorded in the run's manifest,
    names the recipe and every resolved value's source ("user", "model recipe", "library default").
    An unknown model name is left for `validation.check_experiment` to report.
    """
    from modalrec.models import MODELS
    from modalrec.models.recipe import resolve_model_params, resolve_train

    model_cls = MODELS[cfg.model.name][0] if cfg.model.name in MODELS else None
    recipe = model_cls.training_recipe(cfg.model.params) if model_cls is not None else None
    train, train_sources = resolve_train(cfg.train, recipe)
    params, param_sources = resolve_model_params(cfg.model.params, recipe)
    provenance = {
        "recipe": cfg.model.name if recipe is not None else None,
        "evidence": recipe.evidence if recipe is not None else None,
        "train": {k: {"value": getattr(train, k), "source": s} for k, s in train_sources.items()},
        "model_params": {k: {"value": params[k], "source": s} for k, s in param_sources.items()},
    }
    model = dataclasses.replace(cfg.model, params=params)
    return dataclasses.replace(cfg, model=model, train=train), provenance

"""Per-model training defaults: the recipe a model family recommends, applied where the user set nothing.

A `TrainingRecipe` names the values of the `TrainConfig` fields that are unset by default (None: "the
model's recipe, else the library default") and model parameters the recipe needs. A model declares its
recipe with `Recommender.training_recipe(params)`; the library default is `TrainingRecipe()`.

`run_experiment` (so `modalrec train` and the Python API alike) resolves every unset field from the
model's recipe and every model parameter the user did not give from the recipe's `model` values, and
records in the manifest where each effective value came from ("user", "model recipe", "library default").
`fit` alone takes a TrainConfig as given: its unset fields get the library defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from modalrec.errors import ConfigError

USER, RECIPE, LIBRARY = "user", "model recipe", "library default"


@dataclass(frozen=True)
class TrainingRecipe:
    """Training settings a model family recommends. Every field is one `TrainConfig` field that defaults to
    None (unset); `TrainingRecipe()` holds the library defaults."""

    batch_unit: Literal["windows", "targets"] = "windows"  # what train.batch_size counts (see TrainConfig)
    window_stride: int | None = None  # TrainWindows stride (None = max_len: windows do not overlap)
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    ema_decay: float = 0.0  # weight average validated and kept; 0 = off
    lr: float = 1e-3  # AdamW learning rate
    model: Mapping[str, Any] = field(default_factory=dict)  # model params, where the user gave none
    evidence: str = ""  # where the recipe was chosen (a benchmark and its result file)

    def __post_init__(self) -> None:
        if self.batch_unit not in ("windows", "targets"):
            raise ConfigError(f"recipe batch_unit must be 'windows' or 'targets', got {self.batch_unit!r}")
        if not 0.0 <= self.ema_decay < 1.0 or self.grad_clip < 0 or not self.lr > 0:
            raise ConfigError(f"recipe: ema_decay in [0, 1), grad_clip >= 0 and lr > 0 required, got {self}")

    def train_values(self) -> dict[str, Any]:
        """{TrainConfig field: value} this recipe sets (every field but `model` and `evidence`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("model", "evidence")}


LIBRARY_RECIPE = TrainingRecipe()
RECIPE_FIELDS = tuple(LIBRARY_RECIPE.train_values())  # the TrainConfig fields that default to None (unset)


def resolve_train(cfg: Any, recipe: TrainingRecipe | None) -> tuple[Any, dict[str, str]]:
    """(`cfg` with every unset recipe field set from `recipe`, else from the library default; {field: source}).
    A field the user set keeps its value ("user"); a recipe value equal to the library default is still
    reported as the model recipe's, since the model declared it."""
    recipe = recipe or LIBRARY_RECIPE
    changes, sources = {}, {}
    for name, value in recipe.train_values().items():
        if getattr(cfg, name) is not None:
            sources[name] = USER
        else:  # a None stride stays None: max_len
            changes[name] = value
            sources[name] = RECIPE if recipe is not LIBRARY_RECIPE else LIBRARY
    return dataclasses.replace(cfg, **changes), sources


def with_library_defaults(cfg: Any) -> Any:
    """`cfg` with its unset recipe fields at the library defaults (what `fit` does with a bare TrainConfig)."""
    return resolve_train(cfg, None)[0]


def resolve_model_params(params: Mapping[str, Any], recipe: TrainingRecipe | None) -> tuple[dict[str, Any], dict[str, str]]:
    """(`params` plus every recipe model parameter the user did not give; {param: source} of the recipe's)."""
    out, sources = dict(params), {}
    for name, value in (recipe.model if recipe is not None else {}).items():
        sources[name] = USER if name in params else RECIPE
        out.setdefault(name, value)
    return out, sources


def library_training(max_len: int) -> dict[str, Any]:
    """The library defaults of the recipe fields as explicit `train` values (windows of `max_len`): for a
    config that must train as before models had recipes, e.g. a benchmark whose stored results used them.
    The lr is left out: such a config names its own (it was not a recipe field then), which must win."""
    values = {k: v for k, v in LIBRARY_RECIPE.train_values().items() if k != "lr"}
    return {**values, "window_stride": int(max_len)}

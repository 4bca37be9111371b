"""The training loop's own checkpoint: everything needed to continue a run after its last finished epoch.

Directory layout (`checkpoint_dir`):
  state-eNNNN.safetensors   model weights ("model." prefix) + optimizer tensors ("optim." prefix)
                            + the weight average ("ema." prefix) when train.ema_decay is on
  best-eNNNN.safetensors    the best-on-valid weights so far
  trainer.json              epoch, history, optimizer hyperparameters, schedule, scaler, early-stopping state
trainer.json is written last and atomically: it is the commit point. Files it does not name are stale.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from modalrec.io import write_json_atomic
from modalrec.training.checkpoint import (
    load_model_state,
    load_tensors,
    optimizer_from_parts,
    optimizer_to_parts,
    save_tensors,
)

log = logging.getLogger(__name__)

FORMAT = 1
# Fields that may change between an interrupted run and its continuation without a warning.
_FREE = {"epochs", "progress", "device", "checkpoint_dir", "log_dir", "resume", "patience"}


class TrainerCheckpoint:
    def __init__(self, dir: str | Path) -> None:
        self.dir = Path(dir)

    @property
    def meta_path(self) -> Path:
        return self.dir / "trainer.json"

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def save(self, epoch: int, t: Any) -> None:
        """Save after `epoch`; `t` is the loop's trainer (model, optimizer, schedule, cfg, hist, ...)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        prev = json.loads(self.meta_path.read_text()) if self.exists() else {}
        state_file = f"state-e{epoch:04d}.safetensors"
        optim_tensors, optim_payload = optimizer_to_parts(t.optimizer)
        tensors = {f"model.{k}": v for k, v in t.model.state_dict().items()} | optim_tensors
        if t.ema is not None:
            tensors |= t.ema.tensors("ema.")
        save_tensors(self.dir / state_file, tensors)
        best_file = prev.get("best_file")
        if t.best_state is not None and (t.best_changed or best_file is None):
            best_file = f"best-e{epoch:04d}.safetensors"
            save_tensors(self.dir / best_file, t.best_state)
        payload = {
            "format": FORMAT,
            "epoch": epoch,
            "state_file": state_file,
            "best_file": best_file,
            "bad": t.bad,
            "done": t.done,
            "optimizer": optim_payload,
            "schedule": t.schedule.state_dict(),
            "scaler": t.scaler.state_dict() if t.scaler is not None else None,
            "ema_updates": t.ema.updates if t.ema is not None else None,
            "config": dataclasses.asdict(t.cfg),
            "history": t.hist.to_dict(),
        }
        write_json_atomic(self.meta_path, payload)  # the commit point
        for p in list(self.dir.glob("state-e*.safetensors")) + list(self.dir.glob("best-e*.safetensors")):
            if p.name not in (state_file, best_file):
                p.unlink(missing_ok=True)

    def load(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: Any,
        schedule: Any,
        cfg: Any,
        ema: Any = None,
    ) -> dict[str, Any]:
        payload = json.loads(self.meta_path.read_text())
        if payload.get("format") != FORMAT:
            raise ValueError(
                f"{self.meta_path}: unsupported trainer checkpoint format {payload.get('format')}"
            )
        changed = {
            k: (v, getattr(cfg, k, None))
            for k, v in payload["config"].items()
            if k not in _FREE and getattr(cfg, k, None) != v
        }
        if changed:
            log.warning("resuming %s with a different config: %s", self.dir, changed)
        tensors = load_tensors(self.dir / payload["state_file"])
        model_tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        load_model_state(model, model_tensors, source=self.dir / payload["state_file"])
        optimizer_from_parts(optimizer, tensors, payload["optimizer"])
        schedule.load_state_dict(payload["schedule"])
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        if ema is not None:
            if payload.get("ema_updates") is None:
                raise ValueError(f"{self.meta_path}: this run was saved without train.ema_decay; resume it with "
                                 "ema_decay=0 or start a new checkpoint_dir")
            ema.load(tensors, payload["ema_updates"], "ema.")
        best = load_tensors(self.dir / payload["best_file"]) if payload.get("best_file") else None
        return {"history": payload["history"], "loop": (int(payload["bad"]), bool(payload["done"]), best)}

"""The shared training loop: early stopping, best-weight restore, exact resume, schedules, logs."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from train_testdata import context, cyclic_split

from modalrec.data.sequences import TrainWindows
from modalrec.errors import ConfigError
from modalrec.evaluation.evaluator import Evaluator
from modalrec.models.base import Recommender, Training
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.training.loop import TrainConfig, fit


@dataclass
class XY:
    x: torch.Tensor  # [B, 3]
    y: torch.Tensor  # [B]

    def to(self, device: str | torch.device) -> XY:
        return XY(self.x.to(device), self.y.to(device))


class Regression:
    """A minimal batch source: y = x . w_true, in fixed batches (no TrainWindows)."""

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])

    def batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[XY]:
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            yield XY(self.x[idx], self.y[idx])

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.x) // batch_size)


class Linear(Recommender):
    training_kind = Training.WINDOWS  # trained by gradient steps on its own batches

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.resets = 0

    def reset_state(self) -> None:
        self.resets += 1

    def loss(self, batch: XY) -> torch.Tensor:
        return (self.lin(batch.x).squeeze(-1) - batch.y).pow(2).mean()


def _quiet(**kw: object) -> TrainConfig:
    return TrainConfig(progress=False, **kw)  # type: ignore[arg-type]


def test_early_stopping_restores_the_best_epoch() -> None:
    model, snapshots = Linear(), []
    scripted = iter([0.1, 0.5, 0.3, 0.2, 0.9, 0.9])

    def validate(m: Linear) -> dict[str, float]:
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"ndcg@10": next(scripted), "hr@10": 0.0}

    hist = fit(model, Regression(), _quiet(epochs=10, patience=2, batch_size=16, lr=0.05, validate_first=False),
               validate)
    assert hist.epochs == 4 and hist.stopped_early
    assert hist.best_epoch == 2 and hist.best_metric == 0.5
    assert all(torch.equal(v, snapshots[1][k]) for k, v in model.state_dict().items())
    assert not torch.equal(model.lin.weight, snapshots[3]["lin.weight"])
    assert model.resets == 4  # reset_state at every epoch start
    assert hist.valid[1] == {"ndcg@10": 0.5, "hr@10": 0.0}
    assert 0 < hist.seconds_to_best <= hist.total_seconds
    assert hist.trainable_params == 4 and hist.peak_memory_bytes > 0 and hist.steps == 16


def test_epoch_zero_is_validated_and_kept_when_training_only_hurts() -> None:
    model, snapshots = Linear(), []
    untrained = {k: v.clone() for k, v in model.state_dict().items()}
    scripted = iter([0.9, 0.5, 0.4, 0.3])

    def validate(m: Linear) -> dict[str, float]:
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"ndcg@10": next(scripted)}

    hist = fit(model, Regression(), _quiet(epochs=10, patience=2, batch_size=16, lr=0.05), validate)
    assert hist.initial_valid == {"ndcg@10": 0.9} and hist.best_epoch == 0 and hist.best_metric == 0.9
    assert all(torch.equal(v, untrained[k]) for k, v in snapshots[0].items())  # validated before any step
    assert hist.epochs == 2 and hist.stopped_early and len(snapshots) == 3
    assert all(torch.equal(v, untrained[k]) for k, v in model.state_dict().items())  # the untrained weights kept
    assert not torch.equal(snapshots[1]["lin.weight"], untrained["lin.weight"])


def test_monitor_errors_numbers_and_refusals() -> None:
    with pytest.raises(ConfigError, match="mrr"):
        fit(Linear(), Regression(), _quiet(epochs=1, monitor="mrr"), lambda m: {"ndcg@10": 1.0})
    hist = fit(Linear(), Regression(), _quiet(epochs=2, monitor="score", monitor_mode="min", validate_first=False),
               lambda m: 1.0)
    assert hist.best_epoch == 1 and hist.valid[1] == {"score": 1.0}
    frozen = Linear().requires_grad_(False)
    with pytest.raises(TypeError, match="no trainable parameters"):
        fit(frozen, Regression(), _quiet(epochs=1))
    bad = Linear()
    with torch.no_grad():
        bad.lin.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        fit(bad, Regression(), _quiet(epochs=1))
    with pytest.raises(ConfigError, match="scheduler"):
        fit(Linear(), Regression(), _quiet(epochs=1, scheduler="step"))


def test_schedules_warmup_cosine_plateau_and_step_limit() -> None:
    h = fit(
        Linear(), Regression(), _quiet(epochs=4, batch_size=16, lr=0.1, scheduler="cosine", warmup_steps=2)
    )
    assert h.steps == 16 and h.lr[0] < 0.1 and h.lr[-1] < h.lr[1] < 0.1  # warmup then decay
    flat = iter([0.5, 0.4, 0.4, 0.4, 0.4])
    h = fit(
        Linear(),
        Regression(),
        _quiet(epochs=5, lr=0.1, scheduler="plateau", plateau_patience=2, patience=0, max_steps_per_epoch=1,
               validate_first=False),
        lambda m: {"ndcg@10": next(flat)},
    )
    assert h.steps == 5
    assert h.lr == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])  # halved after the 2nd bad validation


def test_lr_scale_gives_a_parameter_its_own_learning_rate_under_the_schedule() -> None:
    """AdamW's first step moves every weight with a non-zero gradient by lr (m / sqrt(v) = +-1): the scaled
    weight must move by lr x lr_scale, also under a warmup schedule that rewrites the lr every step."""
    for warmup, lr in ((0, 0.1), (2, 0.1 / 2)):  # warmup: step 1 of 2 runs at lr / 2
        model = Linear()
        model.lin.weight.lr_scale = 0.1  # type: ignore[attr-defined]
        w0, b0 = model.lin.weight.detach().clone(), model.lin.bias.detach().clone()
        fit(model, Regression(), _quiet(epochs=1, batch_size=64, lr=0.1, warmup_steps=warmup,
                                        max_steps=1, validate_first=False))
        torch.testing.assert_close((model.lin.weight - w0).abs(), torch.full_like(w0, 0.1 * lr), rtol=1e-4, atol=0)
        torch.testing.assert_close((model.lin.bias - b0).abs(), torch.full_like(b0, lr), rtol=1e-4, atol=0)


def _sasrec_run(split, ckpt: Path, log_dir: Path | None = None, fail_at: int | None = None, ema: float = 0.0):  # type: ignore[no-untyped-def]
    model = SASRec.build(
        SASRecConfig(dim=16, n_layers=1, dropout=0.3, max_len=10, loss="sampled", n_negatives=10),
        context(split),
    )
    evaluator = Evaluator(split.valid, split.n_items, ks=(10,), max_len=10)
    calls = {"n": 0}

    def validate(m: nn.Module):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise KeyboardInterrupt("simulated interruption")
        return evaluator.run(m, name="valid")

    cfg = _quiet(
        epochs=4,
        batch_size=16,
        lr=5e-3,
        scheduler="cosine",
        warmup_steps=3,
        seed=7,
        ema_decay=ema,
        checkpoint_dir=str(ckpt),
        log_dir=str(log_dir) if log_dir else None,
    )
    hist = fit(model, TrainWindows(split.train, 10), cfg, validate)
    return model, hist


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_interrupted_run_resumes_to_identical_weights(tmp_path: Path, ema: float) -> None:
    split = cyclic_split(n_items=20, n_users=30)
    ref_model, ref_hist = _sasrec_run(split, tmp_path / "ref", tmp_path / "ref_logs", ema=ema)
    with pytest.raises(KeyboardInterrupt):
        _sasrec_run(split, tmp_path / "run", fail_at=4, ema=ema)  # dies validating epoch 3 (call 1 = epoch 0)
    model, hist = _sasrec_run(split, tmp_path / "run", tmp_path / "run_logs", ema=ema)
    assert hist.resumed_from == 2
    assert hist.train_loss == ref_hist.train_loss and hist.best_epoch == ref_hist.best_epoch
    ref_state = ref_model.state_dict()
    assert all(torch.equal(v, ref_state[k]) for k, v in model.state_dict().items())
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert "trainer.json" in files and len([f for f in files if f.startswith("state-")]) == 1
    rows = list(csv.DictReader((tmp_path / "run_logs" / "train_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"] and "valid/ndcg@10" in rows[0]
    # A finished run is not retrained: rerunning only restores its best weights.
    again, hist2 = _sasrec_run(split, tmp_path / "run", ema=ema)
    assert hist2.resumed_from == 4 and hist2.epochs == 4
    assert all(torch.equal(v, ref_state[k]) for k, v in again.state_dict().items())


def test_same_seed_same_weights_other_seed_differs() -> None:
    split = cyclic_split(n_items=20, n_users=30)

    def run(seed: int) -> dict[str, torch.Tensor]:
        model = SASRec.build(SASRecConfig(dim=16, n_layers=1, dropout=0.3, max_len=10), context(split))
        fit(model, TrainWindows(split.train, 10), _quiet(epochs=2, batch_size=16, seed=seed))
        return model.state_dict()

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


class Recording(Regression):
    """Regression batches that also record the model's weights after every optimizer step."""

    def __init__(self, model: Linear) -> None:
        super().__init__()
        self.model, self.after_step = model, []

    def batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[XY]:
        for batch in super().batches(batch_size, seed, epoch):
            yield batch
            # The loop asks for the next batch only after it has stepped on this one.
            self.after_step.append(self.model.lin.weight.detach().clone())


def test_weight_average_is_validated_kept_and_resumable(tmp_path: Path) -> None:
    decay = 0.8
    model = Linear()
    start = model.lin.weight.detach().clone()
    source, seen = Recording(model), []
    rising = iter([0.1, 0.2, 0.3])

    def validate(m: Linear) -> float:
        seen.append(m.lin.weight.detach().clone())
        return next(rising)

    fit(model, source, _quiet(epochs=3, batch_size=16, lr=0.05, ema_decay=decay, seed=3, validate_first=False),
        validate)
    expected, average = [], start.clone()
    for k, live in enumerate(source.after_step):  # 4 steps per epoch
        d = min(decay, (1 + k) / (10 + k))  # the ramp that lets the average forget the initialisation
        average = d * average + (1 - d) * live
        if (k + 1) % 4 == 0:
            expected.append(average)
    assert len(seen) == 3 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(seen, expected))
    assert not torch.allclose(seen[-1], source.after_step[-1])  # the live weights were not the validated ones
    assert torch.equal(model.lin.weight, seen[-1])  # fit returns the best validated (averaged) weights
    # Without validation, fit returns the average too; the live weights go on training underneath.
    torch.manual_seed(0)
    plain = Linear()
    fit(plain, Regression(), _quiet(epochs=2, batch_size=16, lr=0.05, ema_decay=decay, seed=3))
    torch.manual_seed(0)
    live = Linear()  # same start, same batches, no average
    fit(live, Regression(), _quiet(epochs=2, batch_size=16, lr=0.05, seed=3))
    assert not torch.allclose(plain.lin.weight, live.lin.weight)
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    # A checkpoint saved without an average cannot silently continue as a run that has one.
    fit(Linear(), Regression(), _quiet(epochs=1, checkpoint_dir=str(tmp_path / "ck")))
    with pytest.raises(ValueError, match="without train.ema_decay"):
        fit(Linear(), Regression(), _quiet(epochs=2, ema_decay=0.5, checkpoint_dir=str(tmp_path / "ck")))


class SlowLinear(Linear):
    """Each step takes ~20 ms of wall time, so a time budget ends a run at a predictable step."""

    def loss(self, batch: XY) -> torch.Tensor:
        import time

        time.sleep(0.02)
        return super().loss(batch)


def test_time_budget_cuts_the_epoch_short_validates_it_and_starts_no_other() -> None:
    seen: list[int] = []
    h = fit(SlowLinear(), Regression(n=640), _quiet(epochs=5, batch_size=8, lr=0.01, time_budget_s=0.3,
                                                    validate_first=False),
            lambda m: seen.append(1) or {"ndcg@10": 0.5})
    assert h.out_of_time and h.epochs == 1 and seen == [1]  # the cut epoch is still validated
    assert 3 <= h.epoch_steps[0] == h.steps < 80  # stopped well inside the 80-step epoch
    h = fit(Linear(), Regression(), _quiet(epochs=2, batch_size=16, time_budget_s=60.0))
    assert not h.out_of_time and h.epoch_steps == [4, 4] and h.steps == 8
    with pytest.raises(ConfigError, match="time_budget_s"):
        TrainConfig(time_budget_s=0)

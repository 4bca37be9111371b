"""Progress output: in a log (stderr not a terminal) one line per epoch and no bar redraws."""

from __future__ import annotations

import re

import pytest

from modalrec import progress
from modalrec.config import from_dict
from modalrec.experiment import ExperimentConfig
from modalrec.pipeline import run_experiment


def test_one_line_per_epoch_in_a_log(capsys: pytest.CaptureFixture) -> None:
    cfg = from_dict(ExperimentConfig, {
        "data": {"source": "synthetic", "options": {"n_users": 60, "n_items": 40, "avg_seq_len": 8}},
        "model": {"name": "sasrec", "params": {"dim": 16, "max_len": 8}}, "eval": {"ks": [10]},
        "train": {"epochs": 3, "patience": 0, "progress": True}})
    result = run_experiment(cfg, write=False)
    err = capsys.readouterr().err  # captured: not a terminal
    assert "\r" not in err and "it/s" not in err  # no bar was drawn
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3
    pattern = r"epoch (\d)/3  loss (\d+\.\d{4})  VALID ndcg@10 (\d\.\d{4})( \*|  )  \d+\.\ds/epoch  (ETA \d+\.\ds|done)"
    for e, line in enumerate(lines):
        m = re.fullmatch(pattern, line)
        assert m, line
        assert int(m.group(1)) == e + 1 and float(m.group(2)) == pytest.approx(result.history.train_loss[e], abs=1e-4)
        assert float(m.group(3)) == pytest.approx(result.history.valid[e]["ndcg@10"], abs=1e-4)
    assert lines[-1].endswith("done")


def test_durations_read_naturally() -> None:
    assert [progress.duration(s) for s in (4.25, 65, 3600 * 2 + 7 * 60 + 20)] == ["4.2s", "1m05s", "2h07m"]

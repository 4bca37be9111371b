"""Per-epoch training logs: a CSV file (always) and TensorBoard events (when tensorboard is installed).

The CSV is rewritten whole (atomically) every epoch from the run's history, so a resumed run
produces the same file as an uninterrupted one and columns can appear later (e.g. first validation).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from modalrec.io import write_bytes_atomic

log = logging.getLogger(__name__)


class EpochLogger:
    """Writes `log_dir`/train_log.csv and, if possible, TensorBoard scalars under `log_dir`/tensorboard."""

    def __init__(self, log_dir: str | Path, tensorboard: bool = True) -> None:
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "train_log.csv"
        self.rows: list[dict[str, Any]] = []
        self._tb = _tensorboard_writer(self.dir / "tensorboard") if tensorboard else None

    def log_epoch(self, row: dict[str, Any]) -> None:
        """One epoch's scalars, e.g. {"epoch": 3, "train_loss": 5.1, "lr": 1e-3, "valid/ndcg@10": 0.2}."""
        self.rows = [r for r in self.rows if r.get("epoch") != row.get("epoch")] + [dict(row)]
        self._write_csv()
        if self._tb is not None:
            step = int(row.get("epoch", len(self.rows)))
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, float(value), step)
            self._tb.flush()

    def replace(self, rows: list[dict[str, Any]]) -> None:
        """Reset the rows (used when resuming: the history so far)."""
        self.rows = [dict(r) for r in rows]
        self._write_csv()

    def _write_csv(self) -> None:
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_bytes_atomic(self.csv_path, buf.getvalue().encode())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _tensorboard_writer(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        log.debug("tensorboard not installed; writing the CSV log only")
        return None
    return SummaryWriter(str(path))

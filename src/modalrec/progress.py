"""Progress output on stderr: bars on a terminal, whole lines in a log.

A bar redraws itself in place: a terminal shows one line, but a log file records every redraw (thousands
of characters per epoch). So bars are drawn only when stderr is a terminal, and every finished unit of
work (an epoch, an encoded modality) is reported as one line either way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def interactive() -> bool:
    """Whether stderr is a terminal (bars are drawn only then)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def bar(iterable: Iterable[Any] | None = None, *, total: int | None, desc: str, enabled: bool = True,
        unit: str = "it", initial: int = 0) -> Any:
    """A tqdm bar that draws only on a terminal; it clears itself when done (the line that follows says
    what happened)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=False, dynamic_ncols=True,
                file=sys.stderr, disable=not (enabled and interactive()))


def line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """12.3s, 4m05s, 2h07m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def epoch_line(epoch: int, epochs: int, loss: float, seconds: float, eta: float | None,
               monitor: str | None = None, value: float | None = None, best: bool = False) -> str:
    """'epoch 3/50  loss 5.1234  VALID ndcg@10 0.1234 *  12.3s/epoch  ETA 9m30s' (* = best so far)."""
    parts = [f"epoch {epoch}/{epochs}", f"loss {loss:.4f}"]
    if monitor is not None and value is not None:
        parts.append(f"VALID {monitor} {value:.4f}{' *' if best else '  '}")
    parts.append(f"{duration(seconds)}/epoch")
    parts.append("done" if eta is None else f"ETA {duration(eta)}")
    return "  ".join(parts)

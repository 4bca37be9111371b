"""Evaluation-protocol values that configs, the evaluator and the CLI share, in a module without torch so a
command can offer them as choices before importing it."""

from __future__ import annotations

import typing
from typing import Literal

# With exclude_seen, a target already in the history: "rankable" (the SASRec convention; it leaks the answer,
# evaluation/evaluator.py) or "miss" (masked with the history, as the IISAN papers and RecBole count it).
RepeatTargets = Literal["rankable", "miss"]
REPEAT_TARGETS: tuple[str, ...] = typing.get_args(RepeatTargets)

"""Sequence datasets and left-padded batches for training and evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from modalrec.data.interactions import Interactions
from modalrec.data.splits import EvalSet
from modalrec.seeding import numpy_rng
from modalrec.types import SeqBatch


def left_pad(seqs: list[np.ndarray], max_len: int) -> np.ndarray:
    """[B, max_len] int64, each sequence's last `max_len` values right-aligned, 0 on the left."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    if max_len == 0:  # a model that reads no history window (s[-0:] would be the whole sequence)
        return out
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[i, max_len - len(s) :] = s
    return out


@dataclass
class TrainWindows:
    """Next-item training windows cut from each user's training sequence.

    A sequence of n events gives windows ending at n, n - stride, n - 2*stride, ... so every event
    (except each user's first) is a prediction target exactly once, and long histories are not
    thrown away. Window w has inputs seq[s:e-1] and targets seq[s+1:e].

    `stride` (default max_len: windows do not overlap) trades compute for context. With non-overlapping
    windows a target near the start of an earlier window sees only the few items before it in that
    window, while at evaluation every event sees up to max_len items. With stride < max_len windows
    overlap and each window trains only its last `stride` targets (the others are trained, with more
    context, by a later window; they are PAD in `targets`), so every target sees at least
    max_len - stride earlier items, or its whole history if shorter. stride = 1 is RecBole-style
    prefix augmentation (one target per window, full context). Compute per epoch grows ~max_len / stride.

    `first_events` adds one window per user whose inputs are empty and whose one target is the user's first
    event: the model then learns the state a new user's first recommendation is scored from (an all-PAD
    history, exactly as evaluation and serving encode an empty history), instead of leaving it untrained.
    """

    train: Interactions
    max_len: int
    stride: int | None = None
    first_events: bool = False

    def __post_init__(self) -> None:
        stride = self.max_len if self.stride is None else int(self.stride)
        if not 1 <= stride <= self.max_len:
            raise ValueError(f"TrainWindows stride must be in [1, max_len={self.max_len}], got {self.stride}")
        lengths = self.train.seq_lengths()
        starts, ends, first_targets, users = [], [], [], []
        for u in np.flatnonzero(lengths >= 2):
            lo, hi = int(self.train.offsets[u]), int(self.train.offsets[u + 1])
            end = hi
            while end - lo >= 2:
                start = max(lo, end - self.max_len - 1)
                # Trained targets: the last `stride` of the window, or all of it when it reaches the user's start.
                first = start + 1 if start == lo else max(start + 1, end - stride)
                starts.append(start)
                ends.append(end)
                first_targets.append(first)
                users.append(u)
                end = first  # the next window ends where this window's trained targets begin
        empty_history = [False] * len(starts)
        if self.first_events:  # window [lo, lo + 1) with no inputs: target = the user's first event
            firsts = np.asarray(self.train.offsets[:-1], dtype=np.int64)[lengths >= 1]
            starts += firsts.tolist()
            ends += (firsts + 1).tolist()
            first_targets += firsts.tolist()
            users += np.flatnonzero(lengths >= 1).tolist()
            empty_history += [True] * len(firsts)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)
        self.first_targets = np.asarray(first_targets, dtype=np.int64)  # absolute row of the first trained target
        self.users = np.asarray(users, dtype=np.int64)
        # 1 where a window's targets begin one event after its inputs (all but the first_events windows)
        self.target_shift = 1 - np.asarray(empty_history, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def n_targets(self) -> int:
        """Trained targets in one epoch (= training events minus each user's first, unless `first_events`)."""
        return int((self.ends - self.first_targets).sum())

    def windows_per_step(self, targets: int) -> int:
        """Windows per step that hold about `targets` trained targets on average (at least 1)."""
        return max(1, round(targets * len(self) / max(self.n_targets, 1)))

    def batch(self, idx: np.ndarray) -> SeqBatch:
        item, ts = self.train.item, self.train.ts
        spans = list(zip(self.starts[idx], self.ends[idx], self.target_shift[idx]))
        inputs = [item[s : e - 1] for s, e, _ in spans]
        targets = [item[s + k : e].copy() for s, e, k in spans]
        for t, (s, _, k), f in zip(targets, spans, self.first_targets[idx]):
            t[: f - s - k] = 0  # targets trained by a later (more context) window are PAD here
        times = [ts[s : e - 1] for s, e, _ in spans]
        target_times = [ts[s + k : e] for s, e, k in spans]
        return SeqBatch(
            items=torch.from_numpy(left_pad(inputs, self.max_len)),
            targets=torch.from_numpy(left_pad(targets, self.max_len)),
            users=torch.from_numpy(self.users[idx].copy()),
            timestamps=torch.from_numpy(left_pad(times, self.max_len)),
            target_ts=torch.from_numpy(left_pad(target_times, self.max_len)),
        )

    def index_batches(self, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> Iterator[np.ndarray]:
        """The window indices of each batch of the epoch (seeded per epoch); `batch(idx)` collates them."""
        order = np.arange(len(self))
        if shuffle:
            numpy_rng(seed, f"train_windows/epoch{epoch}").shuffle(order)
        for lo in range(0, len(order), batch_size):
            yield order[lo : lo + batch_size]

    def batches(self, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> Iterator[SeqBatch]:
        for idx in self.index_batches(batch_size, seed, epoch, shuffle):
            yield self.batch(idx)

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size


def eval_batch(es: EvalSet, idx: np.ndarray, max_len: int) -> SeqBatch:
    """Batch of evaluation events `idx`: left-padded last `max_len` history items and the [B] targets."""
    starts, ends = es.hist_offsets[idx], es.hist_offsets[idx + 1]
    hist = [es.hist_items[s:e] for s, e in zip(starts, ends)]
    times = [es.hist_ts[s:e] for s, e in zip(starts, ends)]
    return SeqBatch(
        items=torch.from_numpy(left_pad(hist, max_len)),
        targets=torch.from_numpy(es.target[idx].copy()),
        users=torch.from_numpy(es.user[idx].copy()),
        timestamps=torch.from_numpy(left_pad(times, max_len)),
        target_ts=torch.from_numpy(es.ts[idx].copy()),
    )


def history_batch(histories: list[np.ndarray], max_len: int) -> SeqBatch:
    """Batch for ad-hoc recommendation: arbitrary histories, no targets (targets are 0)."""
    return SeqBatch(
        items=torch.from_numpy(left_pad(histories, max_len)),
        targets=torch.zeros(len(histories), dtype=torch.int64),
        users=torch.zeros(len(histories), dtype=torch.int64),
    )

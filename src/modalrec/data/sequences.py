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
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[i, max_len - len(s) :] = s
    return out


@dataclass
class TrainWindows:
    """Next-item training windows cut from each user's training sequence.

    A sequence of n events gives windows ending at n, n - max_len, n - 2*max_len, ... so every event
    (except each user's first) is a prediction target exactly once, and long histories are not
    thrown away. Window w has inputs seq[s:e-1] and targets seq[s+1:e].
    """

    train: Interactions
    max_len: int

    def __post_init__(self) -> None:
        lengths = self.train.seq_lengths()
        starts, ends, users = [], [], []
        for u in np.flatnonzero(lengths >= 2):
            lo, hi = int(self.train.offsets[u]), int(self.train.offsets[u + 1])
            end = hi
            while end - lo >= 2:
                start = max(lo, end - self.max_len - 1)
                starts.append(start)
                ends.append(end)
                users.append(u)
                end = start + 1  # the next window's last target is this window's first input
        self.starts = np.asarray(starts, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)
        self.users = np.asarray(users, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, idx: np.ndarray) -> SeqBatch:
        item, ts = self.train.item, self.train.ts
        inputs = [item[s : e - 1] for s, e in zip(self.starts[idx], self.ends[idx])]
        targets = [item[s + 1 : e] for s, e in zip(self.starts[idx], self.ends[idx])]
        times = [ts[s : e - 1] for s, e in zip(self.starts[idx], self.ends[idx])]
        target_times = [ts[s + 1 : e] for s, e in zip(self.starts[idx], self.ends[idx])]
        return SeqBatch(
            items=torch.from_numpy(left_pad(inputs, self.max_len)),
            targets=torch.from_numpy(left_pad(targets, self.max_len)),
            users=torch.from_numpy(self.users[idx].copy()),
            timestamps=torch.from_numpy(left_pad(times, self.max_len)),
            target_ts=torch.from_numpy(left_pad(target_times, self.max_len)),
        )

    def batches(self, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> Iterator[SeqBatch]:
        order = np.arange(len(self))
        if shuffle:
            numpy_rng(seed, f"train_windows/epoch{epoch}").shuffle(order)
        for lo in range(0, len(order), batch_size):
            yield self.batch(order[lo : lo + batch_size])

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

"""User-item pairs for graph and matrix-factorisation models.

    PairSource(train, n_negatives)     (user, positive, negatives) batches for BPR, reseeded per epoch
    normalized_adjacency(train, norm)  the user-item graph as a sparse (CSR) matrix, "sym" or "mean" norm
    sparse_propagate(graph, x)         graph @ x with a fast sparse backward (graph^T kept alongside)
    random_split(inter, ratios, seed)  per-user random 8:1:1 split (the LightGCN / NGCF protocol)

Graph node layout: users take rows 0..n_users (0 = PAD user, isolated), items take rows
n_users + 1 + i for i in 0..n_items (item 0 = PAD, isolated). Repeated (user, item) events are one edge.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from modalrec.data.interactions import Interactions, concat_ranges
from modalrec.data.splits import EvalSet, Split
from modalrec.seeding import numpy_rng

log = logging.getLogger(__name__)

NORMS = ("sym", "mean")


@dataclass
class PairBatch:
    """BPR training batch: users [B], positive items [B], sampled negative items [B, K]."""

    users: torch.Tensor  # [B] int64
    pos: torch.Tensor  # [B] int64
    neg: torch.Tensor  # [B, K] int64

    def to(self, device: torch.device | str) -> PairBatch:
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.users.shape[0])


def unique_pairs(train: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs of `train`, sorted by (user, item): ([P] users, [P] items)."""
    if len(train) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key = np.unique(train.user * (train.n_items + 1) + train.item)  # [P] sorted, deduplicated
    return key // (train.n_items + 1), key % (train.n_items + 1)


class PairSource:
    """Every distinct training (user, item) pair once per epoch, shuffled, with K negatives each.

    Negatives are drawn uniformly from the items that occur in training (items that appear only
    later did not exist when the model was trained, and pushing them down would bias against cold
    items), rejecting the user's own training items; a user who consumed every training item keeps
    whatever was drawn last. Draws come from `modalrec.seeding` generators keyed by (seed, epoch), so
    an epoch's batches are reproducible and resumable.
    """

    def __init__(self, train: Interactions, n_negatives: int = 1, max_rounds: int = 50) -> None:
        if n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
        self.n_items, self.n_negatives, self.max_rounds = train.n_items, int(n_negatives), int(max_rounds)
        self.users, self.items = unique_pairs(train)  # [P], [P]
        self._keys = self.users * (self.n_items + 1) + self.items  # [P] sorted (user, item) codes
        self.candidates = np.flatnonzero(train.item_counts() > 0).astype(np.int64)  # items to draw from
        if len(self.users) == 0:
            raise ValueError("PairSource: the training interactions are empty")

    def __len__(self) -> int:
        return len(self.users)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """[n] bool: (users[k], items[k]) is a training pair."""
        code = users * (self.n_items + 1) + items
        pos = np.searchsorted(self._keys, code)
        return (pos < len(self._keys)) & (self._keys[np.minimum(pos, len(self._keys) - 1)] == code)

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[n, K] training items that are not positives of users[k] (rejection sampling)."""
        n, k = len(users), self.n_negatives
        flat_users = np.repeat(users, k)  # [n * K]
        neg = self.candidates[rng.integers(0, len(self.candidates), size=n * k)]
        bad = np.flatnonzero(self.is_positive(flat_users, neg))
        for _ in range(self.max_rounds):
            if len(bad) == 0:
                break
            neg[bad] = self.candidates[rng.integers(0, len(self.candidates), size=len(bad))]
            bad = bad[self.is_positive(flat_users[bad], neg[bad])]
        if len(bad):
            log.debug("%d negatives are positives after %d rounds (users with nearly every item)", len(bad),
                      self.max_rounds)
        return neg.reshape(n, k)

    def batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[PairBatch]:
        order = numpy_rng(seed, f"pairs/order/epoch{epoch}").permutation(len(self.users))
        neg = self.sample_negatives(self.users[order], numpy_rng(seed, f"pairs/negatives/epoch{epoch}"))
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            yield PairBatch(
                users=torch.from_numpy(self.users[idx]),
                pos=torch.from_numpy(self.items[idx]),
                neg=torch.from_numpy(np.ascontiguousarray(neg[lo : lo + batch_size])),
            )

    def num_batches(self, batch_size: int) -> int:
        return (len(self.users) + batch_size - 1) // batch_size


@dataclass
class Graph:
    """A sparse node x node matrix in CSR form plus its transpose (for a CSR-fast backward pass)."""

    matrix: torch.Tensor  # [V, V] sparse CSR float32
    transpose: torch.Tensor  # [V, V] sparse CSR float32
    n_users: int
    n_items: int

    @property
    def n_nodes(self) -> int:
        return int(self.matrix.shape[0])

    def to(self, device: torch.device | str) -> Graph:
        return replace(self, matrix=self.matrix.to(device), transpose=self.transpose.to(device))


def normalized_adjacency(train: Interactions, norm: str = "sym", n_items: int | None = None) -> Graph:
    """The bipartite user-item graph of `train` (distinct pairs), normalised.

    norm="sym": D^-1/2 A D^-1/2 (LightGCN, GCN); norm="mean": D^-1 A, each node the mean of its
    neighbours (MMGCN's mean aggregation). Isolated nodes (PAD, cold users / items) have empty rows.
    `n_items` >= train.n_items sizes the item block for a grown catalogue (new items are isolated).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    n_items = train.n_items if n_items is None else int(n_items)
    if n_items < train.n_items:
        raise ValueError(f"n_items ({n_items}) is smaller than the training catalogue ({train.n_items})")
    users, items = unique_pairs(train)
    n_nodes = train.n_users + 1 + n_items + 1
    item_nodes = items + train.n_users + 1
    rows = np.concatenate([users, item_nodes])  # [2P] both directions
    cols = np.concatenate([item_nodes, users])
    deg = np.bincount(rows, minlength=n_nodes).astype(np.float64)  # [V]
    if norm == "sym":
        inv = np.zeros_like(deg)
        inv[deg > 0] = deg[deg > 0] ** -0.5
        vals = inv[rows] * inv[cols]
    else:
        vals = 1.0 / deg[rows]
    idx = torch.from_numpy(np.stack([rows, cols]))
    with warnings.catch_warnings():  # torch flags sparse CSR as "beta" on every conversion
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(idx, torch.from_numpy(vals).float(), (n_nodes, n_nodes),
                                      check_invariants=True).coalesce()
        return Graph(coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr(), train.n_users, n_items)


class _SparseMM(torch.autograd.Function):
    """y = A @ x with grad_x = A^T @ grad_y, both as CSR products (torch's own CSR backward is slow)."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, transpose: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(transpose)
        return matrix @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:  # type: ignore[override]
        (transpose,) = ctx.saved_tensors
        return None, None, transpose @ grad


def sparse_propagate(graph: Graph, x: torch.Tensor) -> torch.Tensor:
    """[V, V] graph @ x [V, d] -> [V, d] (float32)."""
    return _SparseMM.apply(graph.matrix, graph.transpose, x.float())


# --- random split ----------------------------------------------------------------------------------


def random_split(
    inter: Interactions, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> Split:
    """Random per-user split: each user's events are shuffled and cut train : valid : test by `ratios`.

    Per user with n events: n_test = round(r_test * n), n_valid = round(r_valid * n), the rest train
    (at least one train event; short users lose valid / test events first). The history of a valid
    event is its user's training events; of a test event, training + valid events (chronological).
    So the evaluator masks exactly the items known before the held-out part, and a user's other
    held-out items stay candidates: per event, rank <= k means "in the user's top k", which is the
    per-user Recall@k / NDCG@k protocol of NGCF / LightGCN (averaged over events, not users).
    """
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
        raise ValueError(f"ratios must be three non-negative numbers that sum to 1, got {ratios}")
    rng = numpy_rng(seed, "random_split")
    n = len(inter)
    order = np.lexsort((rng.random(n), inter.user))  # events grouped by user, random order inside
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64) - inter.offsets[inter.user[order]]  # [E] shuffled position
    length = inter.seq_lengths()[inter.user]  # [E]
    n_test = np.floor(ratios[2] * length + 0.5).astype(np.int64)
    n_valid = np.floor(ratios[1] * length + 0.5).astype(np.int64)
    n_test = np.minimum(n_test, np.maximum(length - 1, 0))
    n_valid = np.minimum(n_valid, np.maximum(length - 1 - n_test, 0))
    n_train = length - n_valid - n_test
    part = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2)).astype(np.int8)
    train = inter.subset(part == 0)
    valid = _evalset(inter, part == 1, part == 0, train)
    test = _evalset(inter, part == 2, part <= 1, train)
    params = {"ratios": list(ratios), "seed": seed, "per_user": True,
              "history": "valid: the user's train events; test: train + valid events (chronological)"}
    return Split("random", train, valid, test, params)


def _evalset(inter: Interactions, events: np.ndarray, context: np.ndarray, train: Interactions) -> EvalSet:
    """Events `events` of `inter`, each with its user's `context` events (chronological) as history."""
    idx = np.flatnonzero(events)  # sorted by (user, ts, row) like `inter`
    ctx = inter.subset(context)
    users = inter.user[idx]
    starts, ends = ctx.offsets[users], ctx.offsets[users + 1]
    lengths = ends - starts
    offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    gather = concat_ranges(starts, lengths)
    return EvalSet(
        user=users.copy(),
        target=inter.item[idx].copy(),
        ts=inter.ts[idx].copy(),
        hist_offsets=offsets,
        hist_items=ctx.item[gather],
        hist_ts=ctx.ts[gather],
        cold_item=~(train.item_counts() > 0)[inter.item[idx]],
        cold_user=~(train.seq_lengths() > 0)[users],
    )

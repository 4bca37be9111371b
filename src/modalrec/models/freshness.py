"""A learned freshness prior: an additive logit per bucket of item age at the query time.

In time-ordered logs new items are what people take next, and an item with no training events has no
learned vector to say so. The prior adds `bias[bucket(age)]` to every item's score, where age = query time
- the item's launch time as known at the query (data/item_age.py: metadata launch once reached, else the
first event strictly before the query). It is shared by all users and scores every catalogue item,
interactions or not. Bucket 0 is "launch unknown at the query time" (not launched yet, or never seen);
buckets 1.. are ages below each edge in `EDGES_DAYS`, and the last one every older item.

The biases start where the training log puts them (`start_from`): each cell's log ratio of the share of
training events whose item sits in that cell at the event's time to the share of the loss catalogue that
sits there -- the logit a model with no other knowledge would give, and what ranking by launch date
exploits. Started at 0 the prior stays within a few hundredths of it while item-vector dot products
spread over several units, so freshness never changes a ranking; started at the log rates it does from
the first step, and training corrects it. Without `start_from` the biases start at 0 (no effect).

With `activity` (data/item_age.ItemActivity) the bias is a table over (age bucket, bucket of the item's
events in the `trend_days` whole days before the query: 0, 1, 2-3, 4-7, 8-15, 16+): a new item that people
have started to take is told apart from one nobody took, and from an old item with the same recent count.

The query time is the target event's time in training and evaluation (`SeqBatch.target_ts`), the time of
the request at serving (serving/recommender.py; items added there launch at their add time), and, without
one, the latest time the launch table knows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from modalrec.data.item_age import DAY, NEVER, ItemActivity, ItemLaunch

EDGES_DAYS = (1, 3, 7, 14, 30, 60, 120, 240, 365, 730, 1825)
TREND_EDGES = (1, 2, 4, 8, 16)


MAX_CELLS = 50_000_000  # events x catalogue items looked at when fitting the starting biases


class LaunchAges(nn.Module):
    """What both age modules share: the launch table, the age-bucket edges, the latest time the table knows
    (the query time when none is given), catalogue growth at serving, and an item's age bucket at a time."""

    def __init__(self, launch: ItemLaunch, edges_days: tuple[int, ...]) -> None:
        super().__init__()
        self.launch = launch
        self.register_buffer("edges", torch.tensor([d * DAY for d in edges_days], dtype=torch.int64), persistent=False)
        known = torch.cat([launch.metadata_ts, launch.first_event_ts])
        known = known[known != NEVER]
        self.reference_ts = int(known.max()) if known.numel() else 0

    def append_items(self, launch_ts: list[int]) -> None:
        """Items appended to the catalogue after training (a served catalogue's adds), launched at `launch_ts`."""
        self.launch = self.launch.extended(launch_ts)
        self.reference_ts = max([self.reference_ts, *launch_ts])

    def age_buckets(self, items: torch.Tensor, ts: torch.Tensor | None) -> torch.Tensor:
        """Age bucket of `items` at `ts` (broadcast; None = the reference time): 0 = launch unknown then,
        1 = younger than edges[0], ..., len(edges) + 1 = at least edges[-1]."""
        q = torch.tensor(self.reference_ts) if ts is None else ts
        age, known = self.launch.age_at(items, q.to(torch.int64))
        return torch.where(known, torch.bucketize(age, self.edges, right=True) + 1, 0)


class FreshnessPrior(LaunchAges):
    """`prior(items, query_ts)` -> bias of each item at each query time (broadcast like ItemLaunch.age_at).

    start_from: (event items [E], event times [E], catalogue items [C]) -- the training targets and the items
    the loss ranks them against -- to start each bias at its log event rate (see the module docstring).
    dim: also learn a vector per cell, dotted with the user state (`forward(..., state)`): how much an item's
    age and recent activity matter then depends on the user (some take new releases, some never do). The
    vectors start at 0.
    launched_only: the loss ranks each target against the items that exist at its time only (loss catalogue
    "launched"): the start rates count launched items only, and the "launch unknown" cells stay at 0 -- there
    the only such candidate is a target at its own first event, which would push them up without bound.
    """

    def __init__(self, launch: ItemLaunch, edges_days: tuple[int, ...] = EDGES_DAYS,
                 activity: ItemActivity | None = None, trend_days: int = 7,
                 start_from: tuple[Any, Any, Any] | None = None, dim: int | None = None,
                 launched_only: bool = False, id_axis: bool = False) -> None:
        super().__init__(launch, edges_days)
        self.launched_only = bool(launched_only)
        self.activity, self.trend_days = activity, int(trend_days)
        self.register_buffer("trend_edges", torch.tensor(TREND_EDGES), persistent=False)
        n_trend = 1 if activity is None else len(TREND_EDGES) + 1
        self.n_id = 2 if id_axis else 1  # id_axis: cells apart for items scored with / without an ID vector
        # [unknown, < e_0, ..., >= e_last] x (trend x [no ID vector, ID vector])
        self.bias = nn.Parameter(torch.zeros(len(edges_days) + 2, n_trend * self.n_id))
        start = torch.zeros_like(self.bias) if start_from is None else self.log_rates(*start_from)
        if id_axis:  # the rates count every event as scored with an ID vector; both halves start there
            start.view(len(start), n_trend, 2)[..., 0] = start.view(len(start), n_trend, 2)[..., 1]
        if self.launched_only:
            start[0] = 0.0
        self.register_buffer("start", start, persistent=False)
        self.vectors = nn.Parameter(torch.zeros(self.bias.numel(), dim)) if dim else None  # [cells, d]

    def trend(self, items: torch.Tensor, query_ts: torch.Tensor | None) -> torch.Tensor:
        """Bucket of each item's recent event count at `query_ts` (0 without activity)."""
        if self.activity is None:
            return torch.zeros((), dtype=torch.int64)
        q = torch.tensor(self.reference_ts) if query_ts is None else query_ts
        n = self.activity.recent(items, q.to(torch.int64), self.trend_days)
        return torch.bucketize(n, self.trend_edges, right=True)

    def cells(self, items: torch.Tensor, query_ts: torch.Tensor | None,
              has_id: torch.Tensor | None = None) -> torch.Tensor:
        """Flat index into `bias` of `items` at `query_ts` (broadcast); with the ID axis, `has_id` (bool,
        broadcast; None = every item) says which items are scored with an ID vector."""
        cell = self.age_buckets(items, query_ts) * self.bias.shape[1] + self.trend(items, query_ts) * self.n_id
        if self.n_id == 1:
            return cell
        return cell + (1 if has_id is None else has_id.long())

    def forward(self, items: torch.Tensor, query_ts: torch.Tensor | None,
                state: torch.Tensor | None = None, has_id: torch.Tensor | None = None) -> torch.Tensor:
        """Bias of `items` at `query_ts` (broadcast), plus, with per-cell vectors and `state` [B, d] (row b the
        user whose query is row b of the result), state . vector of the item's cell. `has_id`: see `cells`."""
        cells = self.cells(items, query_ts, has_id)
        bias, vectors = self.bias, self.vectors
        if self.launched_only:  # the "launch unknown" row stays where it started (see the class docstring)
            bias = torch.cat([bias[:1].detach(), bias[1:]])
            if vectors is not None:
                n = bias.shape[1]
                vectors = torch.cat([vectors[:n].detach(), vectors[n:]])
        out = bias.flatten()[cells]
        if vectors is None or state is None:
            return out
        per = state @ vectors.T  # [B, cells]
        if cells.dim() == 1 and query_ts is not None and query_ts.dim() == 1:  # one item per row: [B]
            return out + per.gather(1, cells[:, None])[:, 0]
        return out + per.gather(1, cells.expand(len(state), -1))  # [B, C] (or [M, K])

    @torch.no_grad()
    def log_rates(self, event_items: Any, event_ts: Any, catalogue: Any, chunk: int = 1024) -> torch.Tensor:
        """log((events in cell + 1) / (expected events in cell + 1)) per bias cell, where an event's expected
        count in a cell is the share of `catalogue` in that cell at the event's time. Evenly spaced events
        stand in for all of them when events x catalogue exceeds MAX_CELLS."""
        items = torch.as_tensor(np.asarray(event_items), dtype=torch.int64)
        ts = torch.as_tensor(np.asarray(event_ts), dtype=torch.int64)
        cat = torch.as_tensor(np.asarray(catalogue), dtype=torch.int64)
        n_cells = self.bias.numel()
        if len(items) == 0 or len(cat) == 0:
            return torch.zeros_like(self.bias)
        keep = max(1, MAX_CELLS // len(cat))
        if len(items) > keep:
            pick = torch.linspace(0, len(items) - 1, keep).round().long()
            items, ts = items[pick], ts[pick]
        hits = torch.bincount(self.cells(items, ts), minlength=n_cells).double()
        expected = torch.zeros(n_cells, dtype=torch.float64)
        for i in range(0, len(ts), chunk):
            c = self.cells(cat[None, :], ts[i : i + chunk, None])  # [chunk, C]
            if self.launched_only:  # each event's share over the items launched at its time
                known = (c >= self.bias.shape[1]).double()  # row 0 of the table = launch unknown
                w = known / known.sum(1, keepdim=True).clamp_min(1.0)
                expected += torch.bincount(c.flatten(), weights=w.flatten(), minlength=n_cells)
            else:
                expected += torch.bincount(c.flatten(), minlength=n_cells).double() / len(cat)
        return torch.log((hits + 1.0) / (expected + 1.0)).float().view_as(self.bias)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.bias.copy_(self.start)
            if self.vectors is not None:
                self.vectors.zero_()


class HistoryAge(LaunchAges):
    """`history_age(items [B, L], ts)` -> [B, L, d]: a learned vector per age bucket of each history item at the
    time the user took it (`ts`: the history's event times, [B, L]), added to the sequence model's input.

    The output prior above says how much a new item is worth to *this* user only through the user state
    (`FreshnessPrior(dim=...)`), and a state built from item vectors alone cannot tell that the user has just
    been taking new releases -- the strongest sign that the next item is new as well (ML-100K: 25% of events
    that follow a movie under 120 days old are on such a movie, 2-3% of all others). The age is the one
    ItemLaunch knows at the event (metadata launch once reached, else a first event strictly before it), so
    it is causal and one forward pass serves every target of a training window. Without history times
    (ad-hoc histories at serving) the age is taken at the query time (`query_ts` [B, 1]), else at the launch
    table's latest known time. Bucket 0 = launch unknown; PAD slots get 0.
    """

    def __init__(self, launch: ItemLaunch, dim: int, edges_days: tuple[int, ...] = EDGES_DAYS) -> None:
        super().__init__(launch, edges_days)
        self.embedding = nn.Embedding(len(edges_days) + 2, dim)  # [unknown, < e_0, ..., >= e_last]

    def buckets(self, items: torch.Tensor, ts: torch.Tensor | None, query_ts: torch.Tensor | None = None,
                ) -> torch.Tensor:
        """Age bucket [B, L] of each history item at its event time (or at the query time without one)."""
        if ts is None and query_ts is not None:
            ts = query_ts.reshape(-1, 1)
        return torch.where(items > 0, self.age_buckets(items, ts), 0)

    def forward(self, items: torch.Tensor, ts: torch.Tensor | None,
                query_ts: torch.Tensor | None = None) -> torch.Tensor:
        out = self.embedding(self.buckets(items, ts, query_ts))  # [B, L, d]
        return out * (items > 0)[..., None].to(out.dtype)

"""A learned freshness prior: an additive logit per bucket of item age at the query time.

In time-ordered logs new items are what people take next, and an item with no training events has no
learned vector to say so. The prior adds `bias[bucket(age)]` to every item's score, where age = query time
- the item's launch time as known at the query (data/item_age.py: metadata launch once reached, else the
first event strictly before the query). It is shared by all users and scores every catalogue item,
interactions or not. Bucket 0 is "launch unknown at the query time" (not launched yet, or never seen);
buckets 1.. are ages below each edge in `EDGES_DAYS`, and the last one every older item. All biases start
at 0, so an untrained prior changes nothing.

With `activity` (data/item_age.ItemActivity) the bias is a table over (age bucket, bucket of the item's
events in the `trend_days` whole days before the query: 0, 1, 2-3, 4-7, 8-15, 16+): a new item that people
have started to take is told apart from one nobody took, and from an old item with the same recent count.

The query time is the target event's time in training and evaluation (`SeqBatch.target_ts`) and, without
one (ad-hoc serving), the latest time the launch table knows.
"""

from __future__ import annotations

import torch
from torch import nn

from modalrec.data.item_age import DAY, NEVER, ItemActivity, ItemLaunch

EDGES_DAYS = (1, 3, 7, 14, 30, 60, 120, 240, 365, 730, 1825)
TREND_EDGES = (1, 2, 4, 8, 16)


class FreshnessPrior(nn.Module):
    """`prior(items, query_ts)` -> bias of each item at each query time (broadcast like ItemLaunch.age_at)."""

    def __init__(self, launch: ItemLaunch, edges_days: tuple[int, ...] = EDGES_DAYS,
                 activity: ItemActivity | None = None, trend_days: int = 7) -> None:
        super().__init__()
        self.launch, self.activity, self.trend_days = launch, activity, int(trend_days)
        self.register_buffer("edges", torch.tensor([d * DAY for d in edges_days], dtype=torch.int64), persistent=False)
        self.register_buffer("trend_edges", torch.tensor(TREND_EDGES), persistent=False)
        n_trend = 1 if activity is None else len(TREND_EDGES) + 1
        self.bias = nn.Parameter(torch.zeros(len(edges_days) + 2, n_trend))  # [unknown, < e_0, ..., >= e_last] x trend
        known = torch.cat([launch.metadata_ts, launch.first_event_ts])
        known = known[known != NEVER]
        self.reference_ts = int(known.max()) if known.numel() else 0

    def buckets(self, items: torch.Tensor, query_ts: torch.Tensor | None) -> torch.Tensor:
        """Bucket index of `items` at `query_ts` (broadcast; None = the reference time)."""
        q = torch.tensor(self.reference_ts) if query_ts is None else query_ts
        age, known = self.launch.age_at(items, q.to(torch.int64))
        return torch.where(known, torch.bucketize(age, self.edges, right=True) + 1, 0)

    def trend(self, items: torch.Tensor, query_ts: torch.Tensor | None) -> torch.Tensor:
        """Bucket of each item's recent event count at `query_ts` (0 without activity)."""
        if self.activity is None:
            return torch.zeros((), dtype=torch.int64)
        q = torch.tensor(self.reference_ts) if query_ts is None else query_ts
        n = self.activity.recent(items, q.to(torch.int64), self.trend_days)
        return torch.bucketize(n, self.trend_edges, right=True)

    def forward(self, items: torch.Tensor, query_ts: torch.Tensor | None) -> torch.Tensor:
        return self.bias[self.buckets(items, query_ts), self.trend(items, query_ts)]

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.bias.zero_()

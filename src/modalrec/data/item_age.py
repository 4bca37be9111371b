"""Item launch time and item age at prediction time, never looking past the prediction.

An item's launch time at query time t is what could be known at t:
- its metadata launch time (ItemTable.launch_ts: a release date, a `launch` column, the time an item was
  added to a served catalogue) once that time is <= t;
- else its first event in the log, once that event lies strictly before t (the event being predicted at t
  is not evidence of itself);
- the earlier of the two when both are known (an item can be consumed before its official release).
Otherwise the item is unseen at t and its age unknown. Logs without a clock (time = "order": positions in
each user's sequence are not comparable across users) give no log-derived launch time, only metadata.

Ages are seconds (query time - launch time, >= 0 where known). Tensors broadcast: `age_at(items [N],
query_ts [B, 1])` is [B, N].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modalrec.data.items import ItemTable

NEVER = int(np.iinfo(np.int64).max)  # launch time of an item with no metadata date / no event
CLOCKS = ("unix_seconds", "order")
DAY = 86_400


def taken_before(first_event_ts: torch.Tensor, query_ts: torch.Tensor) -> torch.Tensor:
    """An item's first event is evidence at a query only when it lies strictly before it: the event being
    predicted is not evidence of itself (NEVER is never before a real time). Broadcasts."""
    return first_event_ts < query_ts


@dataclass(frozen=True)
class ItemLaunch:
    """Per item index (row 0 = PAD): the metadata launch time and the first event time in the log."""

    metadata_ts: torch.Tensor  # [N + 1] int64, NEVER where the source gives none
    first_event_ts: torch.Tensor  # [N + 1] int64, NEVER where the item has no event (or the log has no clock)
    clock: str = "unix_seconds"

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {self.clock!r}")
        if self.metadata_ts.shape != self.first_event_ts.shape or self.metadata_ts.dim() != 1:
            raise ValueError("metadata_ts and first_event_ts must both be [n_items + 1]")

    @classmethod
    def from_log(cls, items: ItemTable, event_items: np.ndarray, event_ts: np.ndarray,
                 clock: str = "unix_seconds") -> ItemLaunch:
        """Metadata from `items`, first appearances from the events (item index, time) of the log."""
        n = len(items.vocab)
        meta = np.array([NEVER if t is None else int(t) for t in items.launch_ts], dtype=np.int64)
        first = np.full(n, NEVER, dtype=np.int64)
        if clock == "unix_seconds" and len(event_items):
            np.minimum.at(first, np.asarray(event_items, dtype=np.int64), np.asarray(event_ts, dtype=np.int64))
        meta[0] = first[0] = NEVER
        return cls(torch.from_numpy(meta), torch.from_numpy(first), clock)

    @classmethod
    def for_split(cls, split: Any, items: ItemTable, clock: str) -> ItemLaunch:
        """The log a split's models may know about: training events plus the VALID / TEST events (each
        usable only once it lies before a query). Items a split holds out of training (cold_item_fraction)
        therefore launch at their first VALID / TEST event, as new items would."""
        ev_items = np.concatenate([split.train.item, split.valid.target, split.test.target])
        ev_ts = np.concatenate([split.train.ts, split.valid.ts, split.test.ts])
        return cls.from_log(items, ev_items, ev_ts, clock)

    @property
    def n_items(self) -> int:
        return len(self.metadata_ts) - 1

    @property
    def from_metadata(self) -> torch.Tensor:  # [N + 1] bool
        return self.metadata_ts != NEVER

    def launch_at(self, items: Any, query_ts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(launch time int64, known bool) of `items` at `query_ts` (broadcast); NEVER where unknown."""
        items = torch.as_tensor(items, dtype=torch.int64)
        q = torch.as_tensor(query_ts, dtype=torch.int64, device=items.device)
        meta, first = self.metadata_ts.to(items.device)[items], self.first_event_ts.to(items.device)[items]
        meta_ok = meta <= q  # NEVER is never <= a real time
        first_ok = taken_before(first, q)
        never = torch.full_like(meta, NEVER)
        launch = torch.minimum(torch.where(meta_ok, meta, never), torch.where(first_ok, first, never))
        return launch, meta_ok | first_ok

    def age_at(self, items: Any, query_ts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(age in seconds int64, known bool) of `items` at `query_ts`; age is 0 where unknown."""
        launch, known = self.launch_at(items, query_ts)
        q = torch.as_tensor(query_ts, dtype=torch.int64, device=launch.device)
        return torch.where(known, q - torch.where(known, launch, q), torch.zeros_like(launch)), known

    def extended(self, launch_ts: Sequence[int | None]) -> ItemLaunch:
        """Launch times with new items appended (their metadata launch, e.g. the time they were added)."""
        new = torch.tensor([NEVER if t is None else int(t) for t in launch_ts], dtype=torch.int64)
        return ItemLaunch(torch.cat([self.metadata_ts, new]),
                          torch.cat([self.first_event_ts, torch.full_like(new, NEVER)]), self.clock)

    def describe(self) -> dict[str, Any]:
        real = slice(1, None)
        return {"clock": self.clock, "items_with_metadata_launch": int(self.from_metadata[real].sum()),
                "items_with_events": int((self.first_event_ts[real] != NEVER).sum()),
                "rule": "metadata launch once <= query time, else first event strictly before the query time"}


@dataclass(frozen=True)
class ItemActivity:
    """How many events each item had in the days before a query time: `cum[d, i]` = events of item i on
    days < d (day 0 = the log's first day). Only whole days strictly before the query's day count, so the
    event being predicted -- and anything later -- is never evidence. Logs without a clock have none."""

    cum: torch.Tensor  # [D + 1, N + 1] int32
    start_ts: int  # unix seconds of day 0

    @classmethod
    def from_log(cls, n_items: int, event_items: np.ndarray, event_ts: np.ndarray) -> ItemActivity:
        ts = np.asarray(event_ts, dtype=np.int64)
        start = int(ts.min()) if len(ts) else 0
        day = (ts - start) // DAY
        counts = np.zeros((int(day.max()) + 1 if len(ts) else 1, n_items + 1), dtype=np.int32)
        np.add.at(counts, (day, np.asarray(event_items, dtype=np.int64)), 1)
        cum = np.zeros((len(counts) + 1, n_items + 1), dtype=np.int32)
        np.cumsum(counts, axis=0, out=cum[1:])
        return cls(torch.from_numpy(cum), start)

    @classmethod
    def for_split(cls, split: Any) -> ItemActivity:
        """The same log as ItemLaunch.for_split: training events plus the VALID / TEST events."""
        return cls.from_log(split.n_items, np.concatenate([split.train.item, split.valid.target, split.test.target]),
                            np.concatenate([split.train.ts, split.valid.ts, split.test.ts]))

    def recent(self, items: Any, query_ts: Any, days: int) -> torch.Tensor:
        """Events of `items` in the `days` whole days before the query's day (broadcast, int64)."""
        items = torch.as_tensor(items, dtype=torch.int64)
        q = torch.as_tensor(query_ts, dtype=torch.int64, device=items.device)
        last = len(self.cum) - 1
        d = (q - self.start_ts) // DAY  # the query's day; the window is days [d - days, d)
        cum = self.cum.to(items.device)
        safe = items.clamp(max=cum.shape[1] - 1)  # items added after the log have no events
        n = (cum[d.clamp(0, last), safe] - cum[(d - days).clamp(0, last), safe]).long()
        return torch.where(items < cum.shape[1], n, torch.zeros_like(n))

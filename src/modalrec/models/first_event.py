"""ID vectors that count only once an item has been taken: the causal half of a hybrid item's score.

A hybrid item vector is content + ID, and the ID row is trained on every event of the item, including
events after the query being trained. Scored with it at every training query, an item is known by its
future popularity before anyone has taken it -- while at prediction time an item without training events
has no ID row at all, so the model never learns how to rank such an item, and training pushes new items
down (benchmarks/cold_erosion_ml100k.py). With `id_scores="after_first_event"` (SASRec) an item's score is

    state . content(i) + [item i had an event strictly before the query] * state . id(i) + prior(i, t)

in training, evaluation and serving alike: until its first event every item is scored as a new item is at
prediction time (content and the freshness prior), and a first event in training is a target that teaches
exactly that. The history items' input vectors keep content + ID (the hybrid tower unchanged).
"""

from __future__ import annotations

import torch
from torch import nn

from modalrec.data.item_age import ItemLaunch, taken_before


class FirstEventGate(nn.Module):
    """`gate(items, query_ts)` -> bool, broadcast: the item had an event strictly before the query time.

    First events come from the split's log (ItemLaunch.first_event_ts: training, VALID and TEST events, each
    evidence only for later queries). Without a query time every item with an event counts; items appended
    after training (a served catalogue's adds) have none.
    """

    def __init__(self, launch: ItemLaunch) -> None:
        super().__init__()
        self.register_buffer("first_event_ts", launch.first_event_ts.clone(), persistent=False)  # [N0 + 1]

    def forward(self, items: torch.Tensor, query_ts: torch.Tensor | None) -> torch.Tensor:
        known = items < len(self.first_event_ts)
        first = self.first_event_ts[torch.where(known, items, 0)]  # row 0 (PAD) never has an event
        q = first.new_full((), torch.iinfo(torch.int64).max) if query_ts is None else query_ts.to(torch.int64)
        return known & taken_before(first, q)


def gated_id_scores(state: torch.Tensor, ids: torch.Tensor, gate: torch.Tensor, per_row: bool) -> torch.Tensor:
    """state . id per (query, item), zero where the gate is shut.

    Shapes as the freshness prior's: `per_row`, ids [M, d] for one item per row of state [M, d] -> [M];
    else ids [C, d] for an item list shared by every row -> [B, C], or ids [M, K, d] per row -> [M, K]. The
    gate broadcasts against the result.
    """
    if per_row:
        dots = (state * ids).sum(-1)
    elif ids.dim() == 3:
        dots = torch.einsum("md,mkd->mk", state, ids)
    else:
        dots = state @ ids.T
    return dots * gate.to(dots.dtype)


class ImputedIDScore(nn.Module):
    """The ID part a hybrid item without an ID vector is scored with, per user: the user's mean ID score over the
    items that have ID vectors plus `k` of that score's standard deviations (SASRec new_item_offset_unit
    'id_spread'): `state . mu + k * sqrt(state' S state)`, mu and S the mean and covariance of the ID rows.

    A constant new-item offset lifts new items by the same logits for every user, though users' ID scores spread
    differently (a confident state separates the items it has seen more widely), so the constant that lets new
    items compete for one user floods another's list with them. In these units a new item's ID part sits at the
    same place in each user's own ID score distribution. Measured on ML-100K (benchmarks/cold_start.py, `_spread`)
    it ranks new items as the constant does and costs the users with 5-19 earlier events as much: there the cost
    is the share of new items in the list, not the users' scales. The moments depend on the ID rows only:
    computed once per version of the weights, not per call (serving scores one user at a time).
    """

    def __init__(self) -> None:
        super().__init__()
        self._key: tuple[int, int] | None = None
        self._mean: torch.Tensor | None = None
        self._cov: torch.Tensor | None = None

    def forward(self, state: torch.Tensor, id_table: torch.Tensor, has_id: torch.Tensor, k: float) -> torch.Tensor:
        """state [..., d], id_table [N + 1, d] (the ID embedding's weight), has_id [N + 1] (the rows that are ID
        vectors) -> [...]."""
        mean, cov = self._moments(id_table, has_id)
        spread = torch.einsum("...d,de,...e->...", state, cov, state).clamp(min=0.0).sqrt()
        return state @ mean + k * spread

    def _moments(self, id_table: torch.Tensor, has_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (id_table.data_ptr(), id_table._version)  # an optimiser step or a weight load bumps the version
        if key != self._key or self._mean is None or self._cov is None:
            rows = id_table.detach()[has_id].to(torch.float32)
            self._mean = rows.mean(0)
            centred = rows - self._mean
            self._cov = centred.T @ centred / max(len(rows), 1)
            self._key = key
        return self._mean, self._cov

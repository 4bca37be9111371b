"""MM-TGN state: per-node memory with a GRU/RNN updater, the raw-message store, message function and
aggregator, and the tensorised most-recent-neighbour buffer. No per-node Python dicts or loops.

Memory protocol (Rossi et al. 2020, "memory update at start"): an event (u, i, t) produces one raw
message for u and one for i, built from the endpoints' memories *as of before the event's batch*. The
messages stay pending; a node's memory as seen by a later batch is `updater(aggregate(pending), memory)`,
computed with gradients, so the loss of batch t trains the message function and the updater. A node's
pending messages are applied and persisted (detached) when the node takes part in a batch, right before
that batch's own messages are stored. Everything a batch is scored with therefore comes from earlier
batches only.

Memory of a node that has never taken part in a batch ("fresh") is zero, or, when `view` / `commit` get an
`init` function, init(node) computed with gradients (MM-TGN: a projection of the item's content), so the
first message a new item sends to its user already carries what the item is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.models.tgn.embedding import Neighbors, TimeEncoder, mlp


class NeighborBuffer(nn.Module):
    """Ring buffer of the k most recent neighbours of every node: ids, times, event index."""

    STATE = ("ids", "ts", "eidx", "count")

    def __init__(self, n_nodes: int, k: int) -> None:
        super().__init__()
        self.k = int(k)
        self.register_buffer("ids", torch.zeros(n_nodes, k, dtype=torch.int64), persistent=False)
        self.register_buffer("ts", torch.zeros(n_nodes, k, dtype=torch.float64), persistent=False)
        self.register_buffer("eidx", torch.full((n_nodes, k), -1, dtype=torch.int64), persistent=False)
        self.register_buffer("count", torch.zeros(n_nodes, dtype=torch.int64), persistent=False)  # events ever inserted

    def reset(self) -> None:
        self.ids.zero_()
        self.ts.zero_()
        self.eidx.fill_(-1)
        self.count.zero_()

    def grow(self, n_nodes: int) -> None:
        extra = n_nodes - self.ids.shape[0]
        for name in self.STATE:
            t = getattr(self, name)
            pad = torch.full((extra, *t.shape[1:]), -1 if name == "eidx" else 0, dtype=t.dtype, device=t.device)
            setattr(self, name, torch.cat([t, pad]))

    @torch.no_grad()
    def insert(self, src: torch.Tensor, dst: torch.Tensor, ts: torch.Tensor, eidx: torch.Tensor) -> None:
        """Add events (chronological) in both directions: src gains dst as neighbour and dst gains src."""
        e = src.shape[0]
        if e == 0:
            return
        node = torch.stack([src, dst], 1).reshape(-1)  # [2E] interleaved keeps event order per node
        other = torch.stack([dst, src], 1).reshape(-1)  # [2E]
        t2 = ts.to(torch.float64).repeat_interleave(2)  # [2E]
        e2 = eidx.repeat_interleave(2)  # [2E]
        order = torch.sort(node, stable=True).indices  # group by node, chronological inside a group
        node, other, t2, e2 = node[order], other[order], t2[order], e2[order]
        uniq, counts = torch.unique_consecutive(node, return_counts=True)  # [U]
        starts = torch.cumsum(counts, 0) - counts  # [U]
        c = counts.repeat_interleave(counts)  # [2E] group size per entry
        j = torch.arange(node.shape[0], device=node.device) - starts.repeat_interleave(counts)  # rank in group
        keep = j >= c - self.k  # only the last k of a group survive; avoids duplicate writes to a slot
        slot = (self.count[node] + j) % self.k  # [2E]
        n_k, s_k = node[keep], slot[keep]
        self.ids[n_k, s_k] = other[keep]
        self.ts[n_k, s_k] = t2[keep]
        self.eidx[n_k, s_k] = e2[keep]
        self.count.index_add_(0, uniq, counts)

    def get(self, nodes: torch.Tensor) -> Neighbors:
        """Neighbours of `nodes` ([B]) oldest -> newest, right-aligned ([B, k])."""
        j = torch.arange(self.k, device=nodes.device)  # [k]
        cnt = self.count[nodes]  # [B]
        slot = (cnt.unsqueeze(1) - self.k + j) % self.k  # [B, k] oldest .. newest
        mask = j.unsqueeze(0) >= (self.k - cnt.clamp(max=self.k)).unsqueeze(1)  # [B, k]
        rows = nodes.unsqueeze(1)
        ids = torch.where(mask, self.ids[rows, slot], torch.zeros_like(slot))
        eidx = torch.where(mask, self.eidx[rows, slot], torch.full_like(slot, -1))
        return Neighbors(ids, self.ts[rows, slot] * mask, eidx, mask)


class TGNMemory(nn.Module):
    """Memory [n_nodes, dim] + last-update times + pending raw messages, with the learnable message
    function ("mlp" or "identity"), aggregator ("last" or "mean") and updater ("gru" or "rnn")."""

    def __init__(
        self, n_nodes: int, dim: int, time_dim: int, message: str = "mlp",
        aggregator: str = "last", updater: str = "gru", time_encoding: str = "log",
    ) -> None:
        super().__init__()
        if aggregator not in ("last", "mean"):
            raise ConfigError(f"aggregator must be 'last' or 'mean', got {aggregator!r}")
        self.aggregator, self.dim = aggregator, int(dim)
        self.time_enc = TimeEncoder(time_dim, time_encoding)
        raw_dim = 2 * dim + time_dim  # [m_self, m_other, phi(dt)]
        if message == "mlp":
            self.msg_fn: nn.Module = mlp(raw_dim, dim, dim)
            msg_dim = dim
        elif message == "identity":
            self.msg_fn, msg_dim = nn.Identity(), raw_dim
        else:
            raise ConfigError(f"message must be 'mlp' or 'identity', got {message!r}")
        if updater == "gru":
            self.updater: nn.Module = nn.GRUCell(msg_dim, dim)
        elif updater == "rnn":
            self.updater = nn.RNNCell(msg_dim, dim)
        else:
            raise ConfigError(f"updater must be 'gru' or 'rnn', got {updater!r}")
        self.register_buffer("memory", torch.zeros(n_nodes, dim), persistent=False)
        self.register_buffer("last_update", torch.zeros(n_nodes, dtype=torch.float64), persistent=False)
        self.register_buffer("touched", torch.zeros(n_nodes, dtype=torch.bool), persistent=False)  # memory persisted
        # pending raw messages, flat and chronological: node [M], raw [M, 2d], dt [M], ts [M]
        self.register_buffer("p_node", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("p_raw", torch.zeros(0, 2 * dim), persistent=False)
        self.register_buffer("p_dt", torch.zeros(0), persistent=False)
        self.register_buffer("p_ts", torch.zeros(0, dtype=torch.float64), persistent=False)

    STATE = ("memory", "last_update", "touched", "p_node", "p_raw", "p_dt", "p_ts")

    def reset(self) -> None:
        self.memory = torch.zeros_like(self.memory)
        self.last_update = torch.zeros_like(self.last_update)
        self.touched = torch.zeros_like(self.touched)
        self.p_node, self.p_raw = self.p_node[:0], self.p_raw[:0]
        self.p_dt, self.p_ts = self.p_dt[:0], self.p_ts[:0]

    def grow(self, n_nodes: int) -> None:
        extra = n_nodes - self.memory.shape[0]
        self.memory = torch.cat([self.memory, self.memory.new_zeros(extra, self.dim)])
        self.last_update = torch.cat([self.last_update, self.last_update.new_zeros(extra)])
        self.touched = torch.cat([self.touched, self.touched.new_zeros(extra)])

    def _aggregate(self, sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Aggregate the pending messages at positions `sel` ([S]) -> (nodes [U], message [U, m], ts [U])."""
        node = self.p_node[sel]  # [S]
        n = self.memory.shape[0]
        pos = torch.arange(node.shape[0], device=node.device)
        last = torch.full((n,), -1, dtype=torch.int64, device=node.device).scatter_reduce(0, node, pos, "amax")
        nodes = (last >= 0).nonzero().squeeze(1)  # [U] sorted node ids
        pick = sel[last[nodes]]  # latest message of each node (store is chronological)
        if self.aggregator == "last":
            raw = torch.cat([self.p_raw[pick], self.time_enc(self.p_dt[pick])], dim=-1)  # [U, raw]
            return nodes, self.msg_fn(raw), self.p_ts[pick]
        raw = torch.cat([self.p_raw[sel], self.time_enc(self.p_dt[sel])], dim=-1)  # [S, raw]
        msg = self.msg_fn(raw)  # [S, m]
        inv = torch.searchsorted(nodes, node)  # [S] position of each message's node in `nodes`
        total = msg.new_zeros(nodes.shape[0], msg.shape[1]).index_add(0, inv, msg)  # [U, m]
        cnt = torch.bincount(inv, minlength=nodes.shape[0]).clamp(min=1).unsqueeze(1).to(msg.dtype)
        return nodes, total / cnt, self.p_ts[pick]

    def view(
        self, nodes: torch.Tensor | None = None, init: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory [N, d] and last-update [N] with pending messages applied (for `nodes` only, or all), fresh
        nodes among them starting from `init(fresh)` ([F] -> [F, d]) instead of zero. Differentiable w.r.t.
        the message function, updater and `init`; the stored state is not changed."""
        base = self.memory
        if init is not None:
            want = ~self.touched if nodes is None else torch.zeros_like(self.touched).index_fill_(0, nodes, True)
            fresh = (want & ~self.touched).nonzero().squeeze(1)  # [F]
            if fresh.numel():
                base = base.index_copy(0, fresh, init(fresh).to(base.dtype))
        if nodes is None:
            sel = torch.arange(self.p_node.shape[0], device=self.p_node.device)
        else:
            sel = torch.isin(self.p_node, nodes).nonzero().squeeze(1)  # [S]
        if sel.numel() == 0:
            return base, self.last_update
        upd_nodes, msg, ts = self._aggregate(sel)
        new = self.updater(msg, base[upd_nodes]).to(base.dtype)  # [U, d] (fp32 under autocast)
        return base.index_copy(0, upd_nodes, new), self.last_update.index_copy(0, upd_nodes, ts)

    @torch.no_grad()
    def commit(
        self, src: torch.Tensor, dst: torch.Tensor, ts: torch.Tensor,
        init: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """After a batch was scored: persist the pending messages of its nodes, then store its own messages."""
        batch_nodes = torch.unique(torch.cat([src, dst]))
        mem, last = self.view(batch_nodes, init)
        self.memory[batch_nodes] = mem[batch_nodes].detach()
        self.last_update[batch_nodes] = last[batch_nodes]
        self.touched[batch_nodes] = True
        keep = ~torch.isin(self.p_node, batch_nodes)
        t = ts.to(torch.float64)
        m_s, m_d = self.memory[src], self.memory[dst]  # [E, d]
        raw = torch.stack([torch.cat([m_s, m_d], -1), torch.cat([m_d, m_s], -1)], 1).flatten(0, 1)  # [2E, 2d]
        dt = torch.stack([t - self.last_update[src], t - self.last_update[dst]], 1).flatten()  # [2E]
        self.p_node = torch.cat([self.p_node[keep], torch.stack([src, dst], 1).flatten()])
        self.p_raw = torch.cat([self.p_raw[keep], raw])
        self.p_dt = torch.cat([self.p_dt[keep], dt.to(self.p_dt.dtype)])
        self.p_ts = torch.cat([self.p_ts[keep], t.repeat_interleave(2)])

"""Next-item losses as pure tensor functions, the negative sampler, and the loss module models share.

Conventions: M = scored positions (PAD targets already dropped unless stated), N = real items,
K = negatives, U = distinct candidate items in a batch. Item index 0 is PAD: never a target, never a
negative, never a candidate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.errors import ConfigError
from modalrec.seeding import derive_seed

LOSSES = ("ce", "sampled", "bce", "bpr", "inbatch")
CATALOGUES = ("train", "all", "launched")
LAUNCHED_LOSSES = ("ce", "sampled")  # the losses that mask items not launched at the event
NEGATIVES = ("uniform", "popularity")
POPULARITY_SCOPES = ("all", "items")  # what the training-only popularity term is added for
DEFAULT_NEGATIVES = {"sampled": 100, "bce": 1, "bpr": 1}


def full_softmax_ce(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = 0, pad_column: bool = True
) -> torch.Tensor:
    """Cross-entropy over the whole catalogue; PAD never gets probability mass.

    logits [..., N + 1] with column 0 = PAD (pad_column=True), or [..., N] for items 1..N
    (pad_column=False: cheaper, no PAD column to drop); targets [...] item indices, entries equal to
    `ignore_index` (PAD) are skipped.
    """
    logits = logits.reshape(-1, logits.shape[-1])  # [P, N + 1] or [P, N]
    targets = targets.reshape(-1)  # [P]
    keep = targets != ignore_index
    if not bool(keep.all()):
        logits, targets = logits[keep], targets[keep]  # [M, ...], [M]
    if targets.numel() == 0:
        return logits.sum() * 0.0  # no targets: zero loss that still has a graph
    if pad_column:
        logits = logits[:, 1:]  # same as masking PAD with -inf  [M, N]
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets - 1)


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Full-catalogue softmax CE computed in row chunks, gradients formed during the forward pass.

    Never materialises the [M, N] logits: each chunk's softmax becomes its gradient right away
    (d loss / d logits = softmax - target distribution), so memory is one chunk and the big [M, N]
    buffers (logits, log-probs, their gradients) are never allocated. About 2x faster on CPU than
    autograd through `full_softmax_ce`, and it makes catalogues of 10^5+ items trainable.
    With label smoothing eps the target distribution is (1 - eps) * onehot + eps / N, as in
    `F.cross_entropy(label_smoothing=eps)`.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, table: torch.Tensor, cols: torch.Tensor, chunk: int,  # type: ignore[override]
                smoothing: float) -> torch.Tensor:
        m, n = h.shape[0], table.shape[0]  # h [M, d], table [N, d], cols [M] in 0..N-1
        want_grad = any(ctx.needs_input_grad[:2])
        grad_h = torch.empty_like(h) if want_grad else None  # [M, d]
        acc = torch.promote_types(h.dtype, torch.float32)  # fp32 softmax under AMP, fp64 stays fp64
        grad_t = torch.zeros(table.shape, dtype=acc, device=table.device) if want_grad else None
        total = torch.zeros((), dtype=acc, device=h.device)
        rows = torch.arange(min(chunk, m), device=h.device)
        for lo in range(0, m, chunk):
            hc, cc = h[lo : lo + chunk], cols[lo : lo + chunk]  # [C, d], [C]
            r = rows[: len(cc)]
            logp = torch.log_softmax((hc @ table.T).to(acc), dim=1)  # [C, N]
            total -= (1.0 - smoothing) * logp[r, cc].sum()
            if smoothing:
                total -= smoothing / n * logp.sum()
            if want_grad:
                p = logp.exp_()  # softmax, in place  [C, N]
                if smoothing:
                    p -= smoothing / n
                p[r, cc] -= 1.0 - smoothing  # d loss / d logits = softmax - target distribution
                p = p.to(h.dtype)
                grad_h[lo : lo + chunk] = p @ table  # [C, d]
                grad_t.addmm_(p.T.to(grad_t.dtype), hc.to(grad_t.dtype))  # [N, d]
        if want_grad:
            ctx.save_for_backward(grad_h / m, (grad_t / m).to(table.dtype))
        return total / m

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_h, grad_t = ctx.saved_tensors
        return grad_h * grad_out, grad_t * grad_out, None, None, None


def chunked_softmax_ce(
    states: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    budget: int = 2**20,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean CE of `targets` under softmax(states @ table.T), equal to `full_softmax_ce` on those logits.

    states [M, d], table [N, d] = vectors of items 1..N (no PAD row), targets [M] item indices in 1..N
    (no PAD). Rows are processed in chunks of about `budget` logits. `label_smoothing` eps moves eps of
    each target's probability mass evenly onto all N items (`F.cross_entropy`'s definition).
    """
    if targets.numel() == 0:
        return states.sum() * 0.0
    chunk = max(64, budget // max(table.shape[0], 1))
    return _ChunkedSoftmaxCE.apply(states, table, targets - 1, chunk, float(label_smoothing))


def sampled_softmax_ce(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q_pos: torch.Tensor | None = None,
    log_q_neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax over {target} + K sampled negatives, with the logQ correction (logit - log q(item)).

    pos_logits [M], neg_logits [M, K], targets [M], negatives [K] (shared) or [M, K];
    log_q_pos [M] and log_q_neg [K] or [M, K] are log sampling probabilities (None = uniform, no-op).
    A negative that equals the row's target (an accidental hit) is masked out.
    """
    pos = pos_logits.float()  # [M]
    neg = neg_logits.float()  # [M, K]
    if log_q_pos is not None and log_q_neg is not None:
        pos = pos - log_q_pos
        neg = neg - log_q_neg  # broadcasts [K] over rows
    hit = negatives.reshape(-1, negatives.shape[-1]) == targets[:, None]  # [M, K] or [1->M, K]
    neg = neg.masked_fill(hit, float("-inf"))
    logits = torch.cat([pos[:, None], neg], dim=1)  # [M, 1 + K]
    labels = torch.zeros(len(pos), dtype=torch.long, device=pos.device)  # the target is column 0
    return F.cross_entropy(logits, labels)


def _smoothed_ce(logits: torch.Tensor, cols: torch.Tensor, allowed: torch.Tensor, eps: float) -> torch.Tensor:
    """CE with label smoothing eps spread over each row's allowed columns only (others are -inf logits)."""
    logp = torch.log_softmax(logits, dim=-1)  # [M, C]
    nll = -logp.gather(1, cols[:, None])[:, 0]  # [M]
    spread = -(logp.masked_fill(~allowed, 0.0).sum(-1)) / allowed.sum(-1)  # [M]
    return ((1 - eps) * nll + eps * spread).mean()


def batch_candidates(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct target items of a batch and each row's column among them.

    targets [M] -> (items [U], column [M]). Using distinct items removes duplicate (accidental-hit)
    positives, which plain in-batch negatives would count as negatives.
    """
    items, column = torch.unique(targets, sorted=True, return_inverse=True)
    return items, column


def inbatch_debiased_ce(
    logits: torch.Tensor,
    target_col: torch.Tensor,
    log_q: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """In-batch softmax with logQ popularity correction: softmax_j(s_ij / t - log q(j)).

    logits [M, U] scores of every row against the batch's distinct targets, target_col [M] in 0..U-1,
    log_q [U] log probability that item j appears in a batch (∝ its training frequency).
    Popular items appear as negatives more often; subtracting log q undoes that bias.
    """
    z = logits.float() / temperature  # [M, U]
    if log_q is not None:
        z = z - log_q[None, :]
    return F.cross_entropy(z, target_col)


def bpr(
    pos_logits: torch.Tensor, neg_logits: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Bayesian personalised ranking: mean of -log sigmoid(pos - neg).

    pos_logits [M], neg_logits [M] or [M, K], valid (same shape as neg) masks out accidental hits.
    """
    neg = neg_logits.float()
    if neg.dim() == 1:
        neg = neg[:, None]  # [M, 1]
    loss = -F.logsigmoid(pos_logits.float()[:, None] - neg)  # [M, K]
    if valid is None:
        return loss.mean()
    valid = valid.reshape(loss.shape).to(loss.dtype)
    return (loss * valid).sum() / valid.sum().clamp_min(1.0)


def bce(
    pos_logits: torch.Tensor, neg_logits: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy with sampled negatives (original SASRec): -log σ(pos) - mean_k log σ(-neg_k).

    pos_logits [M], neg_logits [M] or [M, K]; with K = 1 this is exactly SASRec's loss. `valid` [M, K]
    masks accidental hits (a negative equal to the target).
    """
    neg = neg_logits.float()
    if neg.dim() == 1:
        neg = neg[:, None]  # [M, 1]
    pos_term = F.softplus(-pos_logits.float())  # [M] = -log σ(pos)
    neg_term = F.softplus(neg)  # [M, K] = -log σ(-neg)
    if valid is None:
        return (pos_term + neg_term.mean(dim=1)).mean()
    valid = valid.reshape(neg_term.shape).to(neg_term.dtype)
    neg_mean = (neg_term * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)  # [M]
    return (pos_term + neg_mean).mean()


class NegativeSampler:
    """Draws negative item indices in 1..N, uniformly or ∝ count^alpha, from its own torch.Generator.

    The generator lives on the CPU (samples are moved to the model's device) so the stream is the same
    on every device; `reseed` restarts it (the training loop reseeds at every epoch, for resumability).
    """

    def __init__(
        self,
        n_items: int,
        kind: str = "uniform",
        counts: np.ndarray | None = None,
        alpha: float = 1.0,
        seed: int = 0,
    ) -> None:
        if kind not in NEGATIVES:
            raise ConfigError(f"negatives must be one of {NEGATIVES}, got {kind!r}")
        self.n_items, self.kind = int(n_items), kind
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(derive_seed(seed, "negatives"))
        self.probs: torch.Tensor | None = None  # [N] over items 1..N
        if kind == "popularity":
            if counts is None:
                raise ConfigError(
                    "popularity negatives need train item counts (ModelContext.train_item_counts)"
                )
            w = torch.as_tensor(np.asarray(counts[1 : n_items + 1], dtype=np.float64)) ** alpha  # [N]
            if float(w.sum()) <= 0:
                raise ConfigError("popularity negatives: every train item count is zero")
            self.probs = w / w.sum()
        elif counts is not None:  # uniform over the training catalogue: items absent from training did not
            w = torch.as_tensor(np.asarray(counts[1 : n_items + 1]) > 0, dtype=torch.float64)  # exist yet
            if 0 < float(w.sum()) < n_items:
                self.probs = w / w.sum()

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(derive_seed(seed, "negatives"))

    def sample(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
        """int64 item indices of `shape`, in 1..N."""
        n = math.prod(shape)
        if self.probs is None:
            out = torch.randint(1, self.n_items + 1, (n,), generator=self.generator)
        else:
            out = torch.multinomial(self.probs, n, replacement=True, generator=self.generator) + 1
        return out.reshape(shape).to(device)

    def log_q(self, items: torch.Tensor) -> torch.Tensor:
        """Log sampling probability of each item (same shape as `items`)."""
        if self.probs is None:
            return torch.full(items.shape, -math.log(self.n_items), device=items.device)
        logp = torch.log(self.probs.clamp_min(1e-30)).to(device=items.device, dtype=torch.float32)  # [N]
        return logp[(items - 1).clamp_min(0)]


def frequency_log_q(counts: np.ndarray | None, n_items: int) -> torch.Tensor:
    """[N + 1] log of each item's share of training events (the in-batch sampling probability).

    Without counts every item is equally likely (a constant, so the correction is a no-op).
    """
    if counts is None:
        return torch.full((n_items + 1,), -math.log(max(n_items, 1)))
    c = torch.as_tensor(np.asarray(counts, dtype=np.float64)).clamp_min(1.0)  # unseen items: as if seen once
    return torch.log(c / c.sum()).float()


class NextItemLoss(nn.Module):
    """The loss every sequence model shares: states at each position vs. the next item.

    kind: "ce" (full softmax over the catalogue), "sampled" (softmax over K shared negatives, logQ),
    "bce" / "bpr" (K negatives per position), "inbatch" (batch's distinct targets, logQ debiased).
    catalogue: "train" scores targets against items with training events only; "all" against every item
    (softmax classes and negatives), so items launched after training are pushed down where they do not
    fit -- and a freshness prior learns what "not launched yet" means; "launched" against every item that
    exists at the event's time (`launch`, data/item_age.ItemLaunch: metadata launch <= the event, else a first
    event strictly before it), plus the target: an item is never a negative before it exists, so a model
    is not taught to push down what nobody could have taken yet ("ce" and "sampled"; needs the event times).
    `forward(..., prior, query_ts)` adds `prior(items, query_ts, states)` (models/freshness.py) to every logit.
    popularity ("ce" only): add popularity x log(training frequency) to every training logit (items without
    training events count as one event). The fixed term explains the training log's popularity, so item vectors
    learn the preference left over; evaluation and serving do not add it, so items without training events are
    not ranked below every item that had them. popularity_scope "items" (with a freshness prior): the item
    vectors learn with that term and without the prior, and the prior learns with the item vectors fixed and
    without the term -- one loss each, summed -- so popularity at prediction time comes from the prior's causal
    recent-activity cells instead of vanishing with the term.
    """

    def __init__(
        self,
        kind: str,
        n_items: int,
        n_negatives: int | None = None,
        negatives: str = "uniform",
        counts: np.ndarray | None = None,
        seed: int = 0,
        label_smoothing: float = 0.0,
        catalogue: str = "train",
        launch: Any = None,
        popularity: float = 0.0,
        popularity_scope: str = "all",
    ) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {kind!r}")
        if catalogue not in CATALOGUES:
            raise ConfigError(f"loss catalogue must be one of {CATALOGUES}, got {catalogue!r}")
        if catalogue == "launched" and (kind not in LAUNCHED_LOSSES or launch is None):
            raise ConfigError(f"loss catalogue 'launched' needs loss in {LAUNCHED_LOSSES} and item launch times "
                              f"(a log with a clock or item dates); got loss {kind!r}"
                              + ("" if launch is not None else " and no launch times"))
        self.catalogue, self.launch = catalogue, launch
        if popularity and kind != "ce":
            raise ConfigError(f"loss popularity applies to the full-softmax loss 'ce' only, not {kind!r}")
        if popularity < 0:
            raise ConfigError(f"loss popularity must be >= 0, got {popularity}")
        if popularity_scope not in POPULARITY_SCOPES:
            raise ConfigError(f"loss popularity scope must be one of {POPULARITY_SCOPES}, got {popularity_scope!r}")
        self.popularity, self.popularity_scope = float(popularity), popularity_scope
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if label_smoothing and kind != "ce":
            raise ConfigError(f"label_smoothing applies to the full-softmax loss 'ce' only, not {kind!r}")
        self.label_smoothing = float(label_smoothing)
        if n_negatives is None:  # sampled softmax needs many; SASRec's BCE (and BPR) use one per position
            n_negatives = DEFAULT_NEGATIVES.get(kind, 0)
        if kind in ("sampled", "bce", "bpr") and n_negatives < 1:
            raise ConfigError(f"loss {kind!r} needs n_negatives >= 1, got {n_negatives}")
        self.kind, self.n_items, self.n_negatives = kind, int(n_items), int(n_negatives)
        sampled_from = counts
        if catalogue != "train" and counts is not None:  # any item may be a negative: uniform over all, or +1 counts
            sampled_from = np.asarray(counts) + 1 if negatives == "popularity" else None
        self.sampler = NegativeSampler(n_items, negatives, sampled_from, seed=seed)
        # Not persistent: derived from the training data, so it is not part of the model's weights.
        self.register_buffer("log_q", frequency_log_q(counts, n_items), persistent=False)  # [N + 1]
        # Full softmax runs over the *training catalogue*: items with no training event (e.g. launched
        # later) never appear as negatives, otherwise a content tower learns to push "new-looking"
        # items down and cold-start ranking collapses. class_of maps item -> 1-based class (0 = not a class).
        classes = torch.arange(1, n_items + 1)
        if catalogue == "train" and counts is not None and (np.asarray(counts[1 : n_items + 1]) > 0).any():
            classes = torch.as_tensor(np.flatnonzero(np.asarray(counts[1 : n_items + 1]) > 0) + 1)
        class_of = torch.zeros(n_items + 1, dtype=torch.int64)
        class_of[classes] = torch.arange(1, len(classes) + 1)
        self.register_buffer("classes", classes, persistent=False)  # [C]
        self.register_buffer("class_of", class_of, persistent=False)  # [N + 1]

    def reseed(self, seed: int) -> None:
        self.sampler.reseed(seed)

    def _ce(self, logits: torch.Tensor, cls: torch.Tensor, t: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        """Full-softmax CE of logits [M, C] over `classes` (class indices `cls` [M], 1-based), masking the items
        not launched at each row's time with catalogue "launched"."""
        if self.needs_query_ts:  # items not launched at the event are no class there (the target always is)
            exists = self.launched(self.classes[None, :], q) | (self.classes[None, :] == t[:, None])  # [M, C]
            logits = logits.masked_fill(~exists, float("-inf"))
            if self.label_smoothing:  # smoothing mass only over the items that exist (no -inf * eps)
                return _smoothed_ce(logits.float(), cls - 1, exists, self.label_smoothing)
        return F.cross_entropy(logits.float(), cls - 1, label_smoothing=self.label_smoothing)

    @property
    def needs_query_ts(self) -> bool:
        """Whether `forward` needs the target events' times even without a prior (catalogue "launched")."""
        return self.catalogue == "launched"

    def launched(self, items: torch.Tensor, query_ts: torch.Tensor) -> torch.Tensor:
        """Whether each of `items` exists at `query_ts` (broadcast) -- a candidate of catalogue "launched"."""
        return self.launch.launch_at(items, query_ts)[1]

    def forward(self, states: torch.Tensor, targets: torch.Tensor, tower: nn.Module,
                prior: nn.Module | None = None, query_ts: torch.Tensor | None = None) -> torch.Tensor:
        """states [B, L, d] (or [M, d]) vs targets [B, L] (or [M], 0 = none); tower: items -> [..., d];
        prior: (items, query times) -> additive logits, with query_ts shaped like targets (needed by a prior
        and by catalogue "launched")."""
        keep = targets > 0  # [B, L]
        h = states[keep]  # [M, d]
        t = targets[keep]  # [M]
        if t.numel() == 0:
            return states.sum() * 0.0
        if (prior is not None or self.needs_query_ts) and query_ts is None:
            raise ValueError("a freshness prior and catalogue 'launched' need the target times (SeqBatch.target_ts)")
        q = query_ts[keep][:, None] if query_ts is not None else None  # [M, 1]

        def bias(items: torch.Tensor) -> torch.Tensor | float:  # items [M] -> [M], [K] or [M, K] -> [M, K]
            if prior is None:
                return 0.0
            return prior(items, q[:, 0], h) if items.shape == t.shape else prior(items, q, h)

        if self.kind == "ce":
            cls = self.class_of[t]  # [M]
            if bool((cls == 0).any()):
                raise ValueError("a training target has no training events: pass the training split's item counts")
            # PAD (and, for catalogue "train", items without training events) are never classes
            if prior is None and not self.needs_query_ts and not self.popularity:
                return chunked_softmax_ce(h, tower.all()[self.classes], cls, label_smoothing=self.label_smoothing)
            dot = h @ tower.all()[self.classes].T  # [M, C]
            pop = self.popularity * self.log_q[self.classes] if self.popularity else 0.0  # training only
            if self.popularity_scope == "items" and prior is not None:
                # the item vectors learn next to the fixed popularity term without the prior; the prior learns
                # with the item vectors fixed and no such term, so its causal recent-activity cells carry the
                # popularity that prediction time sees (for items with and without training events alike)
                with_prior = dot.detach() + prior(self.classes, q, h.detach())
                return self._ce(dot + pop, cls, t, q) + self._ce(with_prior, cls, t, q)
            return self._ce(dot + bias(self.classes) + pop, cls, t, q)
        if self.kind == "inbatch":
            items, col = batch_candidates(t)  # [U], [M]
            return inbatch_debiased_ce(h @ tower(items).T + bias(items), col, self.log_q[items])  # logits [M, U]
        pos = (h * tower(t)).sum(-1) + bias(t)  # [M]
        if self.kind == "sampled":
            neg_ids = self.sampler.sample((self.n_negatives,), h.device)  # [K], shared by all rows
            neg = h @ tower(neg_ids).T + bias(neg_ids)  # [M, K]
            if self.needs_query_ts:  # a negative that does not exist yet at the row's event is dropped
                neg = neg.masked_fill(~self.launched(neg_ids[None, :], q), float("-inf"))
            return sampled_softmax_ce(
                pos, neg, t, neg_ids, self.sampler.log_q(t), self.sampler.log_q(neg_ids)
            )
        neg_ids = self.sampler.sample((len(t), self.n_negatives), h.device)  # [M, K]
        neg = torch.einsum("md,mkd->mk", h, tower(neg_ids)) + bias(neg_ids)  # [M, K]
        valid = neg_ids != t[:, None]  # [M, K] drop accidental hits
        return bpr(pos, neg, valid) if self.kind == "bpr" else bce(pos, neg, valid)

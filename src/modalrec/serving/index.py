"""Top-K item retrieval over an item-vector table: exact (torch matmul + topk) or approximate (FAISS).

Rows follow the item vocabulary: row 0 is PAD and is never returned. Scores are inner products
(`metric="ip"`, what sequence models rank by) or cosines (`metric="cosine"`, vectors L2-normalised).
`allowed` masks ([n + 1] or [B, n + 1] bool) remove items from the results (history, removed items,
filters); the approximate indices apply them inside the search (FAISS ID selectors), so a masked
item never crowds out an allowed one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modalrec.errors import ConfigError

log = logging.getLogger(__name__)

KINDS = ("exact", "hnsw", "ivf")


def _prepare(vectors: torch.Tensor, metric: str) -> torch.Tensor:
    if metric not in ("ip", "cosine"):
        raise ConfigError(f"index metric must be 'ip' or 'cosine', got {metric!r}")
    v = vectors.detach().float()
    return F.normalize(v, dim=-1) if metric == "cosine" else v


class ExactIndex:
    """Brute force: scores = queries @ vectors.T, masked, top-k. On the vectors' device (CPU or GPU)."""

    kind = "exact"

    def __init__(self, vectors: torch.Tensor, metric: str = "ip", device: str | torch.device | None = None,
                 score_budget: int = 1 << 24) -> None:
        self.metric, self.score_budget = metric, int(score_budget)
        self.vectors = _prepare(vectors, metric).to(device or vectors.device)  # [n + 1, d]

    @property
    def n_items(self) -> int:
        return self.vectors.shape[0] - 1

    def add(self, vectors: torch.Tensor) -> None:
        self.vectors = torch.cat([self.vectors, _prepare(vectors, self.metric).to(self.vectors.device)])

    def scores(self, queries: torch.Tensor) -> torch.Tensor:  # [B, d] -> [B, n + 1]
        q = _prepare(queries, self.metric).to(self.vectors.device)
        return q @ self.vectors.T

    def search(self, queries: torch.Tensor, k: int, allowed: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [B, k'], item indices [B, k']) best first; k' = min(k, allowed count); -1 pads short rows."""
        q = _prepare(queries, self.metric).to(self.vectors.device)  # [B, d]
        b, n1 = q.shape[0], self.vectors.shape[0]
        k = min(int(k), n1 - 1)
        best_s = torch.full((b, 0), float("-inf"), device=q.device)
        best_i = torch.zeros((b, 0), dtype=torch.long, device=q.device)
        chunk = max(1024, self.score_budget // max(b, 1))  # at most ~score_budget scores at once
        for lo in range(0, n1, chunk):
            s = q @ self.vectors[lo : lo + chunk].T  # [B, c]
            if lo == 0:
                s[:, 0] = float("-inf")  # PAD
            if allowed is not None:
                a = allowed.to(s.device)
                a = a[..., lo : lo + chunk]
                s = s.masked_fill(~(a if a.dim() == 2 else a[None]), float("-inf"))
            top_s, top_i = torch.topk(s, min(k, s.shape[1]), dim=1)  # [B, k]
            best_s = torch.cat([best_s, top_s], 1)
            best_i = torch.cat([best_i, top_i + lo], 1)
            if best_s.shape[1] > k:
                best_s, pos = torch.topk(best_s, k, dim=1)
                best_i = best_i.gather(1, pos)
        best_i = torch.where(torch.isinf(best_s) & (best_s < 0), torch.full_like(best_i, -1), best_i)
        return best_s.cpu(), best_i.cpu()


class FaissIndex:
    """Approximate search with FAISS: "hnsw" (graph; no training, appendable) or "ivf" (inverted lists over
    k-means cells trained on the vectors; new vectors go to their best cell). FAISS id j = item j + 1.

    Both search by inner product directly (FAISS METRIC_INNER_PRODUCT; cosine = inner product of
    normalised vectors). The classic reduction of inner product to L2 (appending sqrt(R^2 - |x|^2))
    was measured to lose most of HNSW's recall on clustered vectors with varying norms (0.35 vs 0.99
    at 100k items, benchmarks/ann_recall.py data), so it is not used.

    HNSW options: m (graph degree, 32), ef_construction (80), ef_search (64). IVF options: nlist
    (default about 4 * sqrt(n)), nprobe (16), train_size (cap on k-means training vectors, 100k), seed.
    """

    def __init__(self, vectors: torch.Tensor, kind: str = "hnsw", metric: str = "ip", **options: Any) -> None:
        import faiss  # optional dependency (extra "ann")

        if kind not in ("hnsw", "ivf"):
            raise ConfigError(f"approximate index kind must be 'hnsw' or 'ivf', got {kind!r}")
        allowed = {"hnsw": {"m", "ef_construction", "ef_search"}, "ivf": {"nlist", "nprobe", "train_size", "seed"}}
        unknown = set(options) - allowed[kind]
        if unknown:
            raise ConfigError(f"index {kind!r} has no option(s) {sorted(unknown)}; known: {sorted(allowed[kind])}")
        self.kind, self.metric, self.faiss, self.options = kind, metric, faiss, dict(options)
        v = self._numpy(vectors)[1:]  # [n, d] without PAD
        n, d = v.shape
        t0 = time.perf_counter()
        if kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, int(options.get("m", 32)), faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = int(options.get("ef_construction", 80))
            self.ef_search = int(options.get("ef_search", 64))
        else:
            from modalrec.seeding import numpy_rng

            nlist = int(options.get("nlist") or max(1, min(n // 39, int(4 * np.sqrt(max(n, 1))))))
            self.quantizer = faiss.IndexFlatIP(d)
            self.index = faiss.IndexIVFFlat(self.quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            self.nprobe = int(options.get("nprobe", 16))
            seed = int(options.get("seed", 0))
            pick = numpy_rng(seed, "ivf/train").permutation(n)[: int(options.get("train_size", 100_000))]
            self.index.cp.seed = seed
            self.index.train(v[np.sort(pick)])
        self.index.add(v)
        log.info("built %s index over %d x %d in %.1fs", kind, n, d, time.perf_counter() - t0)

    def _numpy(self, vectors: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(_prepare(vectors, self.metric).cpu().numpy(), dtype=np.float32)

    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: torch.Tensor) -> None:
        self.index.add(self._numpy(vectors))

    def _params(self, selector: Any) -> Any:
        f = self.faiss
        if self.kind == "hnsw":
            return f.SearchParametersHNSW(sel=selector, efSearch=self.ef_search)
        return f.SearchParametersIVF(sel=selector, nprobe=self.nprobe)

    def search(self, queries: torch.Tensor, k: int, allowed: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [B, k], item indices [B, k]); -1 where fewer than k allowed items were found."""
        q = self._numpy(queries)  # [B, d]
        k = min(int(k), self.n_items)
        if allowed is None:
            return _out(*self.index.search(q, k, params=self._params(None)))
        a = allowed.cpu().numpy().astype(bool)
        rows = a[None] if a.ndim == 1 else a  # [1 or B, n + 1]
        outs = []
        for i in range(len(q)):  # one ID selector per query (a request usually has one query)
            r = rows[0] if len(rows) == 1 else rows[i]
            bitmap = np.packbits(r[1 : self.n_items + 1], bitorder="little")  # bit j = FAISS id j = item j + 1
            sel = self.faiss.IDSelectorBitmap(self.n_items, self.faiss.swig_ptr(bitmap))
            outs.append(self.index.search(q[i : i + 1], k, params=self._params(sel)))  # bitmap alive here
        return _out(np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]))


def _out(dist: np.ndarray, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.from_numpy(ids.astype(np.int64))
    found = ids >= 0
    return (torch.from_numpy(dist.astype(np.float32)).masked_fill(~found, float("-inf")),
            torch.where(found, ids + 1, torch.full_like(ids, -1)))


def build_index(vectors: torch.Tensor, kind: str = "exact", metric: str = "ip",
                device: str | torch.device | None = None, **options: Any) -> ExactIndex | FaissIndex:
    """An index over `vectors` ([n + 1, d], row 0 = PAD)."""
    if kind == "exact":
        if options:
            raise ConfigError(f"the exact index takes no options, got {sorted(options)}")
        return ExactIndex(vectors, metric, device)
    if kind in ("hnsw", "ivf"):
        return FaissIndex(vectors, kind, metric, **options)
    raise ConfigError(f"unknown index kind {kind!r}; choose one of {KINDS}")


def index_from_config(vectors: torch.Tensor, config: Mapping[str, Any], metric: str = "ip",
                      device: str | torch.device | None = None) -> ExactIndex | FaissIndex:
    opts = dict(config)
    return build_index(vectors, str(opts.pop("kind", "exact")), metric, device, **opts)


def recall_at_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of the exact top-k ids ([B, k]) that the approximate top-k ([B, k]) also returns."""
    if approx.shape[0] != exact.shape[0] or exact.numel() == 0:
        raise ValueError(f"recall needs matching non-empty [B, k] id tensors, got {tuple(approx.shape)} and "
                         f"{tuple(exact.shape)}")
    hits = (approx[:, :, None] == exact[:, None, :]) & (exact[:, None, :] >= 0)  # [B, k, k]
    return float(hits.any(1).sum()) / float((exact >= 0).sum())


def recall_vs_exact(index: ExactIndex | FaissIndex, vectors: torch.Tensor, queries: torch.Tensor, k: int = 10,
                    ) -> float:
    """recall@k of `index` against brute force over the same `vectors` ([n + 1, d]) for `queries` [B, d]."""
    exact = ExactIndex(vectors, index.metric)
    return recall_at_k(index.search(queries, k)[1], exact.search(queries, k)[1])

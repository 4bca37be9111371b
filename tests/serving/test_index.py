"""Top-K indices: exact search against a naive sort, masks, chunking, FAISS recall and appends."""

from __future__ import annotations

import pytest
import torch

from modalrec.errors import ConfigError
from modalrec.serving.index import ExactIndex, build_index, recall_at_k, recall_vs_exact


def _clustered(n: int, d: int, n_clusters: int = 20, seed: int = 0) -> torch.Tensor:
    """[n + 1, d] vectors around random centres (row 0 = PAD = zeros)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, d, generator=g)
    x = centres[torch.randint(0, n_clusters, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)
    return torch.cat([torch.zeros(1, d), x])


def _naive(vectors: torch.Tensor, q: torch.Tensor, k: int, allowed: torch.Tensor) -> list[list[int]]:
    out = []
    for row in q:
        s = (vectors @ row).tolist()
        ok = [i for i in range(1, len(s)) if bool(allowed[i])]
        out.append(sorted(ok, key=lambda i: -s[i])[:k])
    return out


def test_exact_matches_naive_sort_with_masks_and_chunks() -> None:
    v = _clustered(500, 8)
    q = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    allowed = torch.ones(501, dtype=torch.bool)
    allowed[torch.arange(0, 501, 3)] = False  # every third item masked
    ref = _naive(v, q, 7, allowed)
    for budget in (1 << 24, 4 * 1024):  # one chunk, and 1024-row chunks (merging across chunks)
        scores, ids = ExactIndex(v, score_budget=budget).search(q, 7, allowed)
        assert ids.tolist() == ref
        assert torch.all(scores[:, :-1] >= scores[:, 1:])
    per_query = allowed[None].repeat(4, 1)
    per_query[0, ref[0][0]] = False  # a per-query mask hides query 0's best item only
    ids = ExactIndex(v).search(q, 7, per_query)[1]
    assert ids[0].tolist() == _naive(v, q[:1], 7, per_query[0])[0] and ids[0].tolist() != ref[0]
    assert ids[1].tolist() == ref[1]


def test_exact_never_returns_pad_and_pads_short_results() -> None:
    v = _clustered(10, 4)
    v[0] = 100.0  # even a huge PAD row must never be returned
    allowed = torch.zeros(11, dtype=torch.bool)
    allowed[[2, 5]] = True
    scores, ids = ExactIndex(v).search(torch.ones(1, 4), 4, allowed)
    assert sorted(ids[0, :2].tolist()) == [2, 5] and ids[0, 2:].tolist() == [-1, -1]
    assert torch.isinf(scores[0, 2:]).all()


def test_cosine_metric_ignores_norms() -> None:
    v = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    q = torch.tensor([[0.0, 1.0]])
    assert ExactIndex(v, "ip").search(q, 1)[1].item() == 3
    assert ExactIndex(v * torch.tensor([[1.0], [1.0], [1.0], [0.1]]), "cosine").search(q, 1)[1].item() == 3


def test_recall_at_k_known_answer() -> None:
    exact = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = torch.tensor([[4, 3, 9, 9], [5, 6, 7, 8]])
    assert recall_at_k(approx, exact) == pytest.approx(6 / 8)


@pytest.mark.parametrize("kind,options", [("hnsw", {"m": 16, "ef_search": 64}), ("ivf", {"nlist": 16, "nprobe": 8})])
def test_faiss_recall_masks_and_append(kind: str, options: dict) -> None:
    pytest.importorskip("faiss")
    data = _clustered(3050, 16)
    v, q = data[:3001], data[3001:]  # queries from the same clusters as the items (as user states are)
    index = build_index(v, kind, **options)
    assert recall_vs_exact(index, v, q, k=10) > 0.9
    allowed = torch.ones(3001, dtype=torch.bool)
    best = index.search(q, 10)[1]
    allowed[best[:, :5].flatten()] = False  # hide the five best of every query
    ids = index.search(q, 10, allowed)[1]
    assert not bool(torch.isin(ids, best[:, :5].flatten()).any()) and bool((ids > 0).all())
    new = 50.0 * torch.nn.functional.normalize(q[:3], dim=-1)  # three items pointing exactly at queries 0..2
    index.add(new)
    assert index.n_items == 3003
    top = index.search(q[:3], 1)[1][:, 0]
    assert top.tolist() == [3001, 3002, 3003]


def test_unknown_kind_and_options_are_errors() -> None:
    v = _clustered(10, 4)
    with pytest.raises(ConfigError, match="unknown index kind"):
        build_index(v, "lsh")
    with pytest.raises(ConfigError, match="no option"):
        build_index(v, "exact", nprobe=3)
    pytest.importorskip("faiss")
    with pytest.raises(ConfigError, match="no option"):
        build_index(v, "hnsw", nprobe=3)

"""ANN benchmark: recall@k of FAISS HNSW / IVF (as wrapped by modalrec.serving.index) against exact top-k
on synthetic clustered item vectors, with query latency for both.

Items: n vectors in d dims drawn from a mixture of `clusters` Gaussian clusters with Zipf-like sizes
and varying norms (like learned item embeddings, where inner product is the ranking score). Queries:
fresh draws from the same mixture (user states live near the items they will be shown), plus a set
of random directions (the hard case for graph indices). Exact = ExactIndex (torch matmul + topk).

    nice -n 10 python benchmarks/ann_recall.py --out benchmarks/results/ann_recall.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def make_vectors(n: int, d: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items [n + 1, d] with row 0 = PAD, cluster centres [clusters, d], cluster weights [clusters])."""
    from modalrec.seeding import numpy_rng

    rng = numpy_rng(seed, "ann/centres")
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.7
    weights /= weights.sum()
    items = np.zeros((n + 1, d), dtype=np.float32)
    rng = numpy_rng(seed, "ann/items")
    for lo in range(1, n + 1, 200_000):  # chunked: bounded temporary memory
        m = min(200_000, n + 1 - lo)
        c = rng.choice(clusters, size=m, p=weights)
        x = centres[c] + 0.5 * rng.standard_normal((m, d)).astype(np.float32)
        items[lo : lo + m] = x * rng.uniform(0.5, 1.5, size=(m, 1)).astype(np.float32)  # varying norms
    return items, centres, weights


def make_queries(centres: np.ndarray, weights: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from modalrec.seeding import numpy_rng

    rng = numpy_rng(seed, "ann/queries")
    c = rng.choice(len(centres), size=n, p=weights)
    near = centres[c] + 0.5 * rng.standard_normal((n, centres.shape[1]))
    rand = rng.standard_normal((n, centres.shape[1]))
    return near.astype(np.float32), rand.astype(np.float32)


def latency(search: Any, queries: torch.Tensor, k: int, n_single: int) -> dict[str, float]:
    """Single-query latencies (p50 / p99 ms over n_single queries) and batched throughput (queries/s)."""
    times = []
    for i in range(min(n_single, len(queries))):
        t0 = time.perf_counter()
        search(queries[i : i + 1], k)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    search(queries, k)
    batch_s = time.perf_counter() - t0
    ms = np.asarray(times) * 1000
    return {"single_p50_ms": round(float(np.percentile(ms, 50)), 3),
            "single_p99_ms": round(float(np.percentile(ms, 99)), 3),
            "batch_queries_per_s": round(len(queries) / batch_s, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--single", type=int, default=200, help="queries timed one by one")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default="ivf,hnsw")
    p.add_argument("--hnsw-m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=64)
    p.add_argument("--ef-search", default="16,32,64,128")
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", default="4,8,16,32")
    p.add_argument("--threads", type=int, default=0, help="torch / FAISS threads (0 = library default)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)

    from modalrec.costs import peak_memory
    from modalrec.serving.index import ExactIndex, FaissIndex, recall_at_k

    if args.threads:
        torch.set_num_threads(args.threads)
        import faiss

        faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    items_np, centres, weights = make_vectors(args.n, args.d, args.clusters, args.seed)
    near_np, rand_np = make_queries(centres, weights, args.queries, args.seed)
    items, near, rand = torch.from_numpy(items_np), torch.from_numpy(near_np), torch.from_numpy(rand_np)
    result: dict[str, Any] = {
        "benchmark": "ann_recall", "n_items": args.n, "dim": args.d, "clusters": args.clusters,
        "queries": args.queries, "k": args.k, "metric": "inner product",
        "data_seconds": round(time.perf_counter() - t0, 2),
        "platform": {"python": platform.python_version(), "torch": torch.__version__,
                     "torch_threads": torch.get_num_threads()},
    }
    exact = ExactIndex(items)
    t0 = time.perf_counter()
    truth = {"near": exact.search(near, args.k)[1], "random": exact.search(rand, args.k)[1]}
    result["exact"] = {"ground_truth_seconds": round(time.perf_counter() - t0, 2),
                       **latency(exact.search, near, args.k, args.single)}
    print(json.dumps({"exact": result["exact"]}), file=sys.stderr, flush=True)
    result["approximate"] = []
    for kind in [k for k in args.kinds.split(",") if k]:
        opts = ({"m": args.hnsw_m, "ef_construction": args.ef_construction} if kind == "hnsw"
                else {"nlist": args.nlist, "seed": args.seed})
        t0 = time.perf_counter()
        index = FaissIndex(items, kind, **opts)
        build_s = time.perf_counter() - t0
        sweep = [int(x) for x in (args.ef_search if kind == "hnsw" else args.nprobe).split(",")]
        for value in sweep:
            if kind == "hnsw":
                index.ef_search = value
            else:
                index.nprobe = value
            row = {"kind": kind, **opts, ("ef_search" if kind == "hnsw" else "nprobe"): value,
                   "build_seconds": round(build_s, 1),
                   "recall@k_near_queries": round(recall_at_k(index.search(near, args.k)[1], truth["near"]), 4),
                   "recall@k_random_directions": round(recall_at_k(index.search(rand, args.k)[1], truth["random"]), 4),
                   **latency(index.search, near, args.k, args.single)}
            result["approximate"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        del index
    result["peak_rss_mb"] = round(peak_memory("cpu")[0] / 2**20, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

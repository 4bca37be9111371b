"""How far content similarity alone can take cold items: content-kNN with every item without training events
ranked above every item with some ("new items first"), next to plain content-kNN. Prints JSON.

On a cold-item event the first ranking competes the target only against the other items training never showed,
so its cold-item NDCG@10 is what a perfect "this user takes a new item now" gate would give content-kNN; a
model that ranks new items by the same frozen vectors cannot beat it on cold items without a better notion of
similarity. Overall it is a poor recommender (every warm target ranks below thousands of new items): the number
is a bound for reading the cold-item column of `cold_start.py`, not a model to use. Same datasets, splits,
features and evaluation as `cold_start.py`.

    nice -n 10 python benchmarks/cold_gate_bound.py --datasets iisan_scientific \\
        --out benchmarks/results/cold_gate_bound_cpu.json
"""

from __future__ import annotations

import argparse
from typing import Any

import cold_start
from _output import emit_json, start_run

GROUPS = ("overall", "warm", "cold_item")
NEW_FIRST = 1e4  # above any content-kNN score: a cosine (one per modality, summed), at most a few units


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["iisan_scientific"], help="cold_start.py dataset names")
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def new_items_first(knn: Any, seen: Any) -> Any:
    """content-kNN's scores plus NEW_FIRST on every item without training events (`seen` False)."""
    import torch

    class NewItemsFirst(torch.nn.Module):
        history_length = knn.history_length
        dot_product_scores = False  # a per-item term on top of the kNN's dot products: ranked through `score`

        def score(self, batch: Any, items: torch.Tensor | None = None) -> torch.Tensor:
            scores = knn.score(batch, items)
            new = ~seen[: scores.shape[1]] if items is None else ~seen[items]
            return scores + NEW_FIRST * new.to(scores.dtype)

    return NewItemsFirst()


def bound(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from modalrec.pipeline import evaluator_for, run_experiment

    cfg = cold_start.config(name, "content_knn", 0, cold_start.parse_args(["--cache-dir", args.cache_dir]))
    res = run_experiment(cfg, write=False)
    seen = torch.as_tensor(res.split.train.item_counts() > 0)  # [n_items + 1]
    gated = new_items_first(res.model, seen)
    out: dict[str, Any] = {"items": int(len(seen) - 1), "items_without_training_events": int((~seen[1:]).sum())}
    for part, plain in (("valid", res.valid), ("test", res.test)):
        first = evaluator_for(cfg, res.split, part, res.model.history_length).run(gated, name=part)
        out[part] = {"events": {g: plain.counts.get(g, 0) for g in GROUPS},
                     "content_knn": {g: plain.metric("ndcg@10", g) for g in GROUPS},
                     "content_knn_new_items_first": {g: first.metric("ndcg@10", g) for g in GROUPS}}
    return out


def main() -> dict[str, Any]:
    args = parse_args()
    start_run(args.threads)
    result = {"benchmark": "cold_gate_bound", "metric": "ndcg@10",
              "rule": __doc__.split("\n\n")[1].replace("\n", " "), "command": "python benchmarks/cold_gate_bound.py "
              + " ".join(["--datasets", *args.datasets]),
              "results": {name: bound(name, args) for name in args.datasets}}
    emit_json(result, args.out)
    return result


if __name__ == "__main__":
    main()

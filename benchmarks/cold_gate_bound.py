"""How far content similarity alone can take cold items: content-kNN with every item without training events
ranked above every item with some ("new items first"), next to plain content-kNN. Prints JSON.

On a cold-item event the first ranking competes the target only against the other items training never showed,
so its cold-item NDCG@10 is what a perfect "this user takes a new item now" gate would give content-kNN; a
model that ranks new items by the same frozen vectors cannot beat it on cold items without a better notion of
similarity. Overall it is a poor recommender (every warm target ranks below thousands of new items): the number
is a bound for reading the cold-item column of `cold_start.py`, not a model to use. `--models` may add trained
SASRecs of `cold_start.py` (no `select` settings; the same gate is their new-item offset set to NEW_FIRST after
training): the bound for their learned similarity; `--decays` bounds content-kNN with the history weighted by
recency (the rule `cold_start.py`'s content_knn_recent sweeps) at each decay given; `--modalities text+lexical`
adds exact words to the similarity (TF-IDF over the title's n-grams, features.lexical); `--learned-gate` adds the
gate a user can deploy next to the perfect one: `select.new_item_gate` (models/new_item_gate.py) fitted and chosen
on VALID over the plain model, TEST once -- how much of the perfect gate's cold-item gain it recovers. Same
datasets, splits, features and evaluation as `cold_start.py`; results accumulate in --out (one entry per dataset and
model).

    nice -n 10 python benchmarks/cold_gate_bound.py --datasets iisan_scientific iisan_instruments \\
        unisrec_scientific --out benchmarks/results/cold_gate_bound_cpu.json
    nice -n 10 python benchmarks/cold_gate_bound.py --datasets iisan_scientific --models sasrec_hybrid \\
        --out benchmarks/results/cold_gate_bound_cpu.json
    nice -n 10 python benchmarks/cold_gate_bound.py --datasets iisan_scientific --decays 0.7 0.5 0.3 0.1 0.01 \\
        --out benchmarks/results/cold_gate_bound_cpu.json
    nice -n 10 python benchmarks/cold_gate_bound.py --datasets iisan_scientific --decays 0.7 \\
        --modalities text+lexical --learned-gate --out benchmarks/results/cold_gate_bound_cpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import cold_start
from _output import emit_json, start_run

GROUPS = ("overall", "warm", "cold_item")
log = logging.getLogger("cold_gate_bound")
NEW_FIRST = 1e4  # above any content-kNN score: a cosine (one per modality, summed), at most a few units


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["iisan_scientific"], help="cold_start.py dataset names")
    p.add_argument("--models", nargs="+", default=["content_knn"],
                   help="content_knn and / or cold_start.py SASRec names (trained here, seed --seed)")
    p.add_argument("--decays", nargs="+", type=float, default=[1.0],
                   help="content_knn: the history weights' recency decays to bound (1 = the plain mean; "
                        "another d is stored as content_knn_recent_<d>, the rule content_knn_recent sweeps)")
    p.add_argument("--modalities", default=None,
                   help="content_knn: its modalities (e.g. text+lexical: the sentence encoder and exact words; default "
                        "cold_start.py's); stored as <name>@<modalities>")
    p.add_argument("--learned-gate", action="store_true",
                   help="also the new-item gate fitted and chosen on VALID (select.new_item_gate), TEST once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20, help="SASRecs: epoch cap (cold_start.py's default)")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--cache-dir", default=".cache/features")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="JSON results (accumulated; existing entries are kept)")
    return p.parse_args(argv)


def new_items_first(knn: Any, seen: Any) -> Any:
    """content-kNN's scores plus NEW_FIRST on every item without training events (`seen` False)."""
    import torch

    from modalrec.models.base import flag_of

    class NewItemsFirst(torch.nn.Module):
        history_length = knn.history_length
        dot_product_scores = False  # a per-item term on top of the kNN's dot products: ranked through `score`

        def score(self, batch: Any, items: torch.Tensor | None = None) -> torch.Tensor:
            scores = knn.score(batch, items)
            new = ~flag_of(seen, torch.arange(scores.shape[1]) if items is None else items)
            return scores + NEW_FIRST * new.to(scores.dtype)

    return NewItemsFirst()


def stored_name(model: str, decay: float, modalities: str | None = None) -> str:
    """The results key of `model` at history decay `decay` (content_knn only; 1 = the plain mean) over
    `modalities` (content_knn only; None = cold_start.py's)."""
    name = model if decay == 1.0 else f"{cold_start.KNN_RECENT}_{decay:g}"
    return name if modalities is None else f"{name}@{modalities}"


def bound(name: str, model: str, args: argparse.Namespace, decay: float = 1.0,
          modalities: str | None = None) -> dict[str, Any]:
    """`model` on `name` (content_knn: its history weighted by recency `decay`, over `modalities` when given): VALID
    / TEST NDCG@10 as trained ("plain") and with every new item ranked first."""
    import dataclasses

    from modalrec.experiment import SelectConfig
    from modalrec.models.base import ModelContext
    from modalrec.pipeline import evaluator_for, run_experiment

    cs_args = cold_start.parse_args(["--cache-dir", args.cache_dir, "--epochs", str(args.epochs),
                                     "--patience", str(args.patience), "--threads", str(args.threads)])
    cfg = dataclasses.replace(cold_start.config(name, model, args.seed, cs_args), select=SelectConfig())
    if decay != 1.0:
        cfg = cold_start.at_decay(cfg, decay)
    if modalities is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, params={**cfg.model.params, "modalities": modalities}))
    res = run_experiment(cfg, write=False)
    seen = ModelContext.for_split(res.split).items_with_training_events()  # [n_items + 1], PAD False
    learned = learned_gate(cfg, res) if args.learned_gate else None  # before a SASRec's offset is set below
    if model == "content_knn":
        gated = new_items_first(res.model, seen)
    else:  # a trained SASRec: the same gate is its new-item offset (items without training events)
        gated = res.model
        gated.new_item_offset = NEW_FIRST
    out: dict[str, Any] = {"seed": None if model == "content_knn" else args.seed,
                           **({"decay": decay} if decay != 1.0 else {}),
                           **({"modalities": modalities} if modalities is not None else {}),
                           "best_epoch": getattr(res.history, "best_epoch", None),
                           "items": int(len(seen) - 1), "items_without_training_events": int((~seen[1:]).sum())}
    for part, plain in (("valid", res.valid), ("test", res.test)):
        first = evaluator_for(cfg, res.split, part, res.model.history_length).run(gated, name=part)
        out[part] = {"events": {g: plain.counts.get(g, 0) for g in GROUPS},
                     "plain": {g: plain.metric("ndcg@10", g) for g in GROUPS},
                     "new_items_first": {g: first.metric("ndcg@10", g) for g in GROUPS},
                     **({"learned_gate": learned[part]} if learned else {})}
    if learned:
        out["learned_gate"] = learned["choice"]
    return out


def learned_gate(cfg: Any, res: Any) -> dict[str, Any]:
    """The run's plain model with the new-item gate fitted and chosen on VALID (selection.gate_on_valid):
    {"valid" / "test": NDCG@10 per group, "choice": the fit, offset and slope}."""
    from modalrec.models.new_item_gate import valid_events
    from modalrec.pipeline import evaluator_for
    from modalrec.training.selection import gate_on_valid

    model = res.model.eval()
    evaluators = {part: evaluator_for(cfg, res.split, part, model.history_length) for part in ("valid", "test")}
    gate, record, valid = gate_on_valid(model, lambda: valid_events(res.split, model.history_length),
                                        lambda m: evaluators["valid"].run(m, name="valid"))
    test = evaluators["test"].run(gate, name="test")
    return {"valid": {g: valid.metric("ndcg@10", g) for g in GROUPS},
            "test": {g: test.metric("ndcg@10", g) for g in GROUPS},
            "choice": {k: v for k, v in record.items() if k != "valid_sweep"}}


def main() -> dict[str, Any]:
    args = parse_args()
    start_run(args.threads)
    done = json.loads(args.out.read_text())["results"] if args.out and args.out.is_file() else {}
    for name in args.datasets:
        for model in args.models:
            knn = model == "content_knn"
            modalities = args.modalities if knn else None
            for decay in args.decays if knn else [1.0]:
                log.info("cold_gate_bound %s / %s (decay %g, modalities %s)", name, model, decay, modalities)
                done.setdefault(name, {})[stored_name(model, decay, modalities)] = bound(
                    name, model, args, decay, modalities)
    result = {"benchmark": "cold_gate_bound", "metric": "ndcg@10",
              "rule": __doc__.split("\n\n")[1].replace("\n", " "), "results": done}
    emit_json(result, args.out)
    return result


if __name__ == "__main__":
    main()

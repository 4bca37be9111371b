"""Cold start on the built-in dataset: unseen items, items appended after training, brand-new users,
and the ablation runner's warm / cold-item table.

Real components throughout: the synthetic shop (text + pictures), the hashing text encoder and the
colour/texture image encoder writing a real FeatureStore, the training loop and the Evaluator.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modalrec.ablation import expand_grid, run_ablation
from modalrec.config import from_dict
from modalrec.data.sequences import TrainWindows, history_batch
from modalrec.data.sources.synthetic import generate, item_attributes
from modalrec.data.splits import global_temporal
from modalrec.errors import ConfigError
from modalrec.evaluation.evaluator import Evaluator
from modalrec.experiment import ExperimentConfig
from modalrec.features.build import encode_catalogue
from modalrec.features.store import FeatureStore
from modalrec.models.base import ModelContext
from modalrec.models.popularity import Pop, PopConfig
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.models.towers.item_towers import TowerConfig
from modalrec.training.loop import TrainConfig, fit

MAX_LEN = 20



@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Synthetic shop, global temporal split, real store; Pop, ID SASRec and text+image SASRec trained."""
    root = tmp_path_factory.mktemp("shop")
    ds = generate(n_users=300, n_items=400, seed=0, image_dir=root / "img", image_size=16)
    encode_catalogue(ds.items, root / "store", text="hashing", image="stats", progress=False, device="cpu")
    feats, missing = FeatureStore.open(root / "store", ds.item_vocab).tensors()
    split = global_temporal(ds.interactions)
    ctx = ModelContext.for_split(split, item_features=feats, feature_missing=missing)
    valid = Evaluator(split.valid, split.n_items, ks=(10,), max_len=MAX_LEN)
    test = Evaluator(split.test, split.n_items, ks=(10,), max_len=MAX_LEN)
    pop = Pop(PopConfig(), ctx)
    pop.fit_counts(split)
    models, reports = {"pop": pop}, {"pop": test.run(pop)}
    for kind in ("id", "text+image"):
        cfg = SASRecConfig(dim=32, n_layers=1, n_heads=1, max_len=MAX_LEN, loss="sampled", negatives="popularity",
                           tower=TowerConfig(kind=kind, fusion="sum"))
        model = SASRec(cfg, ctx)
        fit(model, TrainWindows(split.train, MAX_LEN),
            TrainConfig(epochs=8, batch_size=64, lr=3e-3, patience=0, progress=False),
            validate=lambda m: valid.run(m))
        models[kind], reports[kind] = model.eval(), test.run(model)
    return {"root": root, "ds": ds, "split": split, "models": models, "reports": reports}


def test_content_model_recommends_unseen_items(shop: dict) -> None:
    reports = shop["reports"]
    cold = {k: r.metric("ndcg@10", "cold_item") for k, r in reports.items()}
    assert reports["id"].counts["cold_item"] >= 100  # enough cold-item test events to mean something
    assert cold["text+image"] >= 3 * cold["id"]
    assert cold["text+image"] > cold["pop"]
    # ... and far above chance: a random ranking of ~390 candidates gets about sum_r<=10 1/log2(r+1) / 390.
    chance = sum(1 / np.log2(r + 1) for r in range(1, 11)) / shop["split"].n_items
    assert cold["text+image"] > 3 * chance
    # Content costs nothing on warm items here (it is at least as good as IDs).
    assert reports["text+image"].metric("ndcg@10", "warm") >= 0.9 * reports["id"].metric("ndcg@10", "warm")


def test_item_appended_to_store_after_training_is_scored(shop: dict) -> None:
    ds, split = shop["ds"], shop["split"]
    model = copy.deepcopy(shop["models"]["text+image"])
    counts = split.train.item_counts()
    x, y = int(np.argmax(counts)), int(np.flatnonzero(counts > 0)[3])  # two trained items
    # Two new items: "twin" has exactly item x's text and picture, "other" item y's.
    new = {}
    for raw, src in (("new-twin", x), ("new-other", y)):
        new[raw] = {**ds.items.record(src), "image": ds.items.image_paths[src]}
    items = ds.items.extended(new, image_field="image")
    summary = encode_catalogue(items, shop["root"] / "store", text="hashing", image="stats", progress=False,
                               device="cpu")
    assert summary.mode == "append"
    feats, missing = FeatureStore.open(shop["root"] / "store", items.vocab).tensors()
    n = split.n_items
    batch = history_batch([split.test.history(e)[-MAX_LEN:] for e in range(8)], MAX_LEN)
    with torch.no_grad():
        before = model.score(batch)
        model.set_item_features(feats, missing)
        after = model.score(batch)
    assert after.shape == (8, n + 3) and torch.isfinite(after).all()
    assert torch.allclose(after[:, : n + 1], before, atol=1e-5)  # nothing else moved
    twin, other = items.vocab.index("new-twin"), items.vocab.index("new-other")
    assert torch.allclose(after[:, twin], after[:, x], atol=1e-5)
    assert torch.allclose(after[:, other], after[:, y], atol=1e-5)
    assert not torch.allclose(after[:, twin], after[:, other])
    with pytest.raises(TypeError, match="cannot score new items"):
        copy.deepcopy(shop["models"]["id"]).set_item_features(feats, missing)


def test_new_user_with_one_or_two_interactions(shop: dict) -> None:
    """A brand-new user gets a representation from one or two items, and it reflects those items."""
    model, ds = shop["models"]["text+image"], shop["ds"]
    category = item_attributes(ds)[:, 0]  # [n + 1] latent category (never shown to the model as such)
    rng = np.random.default_rng(0)
    seeds = rng.choice(np.arange(1, ds.n_items + 1), size=60, replace=False)
    hists = [np.array([i]) for i in seeds] + [np.array([i, j]) for i, j in zip(seeds[:30], seeds[30:])]
    with torch.no_grad():
        state = model.forward(history_batch(hists, MAX_LEN))
        scores = model.score(history_batch(hists, MAX_LEN))
    assert state.shape == (90, 32) and torch.isfinite(state).all()
    assert not torch.allclose(state[0], state[1])
    scores[:, 0] = -torch.inf
    for r, h in enumerate(hists):
        scores[r, torch.as_tensor(h)] = -torch.inf
    top = scores[:60].topk(10, dim=1).indices.numpy()  # single-item users
    same = (category[top] == category[seeds][:, None]).mean()
    base_rate = np.mean([(category[1:] == c).mean() for c in category[seeds]])
    assert same > 2 * base_rate  # recommendations follow the one item the user touched


def _tiny_base(tmp: Path) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {
        "name": "tiny", "seed": 0,
        "data": {"source": "synthetic", "options": {"n_users": 60, "n_items": 80}},
        "split": {"kind": "global_temporal"},
        "features": {"text": "hashing", "cache_dir": str(tmp / "cache")},
        "model": {"name": "sasrec", "params": {"dim": 16, "n_layers": 1, "n_heads": 2, "max_len": 10,
                                                "loss": "inbatch"}},
        "train": {"epochs": 1, "batch_size": 64, "progress": False},
        "eval": {"ks": [10]},
    })


def test_ablation_grid_folds_meaningless_combinations(tmp_path: Path) -> None:
    grid = {"model.name": ["pop", "sasrec", "gru4rec"], "model.params.tower.kind": ["id", "text", "text+image"],
            "model.params.tower.fusion": ["mlp", "film", "gated"]}
    base = _tiny_base(tmp_path)
    base.features.image = "stats"
    points, skipped, notes = expand_grid(base, grid)
    labels = [p.label for p in points]
    assert len(points) == 1 + 2 * (2 + 3) and len(labels) == len(set(labels))
    assert "sasrec, tower.kind=text+image, tower.fusion=film" in labels and "pop" in labels
    assert len(points) + len(skipped) == 27
    assert any("single modality" in s["reason"] for s in skipped)
    assert any("n_heads dropped for gru4rec" in n for n in notes)
    gru = next(p for p in points if p.label == "gru4rec, tower.kind=text")
    assert "n_heads" not in gru.config.model.params and gru.config.model.params["tower"] == {"kind": "text"}
    with pytest.raises(ConfigError, match="no model has a parameter"):
        expand_grid(base, {"model.params.n_haeds": [1, 2]})
    with pytest.raises(ConfigError, match="features.image"):
        expand_grid(_tiny_base(tmp_path), {"model.params.tower.kind": ["image"]})


def test_ablation_runs_writes_and_resumes(tmp_path: Path) -> None:
    grid = {"model.name": ["pop", "sasrec"], "model.params.tower.kind": ["id", "text"],
            "model.params.tower.fusion": ["mlp", "film"]}
    out = tmp_path / "abl"
    res = run_ablation(_tiny_base(tmp_path), grid, out, stop_on_error=True)
    assert res.status == {"pop": "ran", "sasrec, tower.kind=id": "ran", "sasrec, tower.kind=text": "ran"}
    md = (out / "results.md").read_text()
    assert "ndcg@10 cold_item" in md and "| sasrec, tower.kind=text |" in md and "single modality" in md
    data = json.loads((out / "results.json").read_text())
    assert [p["status"] for p in data["points"]] == ["ran"] * 3
    assert data["points"][2]["report"]["groups"]["cold_item"]["ndcg@10"] is not None
    assert (out / "ndcg10_warm_vs_cold.png").read_bytes()[:4] == b"\x89PNG"
    # VALID next to TEST; the winner is the best VALID NDCG@10 overall, never chosen on TEST
    assert "VALID ndcg@10 overall" in md and "TEST ndcg@10 cold_item" in md
    best = max(res.valid_reports, key=lambda k: res.valid_reports[k].overall["ndcg@10"])
    assert res.winner == best == data["winner_on_valid"] and f"**{best}** (best on VALID)" in res.table
    assert data["points"][0]["valid_report"]["counts"]["overall"] > 0

    def must_not_run(cfg: ExperimentConfig) -> None:
        raise AssertionError(f"{cfg.name} was rerun")

    again = run_ablation(_tiny_base(tmp_path), grid, out, runner=must_not_run, stop_on_error=True)
    assert set(again.status.values()) == {"resumed"}
    assert again.table == res.table and again.winner == res.winner  # VALID reports are read back too
    changed = _tiny_base(tmp_path)
    changed.train.lr = 0.01
    with pytest.raises(ConfigError, match="different config"):
        run_ablation(changed, grid, out, runner=must_not_run)

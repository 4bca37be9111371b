"""Baselines (BERT4Rec, LightGCN, MMGCN, VBPR) and their data helpers (data/pairs.py).

Planted pattern for the user models: users belong to one of 4 clusters and consume only their
cluster's items, so the held-out target is always among the few unseen items of the user's cluster.
Item "text" features carry the cluster (plus noise); "image" features are pure noise.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from seq_testdata import context, cyclic_split, evaluate

from modalrec.data.interactions import Interactions
from modalrec.data.pairs import PairBatch, PairSource, normalized_adjacency, random_split, sparse_propagate
from modalrec.data.sequences import TrainWindows
from modalrec.data.splits import Split, cold_items, leave_one_out
from modalrec.errors import ConfigError
from modalrec.evaluation.evaluator import Evaluator
from modalrec.models import build_model
from modalrec.models.base import ModelContext
from modalrec.models.graph.lightgcn import LightGCN, LightGCNConfig
from modalrec.models.graph.mmgcn import MMGCN, MMGCNConfig
from modalrec.models.graph.vbpr import VBPR, VBPRConfig
from modalrec.models.sequential.bert4rec import BERT4Rec, BERT4RecConfig
from modalrec.models.towers.item_towers import TowerConfig
from modalrec.training.checkpoint import load_state, save_checkpoint
from modalrec.training.loop import TrainConfig, fit
from modalrec.types import SeqBatch

CLUSTERS, PER_CLUSTER = 4, 12


def block_interactions(users_per: int = 15, per_user: int = 7, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    users, items = [], []
    for c in range(CLUSTERS):
        for k in range(users_per):
            chosen = rng.choice(PER_CLUSTER, per_user, replace=False) + 1 + c * PER_CLUSTER
            users += [c * users_per + k + 1] * per_user
            items += chosen.tolist()
    ts = np.tile(np.arange(per_user), CLUSTERS * users_per)
    return Interactions.from_arrays(np.array(users), np.array(items), ts, n_users=CLUSTERS * users_per,
                                    n_items=CLUSTERS * PER_CLUSTER)


def cluster_of(items: torch.Tensor | np.ndarray) -> torch.Tensor:
    return (torch.as_tensor(items) - 1) // PER_CLUSTER


def block_features(n_items: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    onehot = torch.nn.functional.one_hot(cluster_of(torch.arange(n_items + 1)).clamp_min(0), CLUSTERS).float()
    text = torch.cat([onehot + 0.2 * torch.randn(n_items + 1, CLUSTERS, generator=g),
                      0.3 * torch.randn(n_items + 1, 6, generator=g)], 1)
    image = torch.randn(n_items + 1, 5, generator=g)
    text[0] = image[0] = 0
    missing = {m: torch.zeros(n_items + 1, dtype=torch.bool) for m in ("text", "image")}
    missing["text"][0] = missing["image"][0] = True
    return {"text": text, "image": image}, missing


def block_context(split: Split, seed: int = 0) -> ModelContext:
    feats, missing = block_features(split.n_items)
    return ModelContext.for_split(split, item_features=feats, feature_missing=missing, seed=seed)


@pytest.fixture(scope="module")
def block_split() -> Split:
    """Leave-one-out on the cluster data with 20% of the items held out of training (cold items)."""
    return cold_items(leave_one_out(block_interactions()), 0.2, seed=1)


USER_MODELS = {
    "lightgcn": lambda ctx: LightGCN.build(LightGCNConfig(dim=16, n_layers=2, max_len=8), ctx),
    "mmgcn": lambda ctx: MMGCN.build(MMGCNConfig(dim=8, latent_dim=16, n_layers=2, max_len=8), ctx),
    # Text only: the "image" features are pure noise, and VBPR's single projection E over-fits noise
    # on 300 training pairs (AUC 0.85 instead of 0.99); both modalities are in the contract tests.
    "vbpr": lambda ctx: VBPR.build(VBPRConfig(dim=8, content_dim=8, max_len=8, modalities=["text"]), ctx),
}


def _eval(model: torch.nn.Module, split: Split, part: str = "test") -> object:
    es = split.valid if part == "valid" else split.test
    return Evaluator(es, split.n_items, ks=(1, 6), max_len=8).run(model, name=part)


@pytest.fixture(scope="module")
def trained(block_split: Split) -> dict[str, tuple[torch.nn.Module, object, object]]:
    """Each user model trained once on the cluster data: name -> (model, test report before, after)."""
    out = {}
    for name, build in USER_MODELS.items():
        model = build(block_context(block_split))
        before = _eval(model, block_split)
        source = model.training_source(block_split)
        cfg = TrainConfig(epochs=25, batch_size=64, lr=0.03, grad_clip=0.0, patience=4, monitor="hr@6",
                          progress=False)
        fit(model, source, cfg, validate=lambda m: _eval(m, block_split, "valid"))
        out[name] = (model.eval(), before, _eval(model, block_split))
    return out


# --- data/pairs.py ----------------------------------------------------------------------------------


def test_pair_source_covers_pairs_once_with_true_negatives(block_split: Split) -> None:
    train = block_split.train
    src = PairSource(train, n_negatives=3)
    batches = list(src.batches(50, seed=0, epoch=1))
    assert len(batches) == src.num_batches(50)
    users = torch.cat([b.users for b in batches]).numpy()
    pos = torch.cat([b.pos for b in batches]).numpy()
    neg = torch.cat([b.neg for b in batches]).numpy()  # [P, 3]
    assert sorted(zip(users, pos)) == sorted(set(zip(train.user.tolist(), train.item.tolist())))
    seen = {(u, i) for u, i in zip(train.user.tolist(), train.item.tolist())}
    assert not any((u, int(j)) in seen for u, row in zip(users, neg) for j in row)
    assert set(neg.ravel()) <= set(np.flatnonzero(train.item_counts() > 0))  # never a cold item
    again = list(src.batches(50, seed=0, epoch=1))
    assert all(torch.equal(a.neg, b.neg) and torch.equal(a.users, b.users) for a, b in zip(batches, again))
    other = torch.cat([b.neg for b in src.batches(50, seed=0, epoch=2)]).numpy()
    assert not np.array_equal(neg, other)
    assert isinstance(batches[0].to("cpu"), PairBatch) and len(batches[0]) == 50


def test_adjacency_matches_dense_reference() -> None:
    # user 1: items 1, 2 (item 2 twice); user 2: item 2; user 3: none (isolated); item 3: none
    inter = Interactions.from_arrays(np.array([1, 1, 1, 2]), np.array([1, 2, 2, 2]), n_users=3, n_items=3)
    V = 4 + 4
    A = torch.zeros(V, V)
    for u, i in [(1, 1), (1, 2), (2, 2)]:  # duplicate events are one edge
        A[u, 4 + i] = A[4 + i, u] = 1.0
    deg = A.sum(1)
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros(()))
    sym = normalized_adjacency(inter, "sym")
    torch.testing.assert_close(sym.matrix.to_dense(), inv[:, None] * A * inv[None, :])
    mean = normalized_adjacency(inter, "mean")
    torch.testing.assert_close(mean.matrix.to_dense(), A / deg.clamp_min(1)[:, None])
    torch.testing.assert_close(mean.transpose.to_dense(), mean.matrix.to_dense().T)
    x = torch.randn(V, 3, requires_grad=True)
    w = torch.randn(V, 3)
    (sparse_propagate(mean, x) * w).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    ((mean.matrix.to_dense() @ x2) * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    with pytest.raises(ValueError, match="norm"):
        normalized_adjacency(inter, "max")


def test_random_split_partitions_each_user_and_sets_histories() -> None:
    inter = block_interactions(users_per=3, per_user=10)
    split = random_split(inter, (0.8, 0.1, 0.1), seed=3)
    assert len(split.train) + len(split.valid) + len(split.test) == len(inter)
    assert (split.train.seq_lengths()[1:] == 8).all()
    assert (np.bincount(split.valid.user, minlength=13)[1:] == 1).all()
    assert (np.bincount(split.test.user, minlength=13)[1:] == 1).all()
    held = set(zip(split.valid.user.tolist(), split.valid.target.tolist()))
    for e in range(len(split.test)):
        u = int(split.test.user[e])
        expected = set(split.train.sequence(u).tolist()) | {i for v, i in held if v == u}
        assert set(split.test.history(e).tolist()) == expected
        assert int(split.test.target[e]) not in expected
        assert np.all(np.diff(split.test.hist_ts[split.test.hist_offsets[e]:split.test.hist_offsets[e + 1]]) >= 0)
    for e in range(len(split.valid)):
        assert set(split.valid.history(e).tolist()) == set(split.train.sequence(int(split.valid.user[e])).tolist())
    same = random_split(inter, (0.8, 0.1, 0.1), seed=3)
    assert np.array_equal(same.test.target, split.test.target)
    assert not np.array_equal(random_split(inter, (0.8, 0.1, 0.1), seed=4).test.target, split.test.target)
    with pytest.raises(ValueError, match="ratios"):
        random_split(inter, (0.8, 0.3, 0.1))


def test_random_split_ranks_are_the_per_user_protocol() -> None:
    """Evaluator ranks on a random split = 1 + #(items outside the user's known set scoring >= target)."""
    split = random_split(block_interactions(users_per=3, per_user=10), seed=0)
    table = torch.randn(split.n_users + 1, split.n_items + 1, generator=torch.Generator().manual_seed(0))

    class Fixed(torch.nn.Module):
        def score(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
            return table[batch.users]

    ranks = Evaluator(split.test, split.n_items, ks=(5,)).run(Fixed()).ranks
    for e in range(len(split.test)):
        u, t = int(split.test.user[e]), int(split.test.target[e])
        known = set(split.test.history(e).tolist())
        cands = [i for i in range(1, split.n_items + 1) if i not in known and i != t]
        assert ranks[e] == 1 + sum(float(table[u, i]) >= float(table[u, t]) for i in cands)


# --- user models: LightGCN, MMGCN, VBPR ----------------------------------------------------------


@pytest.mark.parametrize("name", list(USER_MODELS))
def test_user_models_learn_planted_clusters(trained: dict, name: str) -> None:
    _, before, after = trained[name]
    warm_before, warm_after = before.metric("hr@6", "warm"), after.metric("hr@6", "warm")
    assert warm_before < 0.5, before.groups
    # hr@6 = 1 iff the target beats every item outside the user's cluster (5 other cluster items are
    # candidates). VBPR's free ID factors memorise the few training pairs more than the graph models.
    assert warm_after >= (0.8 if name == "vbpr" else 0.9), (name, after.groups)


@pytest.mark.parametrize("name", ["mmgcn", "vbpr"])
def test_content_models_rank_cold_items_by_content(trained: dict, block_split: Split, name: str) -> None:
    """Among items never seen in training, those of the user's own cluster score higher (AUC)."""
    model = trained[name][0]
    cold = torch.from_numpy(np.flatnonzero(block_split.train.item_counts() == 0)[1:])  # skip PAD
    users = torch.arange(1, block_split.n_users + 1)
    batch = SeqBatch(torch.zeros(len(users), 1, dtype=torch.long), torch.zeros(len(users), dtype=torch.long), users)
    with torch.no_grad():
        s = model.score(batch, items=cold)  # [U, C]
    same = cluster_of(cold)[None, :] == ((users - 1) // 15)[:, None]  # [U, C]
    wins = (s[:, :, None] > s[:, None, :]) & same[:, :, None] & ~same[:, None, :]
    auc = wins.sum() / (same.sum(1) * (~same).sum(1)).sum()
    assert float(auc) >= 0.9, (name, float(auc))


def test_lightgcn_propagation_matches_dense_reference(block_split: Split) -> None:
    model = LightGCN.build(LightGCNConfig(dim=8, n_layers=3), block_context(block_split))
    model.attach(block_split.train)
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    A = normalized_adjacency(block_split.train, "sym").matrix.to_dense()
    layers = [ego]
    for _ in range(3):
        layers.append(A @ layers[-1])
    ref = torch.stack(layers).mean(0)
    users, items = model.tables()
    torch.testing.assert_close(torch.cat([users, items]).detach(), ref, rtol=1e-5, atol=1e-6)


def test_cold_users_get_the_mean_of_their_history(trained: dict, block_split: Split) -> None:
    model = trained["lightgcn"][0]
    history = torch.tensor([[0, 0, 13, 15, 17]])  # cluster 1 items; user 0 = PAD, 999 = unknown user
    with torch.no_grad():
        items = model.item_embeddings()
        for user in (0, 999):
            batch = SeqBatch(history, torch.zeros(1, dtype=torch.long), torch.tensor([user]))
            torch.testing.assert_close(model(batch)[0], items[[13, 15, 17]].mean(0))
            scores = model.score(batch)[0, 1:]  # [N]
            top = torch.topk(scores, 5).indices + 1
            assert (cluster_of(top) == 1).float().mean() >= 0.8
        empty = SeqBatch(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, dtype=torch.long), torch.tensor([0]))
        assert torch.count_nonzero(model.score(empty)) == 0


@pytest.mark.parametrize("name", list(USER_MODELS))
def test_checkpoint_of_a_trained_model_scores_without_the_graph(
    trained: dict, block_split: Split, name: str, tmp_path: Path
) -> None:
    model = trained[name][0]
    save_checkpoint(tmp_path / name, model, {"model": name})
    fresh = USER_MODELS[name](block_context(block_split, seed=5)).eval()
    load_state(tmp_path / name, fresh)
    assert fresh.graph is None
    batch = SeqBatch(torch.randint(0, 49, (6, 8)), torch.zeros(6, dtype=torch.long), torch.arange(6) * 11)
    with torch.no_grad():
        torch.testing.assert_close(fresh.score(batch), model.score(batch), rtol=1e-5, atol=1e-6)
    assert torch.equal(fresh.user_known, model.user_known) and torch.equal(fresh.item_known, model.item_known)
    if name != "vbpr":  # graph models must get their graph back before training on
        pairs = next(iter(PairSource(block_split.train).batches(8, 0, 1)))
        with pytest.raises(RuntimeError, match="attach"):
            fresh.train().loss(pairs)


@pytest.mark.parametrize("name", ["mmgcn", "vbpr"])
def test_appended_items_are_scored_from_features(trained: dict, block_split: Split, name: str) -> None:
    """An appended item with the features of a cold item scores exactly like it (no ID, no edges)."""
    model = trained[name][0]
    n = block_split.n_items
    cold = int(np.flatnonzero(block_split.train.item_counts() == 0)[1])
    feats, missing = block_features(n)
    grown = {m: torch.cat([f, f[cold : cold + 1]]) for m, f in feats.items()}
    grown_missing = {m: torch.cat([mk, mk[cold : cold + 1]]) for m, mk in missing.items()}
    batch = SeqBatch(torch.randint(1, n + 1, (4, 8)), torch.zeros(4, dtype=torch.long), torch.tensor([1, 20, 40, 0]))
    with torch.no_grad():
        old = model.score(batch)
        model.set_item_features(grown, grown_missing)
        try:
            new = model.score(batch)
        finally:
            model.set_item_features(feats, missing)
    assert new.shape == (4, n + 2)
    torch.testing.assert_close(new[:, : n + 1], old, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new[:, n + 1], new[:, cold], rtol=1e-5, atol=1e-6)


# --- BERT4Rec -----------------------------------------------------------------------------------


def test_bert4rec_learns_next_item_pattern() -> None:
    split = cyclic_split(n_items=20, n_users=40)
    cfg = BERT4RecConfig(dim=32, n_layers=1, n_heads=2, dropout=0.0, max_len=10, mask_prob=0.5)
    model = BERT4Rec.build(cfg, context(split))
    before = evaluate(model, split, part="test")
    train = TrainConfig(epochs=40, patience=0, monitor="hr@1", batch_size=32, lr=1e-2, progress=False)
    hist = fit(model, TrainWindows(split.train, 10), train, validate=lambda m: evaluate(m, split))
    after = evaluate(model, split, part="test")
    assert before.metric("hr@1") < 0.3
    assert after.metric("hr@1") >= 0.8, (after.overall, hist.valid)


def test_bert4rec_eval_loss_is_the_next_item_cross_entropy() -> None:
    """Eval mode masks only the last item: the loss equals CE of score() on the history before it."""
    split = cyclic_split(n_items=20, n_users=10)
    model = BERT4Rec.build(BERT4RecConfig(dim=16, n_layers=1, max_len=6, dropout=0.0), context(split))
    model.eval()
    windows = TrainWindows(split.train, 5)
    batch = windows.batch(np.arange(len(windows)))
    seq = torch.cat([batch.items, batch.targets[:, -1:]], 1)[:, -6:]  # the original sub-sequences
    with torch.no_grad():
        scores = model.score(SeqBatch(seq[:, :-1], seq[:, -1], batch.users))[:, 1:]  # [B, N]
        ref = torch.nn.functional.cross_entropy(scores, seq[:, -1] - 1)
        torch.testing.assert_close(model.loss(batch), ref, rtol=1e-5, atol=1e-6)
        assert model.item_embeddings().shape == (21, 16)  # no row for [MASK] (index 21)
    model.train()
    model.reseed(3)
    a = model.loss(batch)
    model.reseed(3)
    b = model.loss(batch)
    model.reseed(4)
    c = model.loss(batch)
    assert torch.equal(a, b) and not torch.equal(a, c)  # masks follow the seed (no dropout here)


def test_bert4rec_with_a_content_tower_scores_appended_items(block_split: Split) -> None:
    ctx = block_context(block_split)
    cfg = BERT4RecConfig(dim=16, n_layers=1, max_len=6, tower=TowerConfig(kind="text"))
    model = BERT4Rec.build(cfg, ctx).eval()
    n = block_split.n_items
    feats = {m: torch.cat([f, f[5:6]]) for m, f in ctx.item_features.items()}
    missing = {m: torch.cat([mk, mk[5:6]]) for m, mk in ctx.feature_missing.items()}
    batch = SeqBatch(torch.tensor([[0, 3, 4], [7, 8, 9]]), torch.zeros(2, dtype=torch.long), torch.tensor([1, 2]))
    with torch.no_grad():
        model.set_item_features(feats, missing)
        s = model.score(batch)
    assert s.shape == (2, n + 2)
    torch.testing.assert_close(s[:, -1], s[:, 5])


# --- registry, configs, pipeline -------------------------------------------------------------------


def test_registry_and_config_errors(block_split: Split) -> None:
    ctx = block_context(block_split)
    for name, cls in (("bert4rec", BERT4Rec), ("lightgcn", LightGCN), ("mmgcn", MMGCN), ("vbpr", VBPR)):
        assert isinstance(build_model(name, None, ctx), cls)
    no_features = dataclasses.replace(ctx, item_features={}, feature_missing={})
    with pytest.raises(ConfigError, match="features"):
        VBPR.build(VBPRConfig(), no_features)
    with pytest.raises(ConfigError, match="audio"):
        MMGCN.build(MMGCNConfig(modalities=["audio"]), ctx)
    with pytest.raises(ConfigError, match="mask_prob"):
        BERT4Rec.build(BERT4RecConfig(mask_prob=1.0), ctx)
    with pytest.raises(ConfigError, match="divisible"):
        BERT4Rec.build(BERT4RecConfig(dim=10, n_heads=3), ctx)
    with pytest.raises(ConfigError, match="lightgcn"):
        LightGCN.build(LightGCNConfig(n_layers=-1), ctx)
    wrong = Interactions.from_arrays(np.array([1]), np.array([1]), n_users=2, n_items=2)
    with pytest.raises(ConfigError, match="built for"):
        LightGCN.build(LightGCNConfig(), ctx).attach(wrong)


def test_pipeline_trains_through_training_source_and_reloads(tmp_path: Path) -> None:
    from modalrec.experiment import (
        DataConfig,
        EvalConfig,
        ExperimentConfig,
        FeaturesConfig,
        ModelSpec,
        SplitConfig,
    )
    from modalrec.pipeline import evaluate_run, run_experiment

    cfg = ExperimentConfig(
        name="lgcn", output_dir=str(tmp_path),
        data=DataConfig(source="synthetic", options={"n_users": 60, "n_items": 50, "avg_seq_len": 8}),
        split=SplitConfig(kind="global_temporal"),
        features=FeaturesConfig(cache_dir=str(tmp_path / "cache")),
        model=ModelSpec(name="lightgcn", params={"dim": 8, "n_layers": 2}),
        train=TrainConfig(epochs=2, batch_size=64, progress=False),
        eval=EvalConfig(ks=[10]),
    )
    result = run_experiment(cfg)
    assert result.history.epochs == 2 and result.model.graph is not None
    again = evaluate_run(result.run_dir, part="test")
    assert again.metric("ndcg@10") == pytest.approx(result.test.metric("ndcg@10"), abs=1e-6)

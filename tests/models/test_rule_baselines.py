"""No-learning baselines against hand computations: newest-first, content-kNN, repeat-history, recent pop
with a launch-time tie-break."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.data.item_age import ItemLaunch
from modalrec.data.sources.common import RawEvents, build_dataset
from modalrec.data.splits import from_presplit
from modalrec.errors import ConfigError
from modalrec.evaluation.evaluator import Evaluator
from modalrec.features.encoders.hashing import HashingText
from modalrec.models import build_model
from modalrec.models.base import ModelContext
from modalrec.models.coldstart import ContentKNNConfig, NewestFirstConfig, RepeatHistoryConfig, idf_weights
from modalrec.models.popularity import RecentPopConfig
from modalrec.pipeline import item_launch
from modalrec.types import SeqBatch

# (user, item, ts); rows 3, 5, 7, 8, 9 are TEST, row 6 VALID. Metadata launch: A 100, B 300, E 50.
LOG = [("u1", "E", 60), ("u1", "A", 120), ("u2", "C", 150), ("u2", "A", 200), ("u1", "B", 310), ("u3", "B", 350),
       ("u3", "D", 400), ("u1", "D", 410), ("u2", "E", 420), ("u3", "F", 500)]
META = {"A": 100, "B": 300, "E": 50}
# Launch known at each TEST query, newest first (first appearances count only strictly before the query):
#   ts 200: C 150 > A 100 > E 50; B (launches 300) and D, F (first seen later) unknown -> A ranks 2
#   ts 350: B 300 > C > A > E; D (first event 400) unknown                           -> B ranks 1
#   ts 410: D 400 > B > C > A > E                                                    -> D ranks 1
#   ts 420: D > B > C > A > E                                                        -> E ranks 5
#   ts 500: F (its only event is the one predicted) unknown: ties below every item   -> F ranks 6
HAND_RANKS = {200: 2, 350: 1, 410: 1, 420: 5, 500: 6}


def log_split():
    users, items, ts = (np.asarray(c) for c in zip(*LOG))
    records = {i: {"title": i, "launch_ts": META.get(i)} for i in set(items)}
    ds = build_dataset("log", "test", RawEvents(users, items, ts=ts.astype(np.int64)), files={}, records=records,
                       text_fields=["title"], launch_field="launch_ts")
    return ds, from_presplit(ds.interactions, np.array([6]), np.array([3, 5, 7, 8, 9]))


def test_newest_first_matches_hand_computation() -> None:
    ds, split = log_split()
    ctx = ModelContext(n_items=split.n_items, n_users=split.n_users, item_launch=item_launch(ds, split))
    model = build_model("newest_first", NewestFirstConfig(), ctx).fit_counts(split)
    report = Evaluator(split.test, split.n_items, ks=(1, 5), exclude_seen=False).run(model)
    assert dict(zip(split.test.ts.tolist(), report.ranks.tolist())) == HAND_RANKS


def test_newest_first_needs_launch_times() -> None:
    with pytest.raises(ConfigError, match="launch"):
        build_model("newest_first", NewestFirstConfig(), ModelContext(n_items=3, n_users=1))


def test_recent_pop_launch_tie_break() -> None:
    ds, split = log_split()
    ctx = ModelContext(n_items=split.n_items, n_users=split.n_users, item_launch=item_launch(ds, split))
    model = build_model("recent_pop", RecentPopConfig(window=1.0, launch_tie_break=True), ctx).fit_counts(split)
    # training: E, A, C, B once each (all recent, all count 1): ties broken newest first at the query time
    at = {int(t): i for i, t in enumerate(split.test.ts)}
    idx = np.array([at[200], at[420]])
    from modalrec.data.sequences import eval_batch

    scores = model.score(eval_batch(split.test, idx, 0))
    name = {ds.item_vocab.index(x): x for x in "ABCDEF"}
    order = [[name[int(i)] for i in torch.argsort(row[1:], descending=True, stable=True) + 1] for row in scores]
    assert order[0][:4] == ["C", "A", "E", "B"]  # B launches at 300: unknown at ts 200
    assert order[1] == ["B", "C", "A", "E", "D", "F"]  # D, F have no training event; D launched (400), F not


def test_content_knn_is_cosine_of_mean_history() -> None:
    g = torch.Generator().manual_seed(0)
    n, max_len = 7, 3
    text, image = torch.randn(n + 1, 4, generator=g), torch.randn(n + 1, 2, generator=g)
    missing = {"text": torch.zeros(n + 1, dtype=torch.bool), "image": torch.zeros(n + 1, dtype=torch.bool)}
    missing["image"][5] = True
    ctx = ModelContext(n_items=n, n_users=2, item_features={"text": text, "image": image}, feature_missing=missing)
    model = build_model("content_knn", ContentKNNConfig(max_len=max_len), ctx).fit_counts(None)
    hist = torch.tensor([[0, 0, 2, 5, 6], [0, 0, 0, 0, 0]])
    scores = model.score(SeqBatch(hist, torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64)))

    def vec(i: int) -> np.ndarray:
        parts = [text[i].numpy() / np.linalg.norm(text[i].numpy())]
        parts.append(np.zeros(2) if i == 5 else image[i].numpy() / np.linalg.norm(image[i].numpy()))
        v = np.concatenate(parts)
        return v / np.linalg.norm(v)

    q = np.mean([vec(i) for i in (2, 5, 6)], axis=0)  # the last max_len = 3 items
    want = [0.0] + [float(vec(i) @ q / np.linalg.norm(q)) for i in range(1, n + 1)]
    np.testing.assert_allclose(scores[0].numpy(), want, rtol=1e-5, atol=1e-6)
    assert torch.all(scores[1] == 0)  # no history: every item ties


def test_content_knn_decay_weights_the_newest_items_most() -> None:
    g = torch.Generator().manual_seed(1)
    n = 6
    text = torch.randn(n + 1, 5, generator=g)
    ctx = ModelContext(n_items=n, n_users=2, item_features={"text": text})
    model = build_model("content_knn", ContentKNNConfig(max_len=3, decay=0.5), ctx).fit_counts(None)
    hist = torch.tensor([[1, 2, 5, 3, 6], [0, 0, 0, 4, 2]])  # row 0's window [5, 3, 6]; row 1 two items
    scores = model.score(SeqBatch(hist, torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64)))
    unit = (text / text.norm(dim=1, keepdim=True)).numpy()
    for row, weighted in ((0, 0.25 * unit[5] + 0.5 * unit[3] + unit[6]), (1, 0.5 * unit[4] + unit[2])):
        want = [0.0] + [float(unit[i] @ weighted / np.linalg.norm(weighted)) for i in range(1, n + 1)]
        np.testing.assert_allclose(scores[row].numpy(), want, rtol=1e-5, atol=1e-6)
    # the newest history item is the nearest item to a decayed query; the plain mean need not agree
    assert int(scores[1, 1:].argmax()) + 1 == 2
    with pytest.raises(ConfigError, match="decay"):
        build_model("content_knn", ContentKNNConfig(decay=0.0), ctx)


def test_repeat_history_newest_first() -> None:
    model = build_model("repeat_history", RepeatHistoryConfig(max_len=4), ModelContext(n_items=8, n_users=1))
    batch = SeqBatch(torch.tensor([[9, 3, 5, 3, 7]]) % 9, torch.zeros(1, dtype=torch.int64),
                     torch.zeros(1, dtype=torch.int64))  # window [3, 5, 3, 7]: 7 newest, then 3, then 5
    assert model.score(batch)[0].tolist() == [0, 0, 0, 3, 0, 2, 0, 4, 0]


def test_launch_ranks_without_query_time_use_everything_known() -> None:
    ds, split = log_split()
    launch: ItemLaunch = item_launch(ds, split)
    from modalrec.models.coldstart import launch_ranks

    r = launch_ranks(launch, torch.arange(split.n_items + 1), None)[0]
    by = {x: float(r[ds.item_vocab.index(x)]) for x in "ABCDEF"}
    assert by["F"] > by["D"] > by["B"] > by["C"] > by["A"] > by["E"] > 0 == float(r[0])


def test_idf_weights_count_the_items_using_each_column() -> None:
    bags = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, -2.0]])  # row 0 PAD
    w = idf_weights(bags)
    n = 3.0
    want = [np.log((1 + n) / (1 + df)) + 1 for df in (3, 1, 1)]  # a column every item uses weighs 1
    np.testing.assert_allclose(w.numpy(), want, rtol=1e-6)


def test_content_knn_lexical_ranks_the_shared_rare_word_first() -> None:
    # every title says "pack"; only the target shares the history item's model number. The sentence-encoder
    # stand-in (text) ranks a decoy nearest; the exact words (lexical, IDF-weighted) find the variant
    titles = ["", "acme x100 sensor pack", "acme x100 probe pack", "foo widget pack", "bar gadget pack",
              "baz gizmo pack"]
    n = len(titles) - 1
    enc = HashingText(dim=256)
    lexical = torch.from_numpy(np.concatenate([np.zeros((1, 256), np.float32), enc.encode(titles[1:]).features]))
    text = torch.zeros(n + 1, 2)
    text[1:] = torch.tensor([[1.0, 0.0], [0.8, 0.6], [1.0, 0.05], [0.3, 1.0], [0.0, 1.0]])
    ctx = ModelContext(n_items=n, n_users=1, item_features={"text": text, "lexical": lexical})
    hist = SeqBatch(torch.tensor([[0, 1]]), torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64))

    def ranked(modalities: str) -> list[int]:
        model = build_model("content_knn", ContentKNNConfig(modalities=modalities), ctx).fit_counts(None)
        scores = model.score(hist)[0, 2:]  # items 2..n (item 1 is the history)
        return (torch.argsort(scores, descending=True) + 2).tolist()

    assert ranked("text")[0] == 3  # the decoy
    assert ranked("lexical")[0] == 2 and ranked("text+lexical")[0] == 2
    # without IDF weighting "pack" alone would tie the other items; with it they stay below the variant by far
    model = build_model("content_knn", ContentKNNConfig(modalities="lexical"), ctx).fit_counts(None)
    scores = model.score(hist)[0]
    assert scores[2] > 2 * scores[3:].max()

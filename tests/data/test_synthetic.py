"""The built-in synthetic dataset: deterministic, launch-respecting, cold items in the temporal test
period, text and images that carry the latent attributes, and a real sequential signal that a
content-only scorer can use on items never seen in training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from modalrec.data.dataset import Dataset
from modalrec.data.items import ItemTable
from modalrec.data.sources.synthetic import (
    N_VALUES,
    SyntheticConfig,
    build_users,
    config_of,
    generate,
    item_attributes,
    item_launch_ts,
)
from modalrec.data.sources.synthetic_text import ATTRIBUTE_NAMES, synonyms
from modalrec.data.splits import global_temporal
from modalrec.data.vocab import Vocabulary
from modalrec.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def demo() -> Dataset:
    return generate()  # the default size, as used by `make demo`


def _mentions(texts: list[str], attribute: str) -> np.ndarray:
    """[n_items, n_values] bool: does item text mention any synonym of each attribute value?"""
    k = N_VALUES[ATTRIBUTE_NAMES.index(attribute)]
    pats = [re.compile(r"\b(" + "|".join(map(re.escape, synonyms(attribute, v))) + r")\b", re.IGNORECASE)
            for v in range(k)]
    return np.array([[bool(p.search(t)) for p in pats] for t in texts])


def _item_texts(ds: Dataset) -> list[str]:
    return [f"{t} {d}" for t, d in zip(ds.items.fields["title"][1:], ds.items.fields["description"][1:])]


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = generate(n_users=80, n_items=150, seed=3)
    b = generate(n_users=80, n_items=150, seed=3)
    c = generate(n_users=80, n_items=150, seed=4)
    for name in ("user", "item", "ts", "row"):
        np.testing.assert_array_equal(getattr(a.interactions, name), getattr(b.interactions, name))
    assert a.items.fields == b.items.fields
    assert a.content_hash() == b.content_hash()
    np.testing.assert_array_equal(item_attributes(a), item_attributes(b))
    assert a.content_hash() != c.content_hash()
    assert a.items.fields["title"] != c.items.fields["title"]
    assert a.summary["seed"] == 3 and a.summary["config"]["n_items"] == 150


def test_shape_and_timestamps(demo: Dataset) -> None:
    inter = demo.interactions
    assert demo.n_users == 600 and demo.n_items == 800
    assert 15 <= inter.seq_lengths()[1:].mean() <= 25  # avg_seq_len=20, approximately
    assert inter.seq_lengths()[1:].min() >= 3
    assert inter.ts.dtype == np.int64
    same_user = inter.user[1:] == inter.user[:-1]
    assert (np.diff(inter.ts)[same_user] > 0).all(), "timestamps must strictly increase within a user"
    lo, hi = demo.summary["timeline"]
    assert inter.ts.min() >= lo and inter.ts.max() < hi + 10_000
    assert sorted(inter.row.tolist()) == list(range(len(inter)))
    json.dumps(demo.describe())  # the summary goes into reports: small and JSON-serialisable
    # no repeats: the evaluator masks history, so a repeated target could never be ranked
    for u in range(1, demo.n_users + 1):
        assert len(np.unique(inter.sequence(u))) == len(inter.sequence(u))


def test_items_only_after_launch(demo: Dataset) -> None:
    inter, launch = demo.interactions, item_launch_ts(demo)
    assert (inter.ts >= launch[inter.item]).all()
    late = launch[1:] >= np.quantile(inter.ts, 0.7)
    assert 0.12 <= late.mean() <= 0.30, "a meaningful share of items launches late in the timeline"


def test_temporal_split_has_cold_items(demo: Dataset) -> None:
    split = global_temporal(demo.interactions)
    test, valid = split.test, split.valid
    assert test.cold_item.mean() >= 0.10
    assert valid.cold_item.mean() >= 0.05
    assert len(np.unique(test.target[test.cold_item])) >= 30
    warm = ~test.cold_item & ~test.cold_user
    assert warm.mean() >= 0.25, "most test events should still come from known users and items"
    # cold targets are (mostly) items launched after the training cut, not just unlucky old items
    launch = item_launch_ts(demo)
    assert (launch[test.target[test.cold_item]] >= split.params["train_end_ts"]).mean() >= 0.8


def test_text_names_attributes_with_synonyms(demo: Dataset) -> None:
    texts = _item_texts(demo)
    attrs = item_attributes(demo)[1:]
    assert (item_attributes(demo)[0] == -1).all()
    for attribute, min_share in (("category", 1.0), ("style", 1.0), ("colour", 0.75), ("material", 0.6)):
        a = ATTRIBUTE_NAMES.index(attribute)
        hits = _mentions(texts, attribute)
        own = hits[np.arange(len(texts)), attrs[:, a]]
        assert own.mean() >= min_share, f"{attribute}: only {own.mean():.2f} of items name their own value"
        others = hits.sum(1) - own
        assert (others > 0).mean() <= 0.02, f"{attribute}: text names a wrong value"
    # no single surface form dominates: exact matching of the canonical word misses most items
    colour = attrs[:, ATTRIBUTE_NAMES.index("colour")]
    for v in range(N_VALUES[1]):
        items = [t for t, c in zip(texts, colour) if c == v]
        forms = {s for s in synonyms("colour", v)
                 if any(re.search(rf"\b{re.escape(s)}\b", t, re.IGNORECASE) for t in items)}
        assert len(forms) >= 3
        canonical = np.mean([bool(re.search(rf"\b{synonyms('colour', v)[0]}\b", t)) for t in items])
        assert canonical <= 0.6
    assert set(demo.items.fields) == {"title", "description", "category", "brand"}


def test_images_follow_colour_and_are_not_rewritten(tmp_path: Path) -> None:
    from PIL import Image

    ds = generate(n_users=20, n_items=240, seed=5, image_dir=tmp_path, image_size=24)
    assert ds.items.image_root == str(tmp_path)
    assert ds.summary["images_written"] == 240
    means = []
    for i in range(1, ds.n_items + 1):
        path = Path(ds.items.image_path(i))
        assert path.is_file() and path.parent == tmp_path
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (24, 24) and im.mode == "RGB"
            means.append(np.asarray(im, dtype=np.float64).reshape(-1, 3).mean(0))
    means = np.array(means)  # [n, 3]
    colour = item_attributes(ds)[1:, 1]
    # nearest-centroid on the mean pixel colour, centroids from even items, scored on odd items
    fit, held = np.arange(0, 240, 2), np.arange(1, 240, 2)
    cents = np.array([means[fit][colour[fit] == v].mean(0) for v in range(N_VALUES[1])])
    pred = np.argmin(((means[held, None, :] - cents[None]) ** 2).sum(-1), axis=1)
    assert (pred == colour[held]).mean() >= 0.6  # chance is 1/8
    # same seed again: identical bytes, nothing rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = generate(n_users=20, n_items=240, seed=5, image_dir=tmp_path, image_size=24)
    assert again.summary["images_written"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes
    assert generate(n_users=20, n_items=240, seed=5).items.image_paths == [None] * 241


def test_next_item_shares_attributes_with_recent_items(demo: Dataset) -> None:
    inter, attrs = demo.interactions, item_attributes(demo)
    rng = np.random.default_rng(0)
    nxt = np.flatnonzero(np.r_[False, inter.user[1:] == inter.user[:-1]])  # events with a predecessor
    lengths = inter.seq_lengths()[inter.user[nxt]]
    other = inter.offsets[inter.user[nxt]] + rng.integers(0, lengths)  # random event of the same user
    keep = np.abs(other - nxt) > 1
    for a in (0, 1):  # category, colour
        adjacent = (attrs[inter.item[nxt - 1], a] == attrs[inter.item[nxt], a]).mean()
        same_user = (attrs[inter.item[other[keep]], a] == attrs[inter.item[nxt[keep]], a]).mean()
        freq = np.bincount(attrs[1:, a]) / demo.n_items
        chance = float((freq**2).sum())
        assert adjacent >= 1.4 * same_user, "signal must be sequential, not only user preference"
        assert same_user >= 1.5 * chance
    top = np.sort(inter.item_counts()[1:])[::-1]
    assert top[: demo.n_items // 10].sum() >= 0.27 * top.sum(), "some popularity skew"


def test_users_prefer_attributes_that_drift(demo: Dataset) -> None:
    """Events follow each user's latent favourite categories, and favourites that were replaced
    (drift) dominate early events, the new ones late events."""
    inter, cat = demo.interactions, item_attributes(demo)[:, 0]
    users = build_users(config_of(demo))
    k = N_VALUES[0]
    start, end = users.pref_start[:, :k], users.pref_end[:, :k]  # category block of the preferences
    fav = start.argmax(1)
    share = np.bincount(cat[1:], minlength=k) / demo.n_items
    ev_cat, ev_user = cat[inter.item], inter.user
    assert (ev_cat == fav[ev_user]).mean() >= 2.0 * share[fav[ev_user]].mean()
    top_s = np.argsort(-start, 1)[:, :2]
    top_e = np.argsort(-end, 1)[:, :2]
    gone = np.zeros((demo.n_users + 1, k), dtype=bool)
    new = np.zeros_like(gone)
    for u in range(1, demo.n_users + 1):
        gone[u, np.setdiff1d(top_s[u], top_e[u])] = True
        new[u, np.setdiff1d(top_e[u], top_s[u])] = True
    drifted = gone.any(1) & new.any(1)
    assert drifted[1:].mean() >= 0.2
    pos, length = inter.position_in_user(), inter.seq_lengths()[ev_user]
    in_gone, in_new = gone[ev_user, ev_cat], new[ev_user, ev_cat]
    early = drifted[ev_user] & (pos < length / 3)
    late = drifted[ev_user] & (pos >= 2 * length / 3)
    assert in_gone[early].mean() >= 1.3 * in_new[early].mean()
    assert in_new[late].mean() >= 1.3 * in_gone[late].mean()


def test_content_scorer_ranks_cold_items(demo: Dataset) -> None:
    """A fixed attribute-matching scorer (no training, no ids) on cold-item test events beats random
    by a wide margin: the data lets content place unseen items. Full ranking, history masked,
    pessimistic ties."""
    split = global_temporal(demo.interactions)
    test = split.test.subset(split.test.cold_item)
    attrs = item_attributes(demo)
    onehot = np.zeros((demo.n_items + 1, sum(N_VALUES)))
    offsets = np.r_[0, np.cumsum(N_VALUES)[:-1]]
    for a in range(len(N_VALUES)):
        onehot[np.arange(1, demo.n_items + 1), offsets[a] + attrs[1:, a]] = 1.0
    ctx = np.zeros((len(test), onehot.shape[1]))
    for e in range(len(test)):
        hist = test.history(e)
        if len(hist):
            ctx[e] = onehot[hist[-1]] + 0.5 * onehot[hist[-3:]].sum(0) + onehot[hist].mean(0)
    scores = ctx @ onehot.T  # [E, N+1]
    scores[:, 0] = -np.inf
    for e in range(len(test)):
        scores[e, test.history(e)] = -np.inf
    target_score = scores[np.arange(len(test)), test.target]
    rank = (scores >= target_score[:, None]).sum(1)  # includes the target itself: 1-based, ties pessimistic
    ndcg = np.where(rank <= 10, 1.0 / np.log2(rank + 1), 0.0).mean()
    random_ndcg = np.mean([1 / np.log2(r + 1) for r in range(1, 11)]) * 10 / demo.n_items
    assert ndcg >= 0.1 and ndcg >= 10 * random_ndcg, (ndcg, random_ndcg)


def test_bad_config_and_foreign_dataset() -> None:
    with pytest.raises(ConfigError):
        generate(n_users=10, n_items=50, no_such_knob=1)
    with pytest.raises(ConfigError):
        generate(n_users=10, n_items=50, launch_fraction=1.5)
    with pytest.raises(ConfigError):
        SyntheticConfig.from_dict({"n_items": 50, "bogus": 1})
    ds = generate(n_users=10, n_items=50, avg_seq_len=5)
    expected = SyntheticConfig(n_users=10, n_items=50, avg_seq_len=5)
    assert SyntheticConfig.from_dict(ds.summary["config"]) == expected
    foreign = Dataset("other", ds.interactions, ds.items, ds.user_vocab, {"source": "csv"})
    with pytest.raises(DataError, match="generator"):
        item_attributes(foreign)
    # attributes follow raw ids, so a filtered / reordered vocabulary still lines up
    ids = ds.item_vocab.raw_ids[::-2]
    titles = [""] + [ds.items.fields["title"][ds.item_vocab.index(r)] for r in ids]
    table = ItemTable(Vocabulary(ids), {"title": titles})
    sub = Dataset("synthetic", ds.interactions, table, ds.user_vocab, ds.summary)
    full = item_attributes(ds)
    np.testing.assert_array_equal(item_attributes(sub)[1:], full[ds.item_vocab.indices(ids)])
    bad_items = ItemTable(Vocabulary(["item00001", "x9"]))
    bad = Dataset("synthetic", ds.interactions, bad_items, ds.user_vocab, ds.summary)
    with pytest.raises(DataError, match="x9"):
        item_launch_ts(bad)

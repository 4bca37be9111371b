"""Loaders: exact sequences on small files, clear errors on malformed input, known counts on real data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from modalrec.data.dataset import Dataset
from modalrec.data.sources import (
    load_amazon_iisan,
    load_amazon_json,
    load_dataset,
    load_movielens,
    load_recbole,
    load_table,
)
from modalrec.data.splits import from_presplit
from modalrec.errors import ConfigError, DataError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def seqs(ds: Dataset) -> dict[str, list[str]]:
    """{raw user: [raw items in order]} — what a loader must get exactly right."""
    inter = ds.interactions
    return {ds.user_vocab.raw(u): [ds.item_vocab.raw(int(i)) for i in inter.sequence(u)]
            for u in range(1, ds.n_users + 1)}


def seq_of(ds: Dataset, user: str) -> list[str]:
    return [ds.item_vocab.raw(int(i)) for i in ds.interactions.sequence(ds.user_vocab.index(user))]


def raises(fn, *parts: str) -> str:
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    for part in parts:
        assert part in msg, f"{part!r} not in error message {msg!r}"
    return msg


# ------------------------------------------------------------------ MovieLens
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def ml_dir(tmp_path: Path, data: str) -> Path:
    d = tmp_path / "ml"
    write(d / "u.data", data)
    write(d / "u.genre", "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    flags = {"10": {1, 16}, "20": {5}, "30": {0}}
    rows = [f"{m}|Movie {m} (1995)|01-Jan-1995||http://x|" + "|".join("1" if i in f else "0" for i in range(19))
            for m, f in flags.items()]
    (d / "u.item").write_bytes(("\n".join(rows) + "\n").replace("Movie 30", "Caf\xe9 30").encode("latin-1"))
    write(d / "tmdb_items.csv", 'movie_id,title,overview\n10,a,"First plot, with comma"\n20,b,Plot 20\n'
          "10,a,Duplicate plot\n")
    write(d / "posters" / "10.jpg", "not really a jpeg")
    return d


ML_DATA = "1\t10\t5\t100\n1\t20\t3\t50\n2\t10\t4\t7\n1\t30\t4\t100\n2\t30\t2\t7\n"


def test_movielens_small(tmp_path: Path) -> None:
    ds = load_movielens(ml_dir(tmp_path, ML_DATA))
    # user 1: ts 50 first, then the tie at ts 100 keeps file order (10 before 30)
    assert seqs(ds) == {"1": ["20", "10", "30"], "2": ["10", "30"]}
    assert ds.interactions.ts[ds.interactions.offsets[1]:ds.interactions.offsets[2]].tolist() == [50, 100, 100]
    i10, i30 = ds.item_vocab.index("10"), ds.item_vocab.index("30")
    assert ds.items.record(i10) == {"title": "Movie 10 (1995)", "genres": "Action, Thriller",
                                    "plot": "First plot, with comma"}
    assert ds.items.record(i30)["title"] == "Café 30 (1995)" and ds.items.record(i30)["genres"] == ""
    assert ds.items.image_path(i10).endswith("posters/10.jpg") and ds.items.image_path(i30) is None
    assert ds.summary["tmdb_duplicate_rows_ignored"] == 1 and ds.summary["time"] == "unix_seconds"
    kept = load_movielens(ml_dir(tmp_path, ML_DATA), min_rating=4, plots=False, posters=False)
    assert seqs(kept) == {"1": ["10", "30"], "2": ["10"]}
    assert kept.summary["filters"] == [{"filter": "rating", "min_rating": 4.0,
                                        "before": {"users": 2, "items": 3, "interactions": 5},
                                        "after": {"users": 2, "items": 2, "interactions": 3}}]
    assert "plot" in kept.items.fields and kept.items.record(1)["plot"] == ""


@pytest.mark.parametrize("bad, line, field", [
    ("1\t10\t5\t100\n1\t20\t3\tyesterday\n", "line 2", "'timestamp'"),
    ("1\t10\t5\t100\n\n1\t20\t3\n", "line 3", None),
    ("1\t10\t5\t100\n1\t99\t3\t5\n", "line 2", "'item_id'"),
    ("1\t10\tfive\t100\n", "line 1", "'rating'"),
])
def test_movielens_malformed(tmp_path: Path, bad: str, line: str, field: str | None) -> None:
    d = ml_dir(tmp_path, bad)
    raises(lambda: load_movielens(d), "u.data", line, *([field] if field else []))


# ------------------------------------------------------------------ IISAN TSVs
def test_iisan_small(tmp_path: Path) -> None:
    users = write(tmp_path / "users.tsv", "uA\tB2 B1 B2\nuB\tB3 B1\n")
    items = write(tmp_path / "x_items.tsv", "B1\tSalt &amp; Pepper\nB2\t  Lamp  \nB3\tRope\nB9\tNever bought\n")
    ds = load_amazon_iisan(users, items)
    assert seqs(ds) == {"uA": ["B2", "B1", "B2"], "uB": ["B3", "B1"]}  # repeats are kept
    assert ds.interactions.ts.tolist() == [0, 1, 2, 0, 1]  # order only: position in the user's sequence
    assert ds.item_vocab.raw_ids == ["B2", "B1", "B3"]  # first appearance; B9 never bought -> dropped
    assert ds.items.record(ds.item_vocab.index("B1")) == {"title": "Salt & Pepper"}
    assert ds.name == "x" and ds.summary["unused_catalogue_items"] == 1 and ds.summary["time"] == "order"
    full = load_amazon_iisan(users, items, keep_unused_items=True)
    assert full.item_vocab.raw_ids == ["B2", "B1", "B3", "B9"] and len(full.interactions) == 5


@pytest.mark.parametrize("users, line, field", [
    ("uA\tB1 B2\nuB B3 B1\n", "line 2", None),  # space instead of tab: one column
    ("uA\tB1\nuB\tB1 B7\n", "line 2", "'item_ids'"),  # unknown item
    ("uA\tB1\nuA\tB2\n", "line 2", "'user_id'"),  # repeated user
    ("uA\tB1\nuB\t \n", "line 2", "'item_ids'"),  # empty sequence
])
def test_iisan_malformed(tmp_path: Path, users: str, line: str, field: str | None) -> None:
    u = write(tmp_path / "users.tsv", users)
    i = write(tmp_path / "items.tsv", "B1\tOne\nB2\tTwo\nB3\tThree\n")
    raises(lambda: load_amazon_iisan(u, i), "users.tsv", line, *([field] if field else []))
    write(tmp_path / "empty.tsv", "\n")
    raises(lambda: load_amazon_iisan(tmp_path / "empty.tsv", i), "empty.tsv", "empty")


# ------------------------------------------------------------------ RecBole atomic
INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "u1\ti1\t4\t10\nu2\ti2\t5\t3\nu1\ti3\t1\t5\nu1\ti2\t2\t10.0\n")


def test_recbole_atomic(tmp_path: Path) -> None:
    write(tmp_path / "toy.inter", INTER)
    write(tmp_path / "toy.item", "item_id:token\ttitle:token_seq\tprice:float\ni1\tOne\t1.5\ni2\tTwo &amp; more\t2\n"
          "i3\tThree\t3\n")
    write(tmp_path / "toy.text", "item_id:token\ttext:token_seq\ni1\tthe first item\n")
    ds = load_recbole(tmp_path, "toy")
    assert seqs(ds) == {"u1": ["i3", "i1", "i2"], "u2": ["i2"]}  # ts 5, then tie at 10 in file order
    assert ds.items.field_names == ["title", "text"]  # float column skipped
    assert ds.items.record(ds.item_vocab.index("i1")) == {"title": "One", "text": "the first item"}
    assert ds.items.record(ds.item_vocab.index("i2"))["title"] == "Two & more"
    assert seqs(load_recbole(tmp_path, "toy", min_rating=2)) == {"u1": ["i1", "i2"], "u2": ["i2"]}
    notime = load_recbole(tmp_path, "toy", time_field=None)
    assert seqs(notime)["u1"] == ["i1", "i3", "i2"] and notime.summary["time"] == "order"
    assert load_dataset("recbole", directory=tmp_path, name="toy").n_items == 3


@pytest.mark.parametrize("inter, line, field", [
    (INTER.replace("item_id:token", "item:token"), "line 1", "'item_id'"),  # missing required column
    (INTER.replace("\t5\n", "\tlater\n"), "line 4", "'timestamp'"),
    (INTER.replace("u2\ti2", "u2\ti7"), "line 3", "'item_id'"),  # not in toy.item
    (INTER.replace("u2\ti2\t5\t3", "u2\ti2\t5"), "line 3", "'timestamp'"),  # short row names the missing field
])
def test_recbole_malformed(tmp_path: Path, inter: str, line: str, field: str) -> None:
    write(tmp_path / "toy.inter", inter)
    write(tmp_path / "toy.item", "item_id:token\ttitle:token_seq\ni1\tOne\ni2\tTwo\ni3\tThree\n")
    raises(lambda: load_recbole(tmp_path, "toy"), "toy.inter", line, field)


def unisrec_dir(tmp_path: Path, train: list[str]) -> Path:
    """Two users; histories truncated to the last 3 items (user 0's sequence: a b c d e f g h)."""
    d = tmp_path / "uni"
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    write(d / "T.train.inter", head + "".join(r + "\n" for r in train))
    write(d / "T.valid.inter", head + "0\t3 4 5\t6\n1\t7\t2\n")
    write(d / "T.test.inter", head + "0\t4 5 6\t7\n1\t7 2\t0\n")
    write(d / "T.item2index", "".join(f"{c}\t{i}\n" for i, c in enumerate("abcdefgh")))
    write(d / "T.user2index", "alice\t0\nbob\t1\n")
    write(d / "T.text", "item_id:token\ttext:token_seq\n" + "".join(f"{c}\tthe {c} item\n" for c in "abcdefgh"))
    return d


# user 0 train rows in reverse (as UniSRec writes them): targets b..f; the last two have truncated histories
UNI_TRAIN = ["0\t1 2 3\t4", "0\t2 3 4\t5", "0\t0 1 2\t3", "0\t0 1\t2", "0\t0\t1"]


def test_recbole_presplit(tmp_path: Path) -> None:
    ds = load_recbole(unisrec_dir(tmp_path, UNI_TRAIN), "T")
    assert seqs(ds) == {"alice": list("abcdefgh"), "bob": ["h", "c", "a"]}
    assert ds.user_vocab.raw_ids == ["alice", "bob"] and ds.item_vocab.raw_ids == list("abcdefgh")
    assert ds.items.record(ds.item_vocab.index("c")) == {"text": "the c item"}
    split = from_presplit(ds.interactions, ds.presplit["valid_rows"], ds.presplit["test_rows"])
    raw = lambda idx: [ds.item_vocab.raw(int(i)) for i in idx]
    assert raw(split.valid.target) == ["g", "c"] and raw(split.test.target) == ["h", "a"]
    assert raw(split.test.history(0)) == list("abcdefg") and raw(split.valid.history(1)) == ["h"]
    assert len(split.train) == 6 + 1 and ds.summary["history_truncation"] == 3


@pytest.mark.parametrize("train, line", [
    (UNI_TRAIN[:3] + UNI_TRAIN[4:], "line 2"),  # target c missing: the row after it cannot continue
    (UNI_TRAIN[:1] + ["0\t2 3 9\t5"] + UNI_TRAIN[2:], "line 3"),  # index 9 not in item2index
])
def test_recbole_presplit_malformed(tmp_path: Path, train: list[str], line: str) -> None:
    raises(lambda: load_recbole(unisrec_dir(tmp_path, train), "T"), "T.train.inter", line, "item_id")


# ------------------------------------------------------------------ CSV / Parquet
def test_table_csv_and_parquet(tmp_path: Path) -> None:
    inter = write(tmp_path / "log.csv", "uid,iid,when,stars\n007,A,2024-01-02,5\n7,B,2024-01-01,3\n"
                  "007,B,2024-01-01,4\n007,C,2024-01-02,1\n")
    items = write(tmp_path / "items.csv", 'iid,name,desc,img\nA,Alpha,"first, letter",a.png\nB,Beta,,\nC,Gamma,x,\n')
    ds = load_table(inter, "uid", "iid", "when", "stars", items_path=items, text_cols=["name", "desc"],
                    image_col="img", image_root=tmp_path, parse_dates=True)
    assert seqs(ds) == {"007": ["B", "A", "C"], "7": ["B"]}  # ids stay strings: 007 != 7
    assert ds.interactions.ts.min() == 1704067200  # 2024-01-01 UTC
    a = ds.item_vocab.index("A")
    assert ds.items.record(a) == {"name": "Alpha", "desc": "first, letter"}
    assert ds.items.image_path(a) == f"{tmp_path}/a.png" and ds.items.image_path(ds.item_vocab.index("B")) is None
    import pandas as pd

    pq = tmp_path / "log.parquet"
    pd.DataFrame({"u": [1, 2, 1], "i": ["x", "y", "y"], "t": [5, 1, 5]}).to_parquet(pq)
    assert seqs(load_table(pq, "u", "i", "t")) == {"1": ["x", "y"], "2": ["y"]}


@pytest.mark.parametrize("csv, line, field", [
    ("user,item,ts\n1,A,5\n", "line 1", "'uid'"),  # missing column
    ("uid,item,ts\n1,A,5\n2,B,5.5\n", "line 3", "'ts'"),  # non-integer timestamp
    ("uid,item,ts\n1,A,5\n2,Z,6\n", "line 3", "'item'"),  # unknown item
    ("uid,item,ts\n1,A,5\n2,B,6,9\n", "line 3", None),  # extra column
])
def test_table_malformed(tmp_path: Path, csv: str, line: str, field: str | None) -> None:
    inter = write(tmp_path / "log.csv", csv)
    items = write(tmp_path / "items.csv", "item,name\nA,a\nB,b\n")
    call = lambda: load_table(inter, "uid", "item", "ts", items_path=items, text_cols=["name"])
    raises(call, "log.csv", line, *([field] if field else []))


# ------------------------------------------------------------------ Amazon json(.gz)
def amazon_files(tmp_path: Path, reviews: list[object]) -> tuple[Path, Path, Path]:
    rpath = tmp_path / "Toys.json.gz"
    with gzip.open(rpath, "wt", encoding="utf-8") as fh:
        fh.write("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in reviews))
    meta = [{"asin": "A1", "title": "Car &amp; Truck", "brand": "Acme", "category": ["Toys", "Cars"],
             "description": ["<b>Fast</b> car", "red"], "imageURLHighRes": ["http://x/a.jpg"]},
            {"asin": "A1", "title": "duplicate"}, {"asin": "A9", "title": "unreviewed"}]
    mpath = write(tmp_path / "meta_Toys.json", "\n".join(json.dumps(m) for m in meta) + "\n"
                  + "{'asin': 'A2', 'title': 'Old format', 'categories': [['Toys', 'Dolls']]}\n")
    write(tmp_path / "img" / "A2.png", "png")
    return rpath, mpath, tmp_path / "img"


def review(user: str, asin: str, t: object, overall: object = 5.0) -> dict[str, object]:
    return {"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": overall, "reviewText": "ok"}


def test_amazon_json(tmp_path: Path) -> None:
    rev = [review("u1", "A2", 20), review("u1", "A1", 10), review("u2", "A3", 5, 2.0), review("u1", "A3", 20),
           review("u1", "A1", 10)]
    r, m, img = amazon_files(tmp_path, rev)
    ds = load_amazon_json(r, m, img)
    assert seqs(ds) == {"u1": ["A1", "A1", "A2", "A3"], "u2": ["A3"]} and ds.name == "Toys"
    a1, a2, a3 = (ds.item_vocab.index(x) for x in ("A1", "A2", "A3"))
    assert ds.items.record(a1) == {"title": "Car & Truck", "brand": "Acme", "categories": "Toys, Cars",
                                   "description": "Fast car, red"}
    assert ds.items.record(a2)["categories"] == "Toys > Dolls" and ds.items.record(a3)["title"] == ""
    assert ds.items.image_path(a2) == f"{img}/A2.png" and ds.items.image_path(a1) is None
    assert ds.summary["reviewed_items_without_meta"] == 1 and ds.summary["meta_duplicate_rows_ignored"] == 1
    dd = load_amazon_json(r, m, dedupe=True, min_rating=4)
    assert seqs(dd) == {"u1": ["A1", "A2", "A3"]}
    assert [f["filter"] for f in dd.summary["filters"]] == ["dedupe", "rating"]


@pytest.mark.parametrize("bad, line, field, kw", [
    (review("u2", "A1", "last week"), "line 2", "'unixReviewTime'", {}),
    ({"reviewerID": "u2", "unixReviewTime": 3}, "line 2", "'asin'", {}),
    ('{"reviewerID": "u2", "asin": ', "line 2", None, {}),
    (review("u2", "A7", 3), "line 2", "'asin'", {"strict": True}),
    (review("u2", "A1", 3, "great"), "line 2", "'overall'", {"min_rating": 3}),
])
def test_amazon_json_malformed(tmp_path: Path, bad: object, line: str, field: str | None, kw: dict) -> None:
    r, m, _ = amazon_files(tmp_path, [review("u1", "A1", 1), bad])
    raises(lambda: load_amazon_json(r, m, **kw), "Toys.json.gz", line, *([field] if field else []))


def test_dispatch_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="movielens"):
        load_dataset("movielen")


# ------------------------------------------------------------------ real data
@pytest.mark.realdata
def test_real_movielens(shared_data: Path) -> None:
    ds = load_movielens(shared_data / "ml-100k")
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (943, 1682, 100000)
    assert ds.summary["items_with_image"] == 1663 and ds.summary["tmdb_duplicate_rows_ignored"] == 64
    assert ds.items.record(ds.item_vocab.index("1"))["genres"] == "Animation, Children's, Comedy"
    assert np.all(np.diff(ds.interactions.ts)[np.diff(ds.interactions.user) == 0] >= 0)


@pytest.mark.realdata
@pytest.mark.parametrize("users, items, expect", [
    ("am_Industrial_and_Scientific_users.tsv", "Industrial_and_Scientific_items.tsv", (12076, 20825, 85211)),
    # the Instruments items file lists 33,921 titles; 20,618 of them occur in the 10K users' sequences
    ("am_Musical_Instruments_users_10K.tsv", "Musical_Instruments_items.tsv", (10000, 20618, 83828)),
])
def test_real_iisan(shared_data: Path, users: str, items: str, expect: tuple[int, int, int]) -> None:
    d = shared_data / "amazon-iisan"
    ds = load_amazon_iisan(d / users, d / items)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == expect
    first = (d / users).read_text().split("\n", 1)[0].split("\t")
    assert seq_of(ds, first[0]) == first[1].split()
    assert not any("&amp;" in t for t in ds.items.fields["title"])


@pytest.mark.realdata
def test_real_unisrec_presplit(shared_data: Path) -> None:
    d = shared_data / "amazon-scientific-unisrec"
    ds = load_recbole(d, "Scientific")
    assert (ds.n_users, ds.n_items) == (8442, 4385)
    assert len(ds.interactions) == 59427  # measured: 42,543 train + 8,442 valid + 8,442 test events
    split = from_presplit(ds.interactions, ds.presplit["valid_rows"], ds.presplit["test_rows"])
    idx2item = dict(line.split("\t")[::-1] for line in (d / "Scientific.item2index").read_text().splitlines())
    idx2user = dict(line.split("\t")[::-1] for line in (d / "Scientific.user2index").read_text().splitlines())
    for part, es in (("valid", split.valid), ("test", split.test)):
        assert len(es) == 8442 and len(np.unique(es.user)) == 8442  # one event per user
        got = {ds.user_vocab.raw(int(u)): (ds.item_vocab.raw(int(t)), e)
               for e, (u, t) in enumerate(zip(es.user, es.target))}
        for row in (d / f"Scientific.{part}.inter").read_text().strip().split("\n")[1:]:
            u, hist, target = row.split("\t")
            item, e = got[idx2user[u]]
            assert item == idx2item[target]
            h = [ds.item_vocab.raw(int(i)) for i in es.history(e)]
            assert h[-len(hist.split()):] == [idx2item[i] for i in hist.split()]

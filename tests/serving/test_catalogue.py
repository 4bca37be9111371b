"""The live catalogue: transactions, re-adding removed ids, other processes' commits, refusal of another
artifact's catalogue, a crash test with real SIGKILLs (also inside the commit), and PostgreSQL when a
server is reachable."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from catalogue_child import features, request_ids, request_items

import modalrec
from modalrec.errors import DataError, MismatchError, UnknownIdError
from modalrec.serving.catalogue import (
    DuplicateIdError,
    Layout,
    NewItem,
    SqliteCatalogue,
    normalise_id,
    open_catalogue,
)

LAYOUT = Layout((("text", 4), ("image", 3)))
BASE = ["a", "b", "c"]


def item(rid: str, title: str = "t") -> NewItem:
    return NewItem(rid, {"title": title}, None, features(rid, LAYOUT), {"text": False, "image": True})


def test_add_remove_readd_and_other_connections(tmp_path: Path) -> None:
    path = tmp_path / "cat.sqlite"
    w = SqliteCatalogue(path, BASE, "h1", LAYOUT)
    r = SqliteCatalogue(path, BASE, "h1", LAYOUT)  # another process's connection
    cursor = (3, 0)
    assert r.changes(cursor) is None
    assert w.add([item("x"), item("y")], now=100.0) == [4, 5]
    ch = r.changes(cursor)
    assert [(a.idx, a.id, a.added_at) for a in ch.added] == [(4, "x", 100.0), (5, "y", 100.0)]
    assert np.array_equal(ch.added[0].features["text"], features("x", LAYOUT)["text"])
    assert ch.added[0].missing == {"text": False, "image": True} and ch.cursor == (5, 0)
    assert r.changes(ch.cursor) is None  # PRAGMA data_version: nothing new, no query
    with pytest.raises(DuplicateIdError, match="already exist: 'x'"):
        w.add([item("z"), item("x")])
    with pytest.raises(DuplicateIdError, match="'b'"):
        w.add([item("b")])
    assert r.changes(ch.cursor) is None  # the refused transactions left nothing
    assert w.remove(["b", "x"], now=200.0) == [2, 4]
    assert w.remove(["b"]) == [2]  # already removed: no change
    with pytest.raises(UnknownIdError) as err:
        w.remove(["ghost", "a"])
    assert err.value.ids == ["ghost"]
    ch2 = r.changes(ch.cursor)
    assert ch2.added == [] and ch2.removed == [(2, 200.0), (4, 200.0)]
    assert w.add([item("x", "again"), item("b", "back")]) == [6, 7]  # removed ids come back as new items
    ch3 = r.changes(ch2.cursor)
    assert [(a.idx, a.id, a.fields["title"]) for a in ch3.added] == [(6, "x", "again"), (7, "b", "back")]
    with pytest.raises(DuplicateIdError):
        w.add([item("x")])
    assert w.check()["items_added"] == 4


def test_catalogue_of_another_artifact_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cat.sqlite"
    SqliteCatalogue(path, BASE, "h1", LAYOUT).close()
    with pytest.raises(MismatchError, match="belongs to another artifact"):
        SqliteCatalogue(path, BASE, "h2", LAYOUT)
    with pytest.raises(MismatchError, match="layout"):
        SqliteCatalogue(path, BASE, "h1", Layout((("text", 5),)))
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match="not a usable SQLite catalogue"):
        SqliteCatalogue(path, BASE, "h1", LAYOUT)


def test_ids_are_normalised_and_printable() -> None:
    assert normalise_id("cafe\u0301") == "caf\u00e9"  # NFD -> NFC
    assert normalise_id("a/b c") == "a/b c"
    for bad in ("", " x", "x\x00", "x\n", "x\u202eevil", "x\ud800", "x" * 257):
        with pytest.raises(DataError):
            normalise_id(bad)


def test_crash_test_every_acknowledged_add_survives_sigkill(artifact_copy: Path) -> None:
    """A child adds 1-3 items per transaction in a loop and is SIGKILLed at random moments, half the
    time while it is inside COMMIT. After every kill the catalogue opens; every acknowledged add is
    present with its exact features; an unacknowledged one is all there or not at all; nothing else."""
    from modalrec.serving.artifact import load_artifact
    from modalrec.serving.recommender import Recommender

    art = load_artifact(artifact_copy)
    layout = Layout(tuple((m, int(art.store.array(m).shape[1])) for m in art.store.tensors()[0]))
    path = artifact_copy / "catalogue.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(modalrec.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    child = Path(__file__).with_name("catalogue_child.py")
    rng = random.Random(0)
    acked: set[int] = set()
    n_next, kills, in_commit = 0, 0, 0
    t0 = time.monotonic()
    while kills < 60:
        pause = 0.05 if kills % 2 else 0.0
        proc = subprocess.Popen([sys.executable, str(child), str(path), str(artifact_copy / "vocab.json"), art.hash,
                                 layout.to_json(), str(n_next), str(pause)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True)
        lines: list[str] = []
        if pause:  # kill inside a random one of the first commits
            target = rng.randint(1, 4)
            while True:
                line = proc.stdout.readline()
                assert line, f"child exited: {proc.stderr.read()}"
                lines.append(line)
                if line.startswith("commit") and sum(x.startswith("commit") for x in lines) == target:
                    break
            in_commit += 1
        else:
            time.sleep(rng.uniform(0.15, 0.5))  # start-up, opening, or anywhere in the loop
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Not communicate(): it reads the raw pipe and would skip lines readline() already buffered
        # (on a slow machine the child may have written several lines past the one we waited for).
        out, err = proc.stdout.read(), proc.stderr.read()
        assert proc.returncode == -signal.SIGKILL, err
        kills += 1
        lines += out.splitlines(keepends=True)
        tried = [int(x.split()[1]) for x in lines if x.startswith("try")]
        acked |= {int(x.split()[1]) for x in lines if x.startswith("ack")}
        # What a restart sees: the catalogue opens, every acknowledged request is there in full.
        store = SqliteCatalogue(path, art.vocab.raw_ids, art.hash, layout)
        ch = store.changes((0, 0))
        store.close()
        present = {} if ch is None else {a.id: a for a in ch.added}
        for n in range(n_next, n_next + len(tried)):  # this child's requests: all or nothing, exact rows
            want = request_items(n, layout)
            have = [it.id in present for it in want]
            assert all(have) or not any(have), f"request {n} half-present: {have}"
            assert all(have) or n not in acked, f"acknowledged request {n} lost"
            for it in (w for w, h in zip(want, have) if h):
                assert all(np.array_equal(present[it.id].features[m], it.features[m]) for m, _ in layout.dims)
        assert all(r in present for n in acked for r in request_ids(n)), "an acknowledged add was lost"
        n_next += len(tried)  # the next child continues after the last request this one tried
        assert set(present) <= {r for n in range(n_next) for r in request_ids(n)}, "unknown rows"
    elapsed = time.monotonic() - t0
    assert in_commit >= 25 and len(acked) >= 20, (in_commit, len(acked))
    rec = Recommender.load(artifact_copy)  # the full server-side load, features into the model
    assert rec.n_items == 120 + len(present)
    assert len(rec.recommend(history=["item00001"], k=5)) == 5
    print(f"crash test: {kills} kills ({in_commit} inside COMMIT), {len(acked)} acknowledged adds, "
          f"{len(present)} items present, {elapsed:.1f} s")


def _pg_admin_url() -> str:
    return os.environ.get("MODALREC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_url() -> str:
    """A fresh schema on a reachable PostgreSQL server (skipped without psycopg or a server)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(_pg_admin_url(), connect_timeout=3, autocommit=True)
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL server at {_pg_admin_url()} ({str(exc).strip()[:80]})")
    schema = f"modalrec_test_{os.getpid()}_{time.monotonic_ns()}"
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in _pg_admin_url() else "?"
    try:
        yield f"{_pg_admin_url()}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def test_postgres_store(pg_url: str) -> None:
    w = open_catalogue(pg_url, BASE, "h1", LAYOUT)
    r = open_catalogue(pg_url, BASE, "h1", LAYOUT)
    assert w.add([item("x"), item("y")], now=5.0) == [4, 5]
    ch = r.changes((3, 0))
    assert [(a.idx, a.id, a.added_at) for a in ch.added] == [(4, "x", 5.0), (5, "y", 5.0)]
    assert np.array_equal(ch.added[1].features["image"], features("y", LAYOUT)["image"])
    with pytest.raises(DuplicateIdError):
        r.add([item("x")])
    assert r.remove(["x"]) == [4] and w.add([item("x", "again")]) == [6]
    ch2 = w.changes(ch.cursor)
    assert ch2.removed[0][0] == 4 and [a.idx for a in ch2.added] == [6]
    with pytest.raises(MismatchError, match="another artifact"):
        open_catalogue(pg_url, BASE, "h2", LAYOUT)
    w.close()
    r.close()


def test_two_recommenders_share_a_postgres_catalogue(pg_url: str, artifact_copy: Path) -> None:
    from modalrec.serving.recommender import Recommender

    a = Recommender.load(artifact_copy, catalogue=pg_url)
    b = Recommender.load(artifact_copy, catalogue=pg_url)
    a.add_items([{"id": "pg-1", "title": "a canvas tote", "description": "a bag"}])
    assert "pg-1" not in b.catalogue and b.sync() and "pg-1" in b.catalogue
    b.remove_items(["item00004"])
    assert a.sync() and a.item("item00004")["removed"] and not b.sync()
    assert a.n_items == b.n_items == 121 and not (artifact_copy / "catalogue.sqlite").exists()
    a.close()
    b.close()


def test_layout_round_trip() -> None:
    blob, mask = LAYOUT.pack({"text": np.arange(4), "image": np.ones(3)}, {"image": True})
    feats, miss = LAYOUT.unpack(blob, mask, 9)
    assert feats["text"].tolist() == [0, 1, 2, 3] and miss == {"text": False, "image": True}
    with pytest.raises(MismatchError, match="row 9"):
        LAYOUT.unpack(blob[:-4], mask, 9)
    with pytest.raises(DataError, match="NaN"):
        LAYOUT.pack({"text": np.full(4, np.nan), "image": np.ones(3)}, {})
    assert json.loads(LAYOUT.to_json()) == [["text", 4], ["image", 3]]

"""Abuse the real server (uvicorn on loopback): invented methods, non-finite numbers and lone surrogates,
huge invalid bodies, stalled bodies, hostile ids, undecodable images, encoders that cannot load; and
`modalrec artifact check`."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from modalrec.cli.main import main
from modalrec.serving.app import RunningServer, create_app
from modalrec.serving.artifact import meta_hash
from modalrec.serving.recommender import Recommender

KEY = "k"
WRITE = {"X-API-Key": KEY}


@pytest.fixture
def images(image_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    shutil.copy(image_root / "item00001.png", root / "good.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 10)
    return root


@pytest.fixture
def server(artifact_copy: Path, images: Path) -> Any:
    rec = Recommender.load(artifact_copy)
    app = create_app(rec, api_key=KEY, image_root=images, max_body_bytes=8 * 2**20, body_timeout_s=1.0)
    with RunningServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        client.srv = srv
        yield client


def test_invented_methods_leave_metrics_small(server: Any) -> None:
    c = server
    for i in range(1000):
        assert c.request(f"M{i:04d}X", "/recommend" if i % 2 else f"/nowhere/{i}").status_code in (404, 405)
    body = c.get("/metrics").content
    endpoints = json.loads(body)["endpoints"]
    assert len(body) < 10_000 and len(endpoints) <= 4, sorted(endpoints)
    assert endpoints["OTHER /recommend"]["count"] == 500 and endpoints["OTHER (unmatched)"]["count"] == 500


@pytest.mark.parametrize("body", [
    b'{"history": ["item00001"], "k": NaN}',
    b'{"history": ["item00001"], "k": Infinity}',
    b'{"history": ["item00001"], "k": -Infinity}',
    b'{"history": ["\\ud800"]}',
    b'{"history": ["item00001"], "filters": {"category": "\\udfff"}}',
    b'{"history": ["item\xff"]}',
])
def test_non_finite_numbers_and_invalid_unicode_are_422(server: Any, body: bytes) -> None:
    r = server.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert len(r.content) < 500
    items = b'{"items": [{"id": "n\\udc00", "fields": {"title": "x"}}]}'
    assert server.post("/items", content=items, headers={**WRITE, "content-type": "application/json"}).status_code == 422


def test_error_bodies_are_short_and_name_no_server_path(server: Any, artifact_copy: Path, images: Path) -> None:
    c = server
    huge = json.dumps({"history": ["x" * 300] * 27_000}).encode()  # just under 8 MiB, invalid (ids too long)
    assert 7 * 2**20 < len(huge) < 8 * 2**20
    r = c.post("/recommend", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 422 and len(r.content) < 4_000, len(r.content)
    ghosts = [f"ghost-{i}-" + "g" * 200 for i in range(400)]
    r = c.post("/recommend", json={"history": ghosts})
    assert r.status_code == 404 and len(r.content) < 3_000 and len(r.json()["unknown_ids"]) == 20
    r = c.post("/items", json={"items": [{"id": "pic", "fields": {"title": "a bag"}, "image": "broken.png"}]},
               headers=WRITE)
    assert r.status_code == 422 and "broken.png" in r.json()["detail"], r.text
    for text in (r.text, c.get("/health").text):
        assert str(images) not in text and str(artifact_copy) not in text and "/tmp" not in text
    assert c.get("/items/pic").status_code == 404  # nothing added
    r = c.post("/items", json={"items": [{"id": "pic", "fields": {"title": "a bag"}, "image": "good.png"}]},
               headers=WRITE)
    assert r.status_code == 201 and c.get("/items/pic").json()["has_image"] is True


def test_ids_printable_normalised_path_safe_and_re_addable(server: Any) -> None:
    c = server

    def add(rid: str) -> Any:
        return c.post("/items", json={"items": [{"id": rid, "fields": {"title": "a small bag"}}]}, headers=WRITE)

    for bad in ("nul\x00", "bell\x07", "evil\u202etxt", " padded", "tab\tid"):
        r = add(bad)
        assert r.status_code == 422 and "id" in r.text, bad
    for rid in ("a/b", "../up", "50%/off?x=1#y", "caf\u00e9"):
        assert add(rid).status_code == 201, rid
        got = c.get(f"/items/{quote(rid, safe='')}")
        assert got.status_code == 200 and got.json()["id"] == rid, (rid, got.text)
        assert c.get(f"/items/{quote(rid, safe='')}/similar", params={"k": 2}).status_code == 200
    nfd = quote("cafe\u0301", safe="")
    assert c.get(f"/items/{nfd}").json()["id"] == "caf\u00e9"  # the NFD spelling finds the NFC id
    assert c.delete(f"/items/{quote('a/b', safe='')}", headers=WRITE).json() == {"removed": ["a/b"]}
    assert c.get(f"/items/{quote('a/b', safe='')}").json()["removed"] is True
    assert add("a/b").status_code == 201  # a removed id can be added again
    again = c.get(f"/items/{quote('a/b', safe='')}").json()
    assert again["removed"] is False and again["added_at"] > 0
    assert add("a/b").status_code == 409


def test_stalled_body_is_cut_off(server: Any) -> None:
    srv = server.srv
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"history\": [")
        t0 = time.monotonic()
        reply = s.recv(4096)
        assert b" 408 " in reply.split(b"\r\n")[0] and time.monotonic() - t0 < 5, reply[:200]
    assert server.post("/recommend", json={"history": ["item00001"], "k": 3}).status_code == 200


def test_health_is_503_when_the_encoders_cannot_load(artifact_copy: Path) -> None:
    meta = json.loads((artifact_copy / "artifact.json").read_text())
    meta["features"]["encoders"]["text"] = "hf:/nonexistent-model-dir?trust_remote_code=true"
    meta["artifact_hash"] = meta_hash(meta)
    (artifact_copy / "artifact.json").write_text(json.dumps(meta))
    app = create_app(Recommender.load(artifact_copy), api_key=KEY)
    with RunningServer(app) as srv:
        r = httpx.get(f"{srv.url}/health")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
        assert "trust_remote_code" in r.json()["encoders"]
        assert httpx.post(f"{srv.url}/recommend", json={"history": ["item00001"]}).status_code == 200  # reads go on
        r = httpx.post(f"{srv.url}/items", json={"items": [{"id": "n", "fields": {"title": "t"}}]}, headers=WRITE)
        assert r.status_code == 422 and "--trust-remote-code" in r.json()["detail"]


def test_artifact_check_command(artifact_copy: Path, capsys: pytest.CaptureFixture) -> None:
    rec = Recommender.load(artifact_copy)
    rec.add_items([{"id": "new-1", "title": "a bag"}])
    rec.remove_items(["item00003"])
    rec.store.close()
    (artifact_copy.parent / f".{artifact_copy.name}.tmp-1234abcd").mkdir()
    assert main(["artifact", "check", str(artifact_copy), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "files verified" in out and "1 items added, 1 removals, consistent" in out and "121 items served" in out
    assert "interrupted export" in out and not (artifact_copy.parent / f".{artifact_copy.name}.tmp-1234abcd").exists()
    items = artifact_copy / "items.json"
    items.write_text(items.read_text().replace("item", "itam", 1))
    assert main(["artifact", "check", str(artifact_copy)]) == 2
    assert "items.json has changed since export" in capsys.readouterr().err


def test_health_is_503_when_the_catalogue_cannot_be_followed(artifact_copy: Path) -> None:
    """A row written outside modalrec (an index gap) is refused, never half-applied, and reported."""
    import sqlite3

    rec = Recommender.load(artifact_copy)
    rec.add_items([{"id": "fine", "title": "a bag"}])
    with RunningServer(create_app(rec, api_key=KEY)) as srv:
        assert httpx.get(f"{srv.url}/health").status_code == 200
        with sqlite3.connect(artifact_copy / "catalogue.sqlite") as db:
            row = db.execute("SELECT id, record, added_at, features, missing FROM items WHERE idx = 121").fetchone()
            db.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)", (125, "gap", *row[1:]))
        deadline = time.monotonic() + 5
        while (r := httpx.get(f"{srv.url}/health")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 503 and r.json()["status"] == "degraded"
        assert "gap" in r.json()["catalogue"]["error"] and r.json()["items"] == 121
        assert str(artifact_copy) not in r.text and str(artifact_copy.resolve()) not in r.text
        assert httpx.post(f"{srv.url}/recommend", json={"history": ["fine"], "k": 3}).status_code == 200

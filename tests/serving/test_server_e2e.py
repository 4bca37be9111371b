"""End to end: a content SASRec trained on the built-in dataset, exported, served by the real uvicorn server
on a loopback port; a brand-new item added over HTTP is recommended for a history of similar items;
bad requests get 4xx with a message and the server keeps serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from modalrec.serving.app import RunningServer, create_app
from modalrec.serving.recommender import Recommender

KEY = "test-key"
WRITE = {"X-API-Key": KEY}


@pytest.fixture
def server(artifact_copy: Path, image_root: Path) -> Any:
    rec = Recommender.load(artifact_copy)
    app = create_app(rec, api_key=KEY, image_root=image_root, max_history=20, max_k=200, max_new_items=50,
                     max_body_bytes=64_000)
    with RunningServer(app, host="127.0.0.1", port=0) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        yield client


def _same_category_history(client: Any, n: int = 5) -> list[str]:
    """The first n items of item00001's category (a history of similar items)."""
    cat = client.get("/items/item00001").json()["fields"]["category"]
    out = []
    for i in range(1, 121):
        rid = f"item{i:05d}"
        if client.get(f"/items/{rid}").json()["fields"]["category"] == cat:
            out.append(rid)
        if len(out) == n:
            return out
    raise AssertionError("catalogue too small")


def test_new_item_over_http_is_recommended(server: Any) -> None:
    c = server
    assert c.get("/health").json()["status"] == "ok"
    history = _same_category_history(c)
    ranking = c.post("/recommend", json={"history": history, "k": 200}).json()["items"]
    assert len(ranking) == 120 - len(history)
    near, far = ranking[0]["item_id"], ranking[-1]["item_id"]

    def variant(src: str, new_id: str) -> dict[str, Any]:
        fields = c.get(f"/items/{src}").json()["fields"]
        fields["title"] = "New season: " + fields["title"]
        return {"id": new_id, "fields": fields, "image": f"{src}.png"}  # relative to the image root

    r = c.post("/items", json={"items": [variant(near, "launch-near"), variant(far, "launch-far")]}, headers=WRITE)
    assert r.status_code == 201, r.text
    assert r.json() == {"added": ["launch-near", "launch-far"], "items": 122}
    top = [it["item_id"] for it in c.post("/recommend", json={"history": history, "k": 10}).json()["items"]]
    assert "launch-near" in top  # rankable at once, from its content
    assert "launch-far" not in top  # and ranked by content, not merely for being new
    assert c.get("/items/launch-near/similar", params={"k": 3}).json()["items"][0]["item_id"] == near
    assert c.get("/health").json()["items"] == 122


def test_an_item_added_over_http_is_scored_with_its_add_time(age_artifact: Path, tmp_path: Path,
                                                            image_root: Path) -> None:
    import shutil
    import time

    import torch

    from modalrec.models.freshness import FreshnessPrior

    shutil.copytree(age_artifact, tmp_path / "a")
    rec = Recommender.load(tmp_path / "a")
    prior = rec.model.prior
    assert isinstance(prior, FreshnessPrior)
    with torch.no_grad():  # a prior that only freshness can satisfy: < 1 day old +50, launch unknown -50
        prior.bias.zero_()
        prior.bias[1] = 50.0
        prior.bias[0] = -50.0
    app = create_app(rec, api_key=KEY, image_root=image_root, max_history=20, max_k=200, max_new_items=50,
                     max_body_bytes=64_000)
    with RunningServer(app, host="127.0.0.1", port=0) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        history = ["item00001", "item00002", "item00003"]
        before = c.post("/recommend", json={"history": history, "k": 200}).json()["items"]
        fields = c.get("/items/item00004").json()["fields"]
        t0 = time.time()
        r = c.post("/items", json={"items": [{"id": "fresh", "fields": fields}]}, headers=WRITE)
        assert r.status_code == 201, r.text
        added_at = c.get("/items/fresh").json()["added_at"]
        assert t0 - 1 <= added_at <= time.time() + 1
        after = c.post("/recommend", json={"history": history, "k": 200}).json()["items"]
        r = c.post("/recommend", json={"history": [*history, "fresh"], "k": 5})  # its age is an input now
        assert r.status_code == 200, r.text
    assert after[0]["item_id"] == "fresh"  # launched now, so < 1 day old at the request
    old = {it["item_id"]: it["score"] for it in before}
    assert all(abs(it["score"] - old[it["item_id"]]) < 1e-3 for it in after[1:])  # exported items: old, unchanged
    assert int(prior.launch.metadata_ts[-1]) == int(added_at)
    assert int(rec.model.history_age.launch.metadata_ts[-1]) == int(added_at)


def test_bad_requests_get_4xx_and_server_keeps_serving(server: Any) -> None:
    c = server
    r = c.post("/recommend", json={"history": ["item00001", "ghost-a", "ghost-b"]})
    assert r.status_code == 404 and r.json()["unknown_ids"] == ["ghost-a", "ghost-b"] and "ghost-a" in r.json()["detail"]
    assert c.get("/items/ghost/similar").status_code == 404
    assert c.post("/recommend", json={"user_id": "nobody"}).status_code == 404
    r = c.post("/recommend", json={"history": ["item00001"] * 21})  # max_history = 20
    assert r.status_code == 422 and "20" in r.text
    assert c.post("/recommend", json={"history": ["item00001"], "k": 201}).status_code == 422
    assert c.post("/recommend", json={"history": ["item00001"], "colour": "red"}).status_code == 422
    r = c.post("/recommend", content=b'{"history": ["item00001"', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.text
    r = c.post("/recommend", content=b"x" * 70_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    new = {"items": [{"id": "n1", "fields": {"title": "a new daypack"}}]}
    r = c.post("/items", json=new)
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    assert c.post("/items", json=new, headers={"X-API-Key": "wrong"}).status_code == 401
    assert c.delete("/items/item00001").status_code == 401
    for path in ("../../../etc/passwd", "/etc/passwd", "nope.png"):
        r = c.post("/items", json={"items": [{"id": "n2", "fields": {"title": "x"}, "image": path}]}, headers=WRITE)
        assert r.status_code == 422 and "image" in r.json()["detail"], path
    r = c.post("/items", json={"items": [{"id": "item00001", "fields": {"title": "x"}}]}, headers=WRITE)
    assert r.status_code == 409 and "already exist" in r.json()["detail"]
    r = c.post("/items", json={"items": [{"id": "n3", "fields": {"colour": "red"}}]}, headers=WRITE)
    assert r.status_code == 422 and "colour" in r.json()["detail"]
    too_many = {"items": [{"id": f"m{i}", "fields": {"title": "t"}} for i in range(51)]}  # max_new_items = 50
    assert c.post("/items", json=too_many, headers=WRITE).status_code == 422
    # Still serving, nothing half-added, and the errors were counted.
    assert c.get("/health").json()["items"] == 120
    assert len(c.post("/recommend", json={"history": ["item00001"], "k": 5}).json()["items"]) == 5
    assert c.delete("/items/item00002", headers=WRITE).json() == {"removed": ["item00002"]}
    metrics = c.get("/metrics").json()["endpoints"]
    assert metrics["POST /recommend"]["errors_4xx"] >= 6 and metrics["POST /items"]["status"]["401"] == 2
    assert metrics["POST /recommend"]["latency_ms"]["p99"] > 0
    schema = c.get("/openapi.json").json()
    assert {"/recommend", "/items", "/items/{item_id}/similar", "/health", "/metrics"} <= set(schema["paths"])

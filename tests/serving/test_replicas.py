"""Real `modalrec serve` processes (uvicorn) on one artifact: two replicas adding, removing and serving
concurrently see each other's commits within a second with zero errors; a 1,000-item add, with 45 DELETEs
queued behind it, does not block concurrent /recommend requests (p99 stays within 2x on a quiet machine,
or within a tenth of the add's duration on a loaded one)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from modalrec.serving.recommender import Recommender

KEY = "replica-key"
WRITE = {"X-API-Key": KEY}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_process(artifact: Path, image_root: Path, tmp: Path, *extra: str) -> Iterator[str]:
    """`python -m modalrec serve` on a free loopback port; yields its URL once /health says ok."""
    port = _free_port()
    (tmp / "key").write_text(KEY)
    log = open(tmp / f"server-{port}.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen([sys.executable, "-m", "modalrec", "serve", "--artifact", str(artifact), "--port", str(port),
                             "--api-key-file", str(tmp / "key"), "--image-root", str(image_root),
                             "--log-level", "warning", *extra], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server not ready: {(tmp / f'server-{port}.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_two_replicas_share_one_catalogue(artifact_copy: Path, image_root: Path, tmp_path: Path) -> None:
    with ExitStack() as stack:
        urls = [stack.enter_context(serve_process(artifact_copy, image_root, tmp_path)) for _ in range(2)]
        stop = threading.Event()
        errors: list[str] = []
        lags: list[float] = []
        added: list[list[str]] = [[], []]
        removed: list[list[str]] = [[], []]

        def wait_visible(url: str, rid: str, want_removed: bool, t_ack: float) -> None:
            with httpx.Client(base_url=url, timeout=10) as other:
                while time.monotonic() - t_ack < 3.0:
                    r = other.get(f"/items/{rid}")
                    if r.status_code == 200 and r.json()["removed"] == want_removed:
                        lags.append(time.monotonic() - t_ack)
                        return
                    time.sleep(0.01)
            errors.append(f"{rid} (removed={want_removed}) not visible on {url} after 3 s")

        def writer(s: int) -> None:
            me, other = urls[s], urls[1 - s]
            with httpx.Client(base_url=me, timeout=30, headers=WRITE) as http:
                n = 0
                while not stop.is_set():
                    rid = f"r{s}-{n}"
                    r = http.post("/items", json={"items": [{"id": rid, "fields": {
                        "title": f"replica {s} bag {n}", "description": "a light bag"}}]})
                    if r.status_code != 201:
                        errors.append(f"add {rid} on {me}: {r.status_code} {r.text[:200]}")
                        continue
                    added[s].append(rid)
                    wait_visible(other, rid, False, time.monotonic())
                    if n % 3 == 2:
                        gone = added[s][n - 1]
                        r = http.delete(f"/items/{gone}")
                        if r.status_code != 200:
                            errors.append(f"remove {gone} on {me}: {r.status_code} {r.text[:200]}")
                        else:
                            removed[s].append(gone)
                            wait_visible(other, gone, True, time.monotonic())
                    n += 1

        def reader(url: str) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/recommend", json={"history": ["item00003", "item00010"], "k": 10})
                    if r.status_code != 200 or len(r.json()["items"]) != 10:
                        errors.append(f"recommend on {url}: {r.status_code} {r.text[:200]}")

        threads = [threading.Thread(target=writer, args=(s,)) for s in (0, 1)]
        threads += [threading.Thread(target=reader, args=(u,)) for u in urls for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(8)
        stop.set()
        for t in threads:
            t.join(30)
        health = [httpx.get(f"{u}/health").json() for u in urls]
    assert not errors, errors[:5]
    n_added, n_removed = len(added[0]) + len(added[1]), len(removed[0]) + len(removed[1])
    assert n_added >= 10 and n_removed >= 3 and len(lags) == n_added + n_removed
    assert max(lags) < 1.0, sorted(lags)[-5:]
    assert health[0]["items"] == health[1]["items"] == 120 + n_added
    rec = Recommender.load(artifact_copy)  # the catalogue loads afterwards, with every change
    assert rec.n_items == 120 + n_added
    assert {rid for rid in added[0] + added[1] if rec.item(rid)["removed"]} == set(removed[0] + removed[1])
    print(f"replicas: {n_added} adds, {n_removed} removals, 0 errors, visibility lag max {max(lags) * 1000:.0f} ms, "
          f"median {np.median(lags) * 1000:.0f} ms")


def test_large_add_does_not_slow_reads(artifact_copy: Path, image_root: Path, tmp_path: Path) -> None:
    records = [{"id": f"bulk-{i}", "fields": {"title": f"bulk bag {i}", "description": "a new bag for town"},
                "image": f"item{1 + i % 120:05d}.png"} for i in range(1000)]
    with serve_process(artifact_copy, image_root, tmp_path) as url:
        window: list[tuple[float, float]] = []  # (start, seconds) of every /recommend
        stop = threading.Event()

        def reader(c: int) -> None:
            rng = np.random.default_rng(c)
            with httpx.Client(base_url=url, timeout=60) as http:
                while not stop.is_set():
                    hist = [f"item{j:05d}" for j in rng.integers(1, 121, 5)]
                    t0 = time.monotonic()
                    r = http.post("/recommend", json={"history": hist, "k": 10})
                    window.append((t0, time.monotonic() - t0))
                    assert r.status_code == 200

        threads = [threading.Thread(target=reader, args=(c,)) for c in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # warm-up
        base_from = time.monotonic()
        time.sleep(5.0)
        add_from = time.monotonic()
        deletes: list[int] = []

        def delete(i: int) -> None:  # queued behind the add: they must not hold the server's worker threads
            time.sleep(0.3)
            deletes.append(writes.delete(f"/items/item{i:05d}").status_code)

        # One client made before the clock starts: a client per request would spend this process's CPU (and
        # its GIL, which the readers' timings share) on connection setup, measuring the test, not the server.
        with httpx.Client(base_url=url, headers=WRITE, timeout=300,
                          limits=httpx.Limits(max_connections=64)) as writes:
            flood = [threading.Thread(target=delete, args=(i,)) for i in range(50, 95)]
            for t in flood:
                t.start()
            r = writes.post("/items", json={"items": records})
            add_to = time.monotonic()
            for t in flood:
                t.join(60)
        stop.set()
        for t in threads:
            t.join(60)
        assert r.status_code == 201, r.text[:300]
        assert deletes == [200] * 45
        health = httpx.get(f"{url}/health").json()
        assert health["items"] == 1120 and health["removed"] == 45
    base = np.array([s for t0, s in window if base_from <= t0 < add_from])
    during = np.array([s for t0, s in window if add_from <= t0 < add_to])
    p99_base, p99_add = np.percentile(base, 99) * 1000, np.percentile(during, 99) * 1000
    print(f"1,000-item add took {add_to - add_from:.1f} s; /recommend p99 {p99_base:.1f} ms before "
          f"({len(base)} requests), {p99_add:.1f} ms during ({len(during)} requests)")
    assert len(during) >= 50
    # Reads must not queue behind the add: one that did would wait for most of it (seconds). The latency
    # ratio itself (p99 within 2x on a quiet machine) is a speed target, measured by benchmarks/serve_load.py;
    # here the bound leaves room for a loaded test machine, where p99 alone swings by 2-3x.
    assert p99_add <= max(2 * p99_base, 100 * (add_to - add_from)), (p99_base, p99_add, add_to - add_from)

"""Load test of `modalrec serve` on loopback: concurrent clients for a bounded time, before and after adding
1,000 brand-new items over HTTP. Prints JSON: requests/s, p50 / p99 latency, errors (must be 0).

Without --artifact, a content SASRec (hashing text + colour/texture image features) is trained on the
built-in dataset and exported first. The server runs as a separate process (`python -m modalrec serve`,
127.0.0.1 only); clients are threads with keep-alive httpx connections. Request mix: 80% POST /recommend
(histories of 1-20 items; after the add, 30% of histories include new items), 20% GET /items/{id}/similar.
The new items are a second synthetic catalogue (different seed: new titles, descriptions and pictures).

    nice -n 10 python benchmarks/serve_load.py --out benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def build_artifact(work: Path, users: int, items: int, epochs: int) -> tuple[Path, Path]:
    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig
    from modalrec.pipeline import run_experiment
    from modalrec.serving.artifact import export_artifact

    cfg = {
        "name": "serve-load", "seed": 0, "output_dir": str(work / "runs"),
        "data": {"source": "synthetic", "options": {"n_users": users, "n_items": items,
                                                    "image_dir": str(work / "images")}},
        "split": {"kind": "leave_one_out"},
        "features": {"text": "hashing:256", "image": "stats", "template": "{title}. {description}",
                     "cache_dir": str(work / "features")},
        "model": {"name": "sasrec", "params": {"dim": 64, "n_layers": 2, "n_heads": 2, "max_len": 20,
                                               "tower": {"kind": "text+image", "fusion": "gated"}}},
        "train": {"epochs": epochs, "batch_size": 128, "lr": 0.002, "progress": False},
        "eval": {"ks": [10]},
    }
    run = run_experiment(from_dict(ExperimentConfig, cfg))
    return export_artifact(run, work / "artifact"), work / "images"


def new_item_records(image_root: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """n new items from a second synthetic catalogue; their pictures are written under the image root."""
    from modalrec.data.sources.synthetic import generate

    sub = image_root / f"new-seed{seed}"
    ds = generate(n_users=20, n_items=n, seed=seed, image_dir=sub)
    out = []
    for i in range(1, n + 1):
        raw = ds.item_vocab.raw(i)
        out.append({"id": f"new-{raw}", "fields": ds.items.record(i), "image": f"{sub.name}/{raw}.png"})
    return out


def run_phase(url: str, clients: int, seconds: float, old_ids: list[str], new_ids: list[str], k: int,
              seed: int) -> dict[str, Any]:
    import httpx

    stop = time.monotonic() + seconds
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    slots = [[0, 0] for _ in range(clients)]  # per client: [recommended slots, slots holding a new item]

    def client(c: int) -> None:
        rng = np.random.default_rng(seed * 1000 + c)
        new_set = set(new_ids)
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    if rng.random() < 0.8:
                        n = int(rng.integers(1, 21))
                        hist = [old_ids[j] for j in rng.integers(0, len(old_ids), n)]
                        if new_ids and rng.random() < 0.3:
                            hist[-1] = new_ids[int(rng.integers(0, len(new_ids)))]
                        r = http.post("/recommend", json={"history": hist, "k": k})
                        if r.status_code == 200:
                            got = [it["item_id"] for it in r.json()["items"]]
                            slots[c][0] += len(got)
                            slots[c][1] += sum(i in new_set for i in got)
                    else:
                        pool = new_ids if new_ids and rng.random() < 0.3 else old_ids
                        r = http.get(f"/items/{pool[int(rng.integers(0, len(pool)))]}/similar", params={"k": k})
                    if r.status_code != 200:
                        errors[c].append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    errors[c].append(repr(exc))
                lat[c].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.concatenate([np.asarray(x) for x in lat]) * 1000
    errs = [e for x in errors for e in x]
    return {"clients": clients, "seconds": round(wall, 2), "requests": len(ms),
            "requests_per_s": round(len(ms) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
            "errors": len(errs), "first_errors": errs[:3],
            # share of /recommend result slots taken by new items (compare with their share of the catalogue)
            "new_item_share_of_results": round(sum(s[1] for s in slots) / max(1, sum(s[0] for s in slots)), 4)}


@contextmanager
def server_process(artifact: Path, image_root: Path, port: int, work: Path, args: argparse.Namespace,
                   ) -> Iterator[subprocess.Popen]:
    """`python -m modalrec serve` on 127.0.0.1:port; its output goes to work/server.log."""
    with open(work / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "modalrec", "serve", "--artifact", str(artifact),
                                 "--host", "127.0.0.1", "--port", str(port), "--api-key-file", str(work / "key"),
                                 "--image-root", str(image_root), "--index", args.index, "--threads",
                                 str(args.threads), "--max-new-items", str(max(args.batch, 1)),
                                 "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        except BaseException:
            log.flush()
            print((work / "server.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            proc.terminate()
            proc.wait(30)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not become ready")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", help="existing artifact (copied; default: train + export a fresh one)")
    p.add_argument("--image-root", help="image root for new items' pictures (default: the trained dataset's)")
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--items", type=int, default=800)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=15.0, help="duration of each load phase")
    p.add_argument("--new-items", type=int, default=1000)
    p.add_argument("--batch", type=int, default=250, help="items per POST /items")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--index", default="exact", choices=["exact", "hnsw", "ivf"])
    p.add_argument("--port", type=int, default=0, help="0 = a free port")
    p.add_argument("--threads", type=int, default=1, help="server torch threads per request (serve --threads)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)

    import socket

    import httpx

    work = Path(tempfile.mkdtemp(prefix="modalrec-serve-load-"))
    try:
        t0 = time.perf_counter()
        if args.artifact:
            artifact, image_root = work / "artifact", Path(args.image_root or work / "images")
            shutil.copytree(args.artifact, artifact)
        else:
            artifact, image_root = build_artifact(work, args.users, args.items, args.epochs)
        setup_s = time.perf_counter() - t0
        from modalrec.serving.artifact import load_artifact

        old_ids = load_artifact(artifact).vocab.raw_ids
        records = new_item_records(image_root, args.new_items, seed=1)
        port = args.port
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
        key = secrets.token_hex(16)
        (work / "key").write_text(key)
        url = f"http://127.0.0.1:{port}"
        with server_process(artifact, image_root, port, work, args) as proc:
            wait_ready(url, proc)
            run_phase(url, 2, 2.0, old_ids, [], args.k, seed=99)  # warm-up, not reported
            before = run_phase(url, args.clients, args.seconds, old_ids, [], args.k, seed=1)
            t0 = time.perf_counter()
            add_errors = []
            with httpx.Client(base_url=url, timeout=600, headers={"X-API-Key": key}) as http:
                for lo in range(0, len(records), args.batch):
                    r = http.post("/items", json={"items": records[lo : lo + args.batch]})
                    if r.status_code != 201:
                        add_errors.append(f"{r.status_code}: {r.text[:300]}")
                n_after = http.get("/health").json()["items"]
            add_s = time.perf_counter() - t0
            new_ids = [r["id"] for r in records]
            after = run_phase(url, args.clients, args.seconds, old_ids, new_ids, args.k, seed=2)
            server_metrics = httpx.get(f"{url}/metrics").json()
        result = {
            "benchmark": "serve_load", "host": "127.0.0.1", "index": args.index, "k": args.k,
            "catalogue_before": len(old_ids), "catalogue_after": n_after,
            "new_item_share_of_catalogue": round(len(records) / max(1, n_after), 4), "setup_seconds": round(setup_s, 1),
            "before": before,
            "add_items": {"items": len(records), "requests": (len(records) + args.batch - 1) // args.batch,
                          "seconds": round(add_s, 2), "items_per_s": round(len(records) / add_s, 1),
                          "errors": len(add_errors), "first_errors": add_errors[:3]},
            "after": after,
            "errors_total": before["errors"] + after["errors"] + len(add_errors),
            "server_metrics": server_metrics["endpoints"],
            "server_torch_threads": args.threads,
            "platform": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if result["errors_total"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

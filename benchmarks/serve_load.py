"""Load test of `modalrec serve` on loopback with replicas: 1 and 2 server processes on one artifact (one
shared SQLite catalogue), each measured with writers idle and with writers active. Prints JSON: requests/s,
p50 / p99 latency and errors (must be 0) per configuration, plus how many items the writers added.

Without --artifact, a content SASRec (hashing text + colour/texture image features) is trained on the
built-in dataset and exported first. Servers are separate processes (`python -m modalrec serve`,
127.0.0.1 only); readers are threads with keep-alive httpx connections, spread over the replicas. Request
mix: 80% POST /recommend (histories of 1-20 items; when items were added, 30% of histories end with one),
20% GET /items/{id}/similar. "Writers active": one writer per replica keeps posting batches of new items
(a second synthetic catalogue: new titles, descriptions and pictures) and removes every tenth one it added.
Each configuration starts from a fresh copy of the artifact (no catalogue yet).

    nice -n 10 python benchmarks/serve_load.py --out benchmarks/results/serve_load_replicas_cpu.json
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
from contextlib import ExitStack, contextmanager
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


def run_phase(urls: list[str], clients: int, seconds: float, old_ids: list[str],
              new_ids: list[tuple[float, str]], k: int, seed: int, writer: Any = None) -> dict[str, Any]:
    """`clients` reader threads (client c talks to urls[c % len(urls)]) for `seconds`; `writer(stop)` runs
    beside them when given. `new_ids` grows while the phase runs: (acknowledged at, id) from the writers;
    readers use ids acknowledged over a second ago, which every replica must know by then."""
    import httpx

    stop = time.monotonic() + seconds
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]

    def client(c: int) -> None:
        rng = np.random.default_rng(seed * 1000 + c)
        with httpx.Client(base_url=urls[c % len(urls)], timeout=30) as http:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    settled = time.monotonic() - 1.0
                    fresh = [rid for at, rid in new_ids[: len(new_ids)] if at < settled]
                    if rng.random() < 0.8:
                        n = int(rng.integers(1, 21))
                        hist = [old_ids[j] for j in rng.integers(0, len(old_ids), n)]
                        if fresh and rng.random() < 0.3:
                            hist[-1] = fresh[int(rng.integers(0, len(fresh)))]
                        r = http.post("/recommend", json={"history": hist, "k": k})
                    else:
                        pool = fresh if fresh and rng.random() < 0.3 else old_ids
                        r = http.get(f"/items/{pool[int(rng.integers(0, len(pool)))]}/similar", params={"k": k})
                    if r.status_code != 200:
                        errors[c].append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    errors[c].append(repr(exc))
                lat[c].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    write_result: dict[str, Any] = {}
    if writer is not None:
        threads.append(threading.Thread(target=lambda: write_result.update(writer(stop))))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.concatenate([np.asarray(x) for x in lat]) * 1000
    errs = [e for x in errors for e in x] + write_result.pop("errors", [])
    return {"clients": clients, "seconds": round(wall, 2), "requests": len(ms),
            "requests_per_s": round(len(ms) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
            "errors": len(errs), "first_errors": errs[:3], **write_result}


def writers(urls: list[str], key: str, records: list[dict[str, Any]], batch: int,
            new_ids: list[tuple[float, str]]) -> Any:
    """One writer per replica: batches of new items (and every tenth item it added removed again) until
    the phase ends. Returns a function the phase runs in a thread."""
    import httpx

    def run(stop: float) -> dict[str, Any]:
        done: list[dict[str, Any]] = [{"added": 0, "removed": 0, "errors": []} for _ in urls]

        def one(s: int) -> None:
            mine = records[s :: len(urls)]
            with httpx.Client(base_url=urls[s], timeout=120, headers={"X-API-Key": key}) as http:
                for lo in range(0, len(mine), batch):
                    if time.monotonic() >= stop:
                        return
                    chunk = mine[lo : lo + batch]
                    r = http.post("/items", json={"items": chunk})
                    if r.status_code != 201:
                        done[s]["errors"].append(f"POST /items {r.status_code}: {r.text[:200]}")
                        continue
                    done[s]["added"] += len(chunk)
                    gone = chunk[0]["id"]
                    r = http.delete(f"/items/{gone}")
                    if r.status_code != 200:
                        done[s]["errors"].append(f"DELETE {r.status_code}: {r.text[:200]}")
                    done[s]["removed"] += 1
                    at = time.monotonic()
                    new_ids.extend((at, it["id"]) for it in chunk[1:])

        ts = [threading.Thread(target=one, args=(s,)) for s in range(len(urls))]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        added = sum(d["added"] for d in done)
        return {"items_added": added, "items_removed": sum(d["removed"] for d in done),
                "items_added_per_s": round(added / wall, 1), "errors": [e for d in done for e in d["errors"]]}

    return run


@contextmanager
def server_process(artifact: Path, image_root: Path, port: int, work: Path, args: argparse.Namespace,
                   ) -> Iterator[subprocess.Popen]:
    """`python -m modalrec serve` on 127.0.0.1:port; its output goes to work/server-PORT.log."""
    log_path = work / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "modalrec", "serve", "--artifact", str(artifact),
                                 "--host", "127.0.0.1", "--port", str(port), "--api-key-file", str(work / "key"),
                                 "--image-root", str(image_root), "--index", args.index, "--threads",
                                 str(args.threads), "--max-new-items", str(max(args.batch, 1)),
                                 "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        except BaseException:
            log.flush()
            print(log_path.read_text()[-3000:], file=sys.stderr)
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_config(source: Path, image_root: Path, replicas: int, records: list[dict[str, Any]], old_ids: list[str],
               key: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fresh artifact copy, `replicas` servers on it; readers alone, then readers with writers."""
    import httpx

    artifact = work / f"artifact-{replicas}"
    shutil.copytree(source, artifact)
    with ExitStack() as stack:
        urls = []
        for _ in range(replicas):
            port = free_port()
            proc = stack.enter_context(server_process(artifact, image_root, port, work, args))
            urls.append(f"http://127.0.0.1:{port}")
            wait_ready(urls[-1], proc)
        run_phase(urls, 2, 2.0, old_ids, [], args.k, seed=99)  # warm-up, not reported
        idle = run_phase(urls, args.clients, args.seconds, old_ids, [], args.k, seed=1)
        new_ids: list[tuple[float, str]] = []
        active = run_phase(urls, args.clients, args.seconds, old_ids, new_ids, args.k, seed=2,
                           writer=writers(urls, key, records, args.batch, new_ids))
        served = [httpx.get(f"{u}/health").json()["items"] for u in urls]
        server_metrics = httpx.get(f"{urls[0]}/metrics").json()["endpoints"]
    return {"replicas": replicas, "writers_idle": idle, "writers_active": active,
            "catalogue_after": served, "replicas_agree": len(set(served)) == 1,
            "server_metrics_replica_0": server_metrics}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", help="existing artifact (copied; default: train + export a fresh one)")
    p.add_argument("--image-root", help="image root for new items' pictures (default: the trained dataset's)")
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--items", type=int, default=800)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=15.0, help="duration of each load phase")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="server process counts to measure")
    p.add_argument("--new-items", type=int, default=4000, help="pool of new items the writers draw from")
    p.add_argument("--batch", type=int, default=20, help="items per POST /items")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--index", default="exact", choices=["exact", "hnsw", "ivf"])
    p.add_argument("--threads", type=int, default=1, help="server torch threads per request (serve --threads)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="modalrec-serve-load-"))
    try:
        t0 = time.perf_counter()
        if args.artifact:
            artifact, image_root = Path(args.artifact), Path(args.image_root or work / "images")
        else:
            artifact, image_root = build_artifact(work, args.users, args.items, args.epochs)
        setup_s = time.perf_counter() - t0
        from modalrec.serving.artifact import load_artifact

        old_ids = load_artifact(artifact).vocab.raw_ids
        records = new_item_records(image_root, args.new_items, seed=1)
        key = secrets.token_hex(16)
        (work / "key").write_text(key)
        configs = [run_config(artifact, image_root, n, records, old_ids, key, work, args) for n in args.replicas]
        result = {
            "benchmark": "serve_load", "host": "127.0.0.1", "index": args.index, "k": args.k,
            "catalogue_before": len(old_ids), "setup_seconds": round(setup_s, 1), "batch": args.batch,
            "configs": configs,
            "errors_total": sum(c[ph]["errors"] for c in configs for ph in ("writers_idle", "writers_active")),
            "server_torch_threads": args.threads,
            "platform": {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if result["errors_total"] == 0 and all(c["replicas_agree"] for c in configs) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Child process of the crash test: adds items to a catalogue in a loop until it is killed.

argv: catalogue path, base vocab.json, artifact hash, layout JSON, first request number, commit pause (s).
Prints "try N ids..." before each add and "ack N" once the add returned, flushing each line. With a
commit pause > 0 it prints "commit N" and sleeps just before COMMIT, so the parent can kill it inside
the commit. Only numpy and the catalogue module are imported: the child starts in a fraction of a second.
"""

from __future__ import annotations

import json
import sys
import time
import zlib

import numpy as np

from modalrec.data.vocab import Vocabulary
from modalrec.serving.catalogue import Layout, NewItem, SqliteCatalogue


def features(rid: str, layout: Layout) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(rid.encode()))
    return {m: rng.standard_normal(d).astype(np.float32) for m, d in layout.dims}


def request_ids(n: int) -> list[str]:
    return [f"crash-{n}-{j}" for j in range(1 + n % 3)]  # 1-3 items per transaction


def request_items(n: int, layout: Layout) -> list[NewItem]:
    return [NewItem(r, {"title": f"item {r}"}, None, features(r, layout), {m: False for m, _ in layout.dims})
            for r in request_ids(n)]


def main() -> None:
    path, vocab_path, artifact_hash, layout_json, first, pause = sys.argv[1:7]
    layout = Layout(tuple((m, int(d)) for m, d in json.loads(layout_json)))
    store = SqliteCatalogue(path, Vocabulary.load(vocab_path).raw_ids, artifact_hash, layout)
    n, pause_s = int(first), float(pause)
    if pause_s > 0:
        plain_commit = store._commit

        def slow_commit() -> None:
            print(f"commit {n}", flush=True)
            time.sleep(pause_s)
            plain_commit()

        store._commit = slow_commit
    while True:
        items = request_items(n, layout)
        print(f"try {n} " + " ".join(it.id for it in items), flush=True)
        store.add(items)
        print(f"ack {n}", flush=True)
        n += 1
        time.sleep(0.005)  # a steady stream of adds, not a benchmark: keeps the catalogue small


if __name__ == "__main__":
    main()

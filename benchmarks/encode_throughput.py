"""Item-encoding throughput on real data: MiniLM over Amazon titles, EfficientNet-Lite0 over ML-100K posters.

Prints JSON with items/s for each encoder, measured two ways on the current device:
  encoder_items_per_s  the encoder alone on length-sorted batches (after one warm-up batch)
  job_items_per_s      the full `encode_catalogue` job (sorting, chunk files, checksums, finalised store)
plus the hashing text fallback as a model-free reference.

    nice -n 10 python benchmarks/encode_throughput.py [--data ../shared/data] [--device auto|cpu|cuda]
        [--n-text 2000] [--n-images 300] [--precision fp32|fp16|bf16] [--threads N] [--out result.json]
"""

from __future__ import annotations

import argparse
import html
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _output import emit_json

from modalrec.data.items import ItemTable
from modalrec.data.vocab import Vocabulary
from modalrec.devices import resolve_device
from modalrec.features.build import encode_catalogue
from modalrec.features.encoders.base import Encoder

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def amazon_titles(root: Path, n: int) -> ItemTable:
    path = root / "amazon-iisan" / "Industrial_and_Scientific_items.tsv"
    ids, titles = [], [""]
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            raw, _, title = line.rstrip("\n").partition("\t")
            if raw and raw not in ids[-1:]:
                ids.append(raw)
                titles.append(html.unescape(title))
            if len(ids) == n:
                break
    return ItemTable(Vocabulary(ids), {"title": titles})


def ml100k_posters(root: Path, n: int) -> ItemTable:
    folder = root / "ml-100k" / "posters"
    files = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem))[:n]
    vocab = Vocabulary([p.stem for p in files])
    return ItemTable(vocab, {}, [None, *[str(p) for p in files]])


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encoder_rate(enc: Encoder, inputs: list[Any], batch_size: int, device: str) -> tuple[float, int]:
    """items/s of the bare encoder on length-sorted batches; returns (rate, missing)."""
    order = sorted(range(len(inputs)), key=lambda i: -enc.sort_key(inputs[i]))
    enc.encode([inputs[i] for i in order[:batch_size]])  # warm-up: lazy init, kernels, caches
    _sync(device)
    start, missing = time.perf_counter(), 0
    for b in range(0, len(order), batch_size):
        missing += int(enc.encode([inputs[i] for i in order[b : b + batch_size]]).missing.sum())
    _sync(device)
    return len(inputs) / (time.perf_counter() - start), missing


def job_rate(items: ItemTable, modality: str, enc: Encoder, batch_size: int, device: str,
             template: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        res = encode_catalogue(items, Path(tmp) / "store", {modality: enc}, template=template,
                               batch_size=batch_size, device=device, progress=False)
        wall = time.perf_counter() - start
    ms = res.modalities[modality]
    return {"job_items_per_s": round(items.n_items / wall, 1), "job_seconds": round(wall, 2),
            "job_missing": ms.n_missing}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--n-text", type=int, default=2000)
    ap.add_argument("--n-images", type=int, default=300)
    ap.add_argument("--text-batch", type=int, default=128)
    ap.add_argument("--image-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    result: dict[str, Any] = {
        "device": device, "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "precision": args.precision,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }

    from modalrec.features.encoders.hashing import HashingText
    from modalrec.features.encoders.image import EfficientNetLite0
    from modalrec.features.encoders.text import SentenceTransformerText

    titles = amazon_titles(args.data, args.n_text)
    texts = [titles.text(i, "{title}") for i in range(1, titles.n_items + 1)]
    t0 = time.perf_counter()
    minilm = SentenceTransformerText("minilm", device=device, precision=args.precision)
    load_s = time.perf_counter() - t0
    rate, _ = encoder_rate(minilm, texts, args.text_batch, device)
    result["text_minilm"] = {"n": len(texts), "dataset": "amazon-iisan Industrial_and_Scientific titles",
                             "batch_size": args.text_batch, "load_seconds": round(load_s, 2),
                             "encoder_items_per_s": round(rate, 1),
                             **job_rate(titles, "text", minilm, args.text_batch, device, "{title}")}
    hashing = HashingText(256)
    rate, _ = encoder_rate(hashing, texts, args.text_batch, "cpu")
    result["text_hashing"] = {"n": len(texts), "encoder_items_per_s": round(rate, 1)}

    posters = ml100k_posters(args.data, args.n_images)
    paths = [posters.image_path(i) for i in range(1, posters.n_items + 1)]
    t0 = time.perf_counter()
    effnet = EfficientNetLite0(device=device, precision=args.precision)
    load_s = time.perf_counter() - t0
    rate, missing = encoder_rate(effnet, paths, args.image_batch, device)
    result["image_efficientnet_lite0"] = {"n": len(paths), "dataset": "ml-100k posters (92x138 -> 224x224)",
                                          "batch_size": args.image_batch, "load_seconds": round(load_s, 2),
                                          "encoder_items_per_s": round(rate, 1), "missing": missing,
                                          **job_rate(posters, "image", effnet, args.image_batch, device, None)}
    emit_json(result, args.out)


if __name__ == "__main__":
    main()

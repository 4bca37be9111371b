"""Training cost of IISAN vs full fine-tuning (FFT) vs LoRA vs the frozen backbone, same data and encoder.

Data: the IISAN papers' Amazon Scientific TSVs (titles). Encoder: the packaged all-MiniLM-L6-v2 (6 layers,
384-d). Every method is SASRec over an item tower:
  iisan   intra-modal SAN over MiniLM's cached per-layer hidden states (encoder never runs in training)
  frozen  MiniLM's cached last-layer features + a linear projection
  fft     MiniLM inside the item tower, all weights trained (encoder forward + backward every step)
  lora    MiniLM inside the item tower, frozen, LoRA (rank r) on query / value
Each method runs in its own subprocess (clean peak-memory numbers) on the SAME training batches: a few
warm-up steps, then `--steps` timed optimizer steps. seconds_per_epoch = mean step time x the number of
batches in one epoch of the training split (extrapolated; labelled as such). Peak memory: CUDA max
allocated, or CPU RSS sampled during the timed steps. Prints JSON with ratios to IISAN.

    nice -n 10 python benchmarks/iisan_efficiency.py --steps 3 --batch-size 8 --max-len 10 --threads 1
    python benchmarks/iisan_efficiency.py --device cuda --batch-size 64 --max-len 20 --steps 20
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit_json
from iisan_scientific import DEFAULT_DATA, FILES, context, prepare

log = logging.getLogger("iisan_bench")
METHODS = ("iisan", "frozen", "fft", "lora")


def build(method: str, prep: dict[str, Any], args: argparse.Namespace) -> torch.nn.Module:
    from modalrec.models.iisan.model import IISAN, IISANConfig, states_from_cache
    from modalrec.models.iisan.peft_baselines import (
        EncoderFinetune,
        EncoderFinetuneConfig,
        FrozenBackbone,
        FrozenBackboneConfig,
        tokenize_items,
    )

    ctx = context(prep, args.max_len)
    common = {"dim": args.dim, "max_len": args.max_len, "dropout": 0.1}
    if method in ("iisan", "frozen"):
        states = states_from_cache(prep["cache"], ("text",))
        if method == "iisan":
            return IISAN.build(IISANConfig(**common, bottleneck=args.bottleneck), ctx, states)
        return FrozenBackbone.build(FrozenBackboneConfig(**common), ctx, states)
    from modalrec.features.encoders.hub import load_hf_text

    module, tokenizer, _, _ = load_hf_text("minilm")
    items = prep["dataset"].items
    ids, mask = tokenize_items(tokenizer, items.texts("{title}"), max_tokens=args.max_tokens)
    cfg = EncoderFinetuneConfig(**common, mode="full" if method == "fft" else "lora", lora_r=args.lora_r,
                                lora_alpha=2.0 * args.lora_r, encode_batch=args.encode_batch)
    return EncoderFinetune.build(cfg, ctx, module, ids, mask)


def worker(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time `--steps` optimizer steps of one method (after `--warmup` steps) and measure peak memory."""
    from modalrec.costs import PeakMemory
    from modalrec.data.sequences import TrainWindows
    from modalrec.models.iisan.model import efficiency_report

    prep = prepare(args.data_dir, args.dataset, args.cache_root, args.max_users, "cpu", args.encode_batch, args.seed,
                   with_cache=method in ("iisan", "frozen"))
    device = torch.device(args.device)
    model = build(method, prep, args).to(device)
    model.train()
    windows = TrainWindows(prep["split"].train, args.max_len)
    batches = windows.batches(args.batch_size, seed=args.seed, epoch=1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> float:
        batch = next(batches).to(device)
        loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    times, losses = [], []
    with PeakMemory(device) as mem:
        for _ in range(args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            losses.append(step())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    n_batches = windows.num_batches(args.batch_size)
    per_step = float(np.mean(times))
    eff = efficiency_report(model, seconds_per_epoch=per_step * n_batches, memory=mem,
                            cache_paths=[prep["cache_dir"]] if method in ("iisan", "frozen") else [])
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():  # inference cost: item vectors for a sample of the catalogue
        sample = torch.arange(1, min(args.table_items, prep["split"].n_items) + 1, device=device)
        model.tower(sample)
    table_s = time.perf_counter() - t0
    return {"method": method, **eff, "seconds_per_step": per_step, "step_seconds": times,
            "steps_per_epoch": n_batches, "seconds_per_epoch_is": "extrapolated: mean step time x steps_per_epoch",
            "losses": losses, "item_vectors_seconds_per_1k": 1000 * table_s / len(sample)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--dataset", choices=sorted(FILES), default="Scientific")
    p.add_argument("--cache-root", type=Path, default=Path(".cache/hidden"))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--max-users", type=int, default=None, help="train split of the first N users only")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-len", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=32, help="title tokens for FFT / LoRA")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--bottleneck", type=int, default=64)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--encode-batch", type=int, default=128)
    p.add_argument("--table-items", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=METHODS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)))
        return {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    # the hidden cache is built once here (its build time is reported, not counted per epoch)
    prep = prepare(args.data_dir, args.dataset, args.cache_root, args.max_users, args.device, args.encode_batch,
                   args.seed, with_cache=bool({"iisan", "frozen"} & set(methods)))
    raw = list(argv if argv is not None else sys.argv[1:])
    passthrough = [a for i, a in enumerate(raw)
                   if not a.startswith("--out") and not (i > 0 and raw[i - 1] == "--out")]
    results: dict[str, Any] = {}
    for method in methods:
        log.info("measuring %s", method)
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--worker", method],
                              capture_output=True, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            results[method] = {"error": proc.stderr[-2000:]}
            continue
        results[method] = json.loads(lines[-1][len("RESULT "):])
    ratios = {}
    base = results.get("iisan", {})
    for method, r in results.items():
        if "error" in r or "error" in base or not base:
            continue
        ratios[method] = {
            "seconds_per_epoch_vs_iisan": r["seconds_per_epoch"] / base["seconds_per_epoch"],
            "peak_memory_vs_iisan": r["peak_memory_mb"] / base["peak_memory_mb"],
            "memory_above_start_vs_iisan": r["peak_memory_above_start_mb"] / max(base["peak_memory_above_start_mb"], 1e-9),
            "trainable_parameters_vs_iisan": r["trainable_parameters"] / base["trainable_parameters"],
        }
    out = {
        "benchmark": "iisan_efficiency",
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (packaged), 6 layers, 384-d",
        "dataset": prep["dataset"].describe()["name"], "train_events": len(prep["split"].train),
        "device": args.device, "threads": torch.get_num_threads(),
        "hidden_cache": {"dir": str(prep["cache_dir"]), "size_mb": results.get("iisan", {}).get("cache_size_mb"),
                         "build_seconds_this_run": prep["cache_seconds"], "mode": prep["cache_mode"]},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "worker"},
        "results": results, "ratios": ratios,
    }
    emit_json(out, args.out)
    return out


if __name__ == "__main__":
    main()

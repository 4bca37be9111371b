"""IISAN-Versa (text + image side adapters) vs IISAN (text), frozen features, LoRA and full fine-tuning.

Same data, split, batches and evaluator for every method (leave-one-out, full ranking over all items, the
user's history masked, pessimistic ties; best epoch on VALID NDCG@10, TEST once). Every method is SASRec
over a different item tower:
  content        frozen features: the encoders' last-layer pooled outputs (MiniLM sentence vector, EfficientNet
                 head) through the content tower (L2-normalised, projected, fused) — "content SASRec"
  iisan_text     IISAN: intra-modal SAN over MiniLM's cached per-layer hidden states (LayerDrop 2, 4, 6)
  iisan_versa    IISAN-Versa as the library builds it by default: text and image intra-modal SANs +
                 inter-modal SAN (with the dimension transformation layer 384 -> 1280) over cached MiniLM layers
                 and EfficientNet-Lite0 stages, asymmetric group LayerDrop, item vectors of fixed length
                 (IISANConfig item_norm "auto", as the content tower's; chosen on VALID, see versa_paper)
  versa_paper    the IISAN papers' variant: item vectors as the fusion layer outputs them (item_norm None)
  versa_no_inter / versa_all  ablations: IISAN-Versa without the inter-modal SAN / without LayerDrop (every
                 layer / stage gets a block; paired by explicit selections of equal length)
  versa_paper_no_inter / versa_paper_all  the same ablations of the papers' variant
  iisan_text_norm  ablation: IISAN (text) with item vectors L2-normalised to --item-norm
  fft / lora     MiniLM runs inside the item tower on the item text (forward + backward every step): all
                 weights trained (MiniLM at --lr x --encoder-lr-scale: pretrained weights), or LoRA (rank r)
                 on query / value. Text only: fine-tuning EfficientNet too would cost more still.
Hidden states are cached once (features.build.encode_hidden_cache; MiniLM layers 0..6 mean-pooled,
EfficientNet-Lite0 stem, 7 stages and head global-average-pooled, zero-padded to 1280).

Parts, in this order, the JSON rewritten after every method ("complete": false until the end): cost, then
quality. Every method runs in its own subprocess, so its peak RSS is its own. `--quality` methods trained on
all users; `--subset-users N` (and `--subset-history K`: each user's last K events): the `--subset-methods`
(FFT / LoRA and the others, for a like-for-like comparison) trained on that subset only (FFT / LoRA over all
users do not fit a shared CPU); each records its measured seconds per training epoch and peak RSS. Cost:
every `--cost-methods` method times `--cost-steps` optimizer steps on full-data batches (seconds per epoch =
mean step time x batches per epoch, extrapolated) and records peak RSS. A top-level "claims" object states
the IISAN-Versa target, check by check, met or not.

    nice -n 10 python benchmarks/iisan_versa.py --dataset ml100k --threads 1 \
        --out benchmarks/results/iisan_versa_ml100k_cpu.json
    python benchmarks/iisan_versa.py --dataset builtin --epochs 2 --subset-users 50 --cost-steps 1   # smoke
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _output import emit_json
from _pinned import FIXED_ITEM_LENGTH

from modalrec.io import write_json_atomic

log = logging.getLogger("iisan_versa")
ML100K = Path(os.environ.get("MODALREC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "ml-100k"
TEMPLATES = {"ml100k": "{title}. Genres: {genres}. {plot}", "builtin": "{title}. {description}"}
IMAGE_ENCODER = {"ml100k": "efficientnet-lite0", "builtin": "efficientnet-lite0?image_size=96"}
METHODS = ("content", "iisan_text", "iisan_versa", "versa_no_inter", "versa_all", "versa_paper", "versa_paper_no_inter",
           "versa_paper_all", "iisan_text_norm", "fft", "lora")
ENCODER_METHODS = ("fft", "lora")
LABELS = {"content": "content SASRec (frozen features)", "iisan_text": "IISAN (text)",
          "iisan_versa": "IISAN-Versa (default: fixed-length items)", "versa_no_inter": "Versa w/o inter-modal SAN",
          "versa_all": "Versa w/o LayerDrop", "versa_paper": "Versa as in the papers (unnormalised items)",
          "versa_paper_no_inter": "papers' Versa w/o inter-modal SAN", "versa_paper_all": "papers' Versa w/o LayerDrop",
          "iisan_text_norm": "IISAN (text) + fixed-length items", "fft": "FFT (MiniLM)", "lora": "LoRA (MiniLM)"}
TARGETS = {"versa_ge_fft_quality": "quality >= FFT", "time_10x_less_than_fft": "time per epoch >= 10x less than FFT",
           "memory_2x_less_than_fft": "memory >= 2x less than FFT", "versa_ge_content_sasrec": "quality >= content SASRec"}


def prepare(args: argparse.Namespace, subset_users: int | None, with_cache: bool = True) -> dict[str, Any]:
    """Dataset, leave-one-out split (on the first `subset_users` users if given) and the hidden-state cache of
    both encoders (built once under --cache-root, reused afterwards)."""
    from modalrec.data.splits import leave_one_out
    from modalrec.features.build import encode_hidden_cache
    from modalrec.features.hidden_cache import HiddenStateCache

    if args.dataset == "ml100k":
        from modalrec.data.sources.movielens import load_movielens

        ds = load_movielens(args.data_dir)
    else:
        from modalrec.data.sources.synthetic import generate

        ds = generate(n_users=args.builtin_users, n_items=args.builtin_items, seed=args.seed,
                      image_dir=args.cache_root / "builtin-images")
    inter = ds.interactions
    if subset_users:
        keep = inter.user <= subset_users  # index spaces kept: the cache rows still match
        if args.subset_history:  # each subset user's last N events: fewer windows, so FFT / LoRA fit
            keep &= inter.position_in_user() >= inter.seq_lengths()[inter.user] - args.subset_history
        inter = inter.subset(keep)
    split = leave_one_out(inter)
    cache_dir = args.cache_root / f"{ds.name}-{ds.item_vocab.hash}-minilm-effnetlite0-all"
    out: dict[str, Any] = {"dataset": ds, "split": split, "cache": None, "cache_dir": cache_dir}
    if with_cache:
        t0 = time.perf_counter()
        summary = encode_hidden_cache(ds.items, cache_dir, {"text": "minilm", "image": IMAGE_ENCODER[args.dataset]},
                                      layers="all", template={"text": TEMPLATES[args.dataset]},
                                      batch_size=args.encode_batch, device="cpu", progress=False)
        out.update(cache=HiddenStateCache.open(cache_dir, ds.item_vocab), cache_seconds=time.perf_counter() - t0,
                   cache_mode=summary.mode)
    return out


def build(method: str, prep: dict[str, Any], args: argparse.Namespace) -> torch.nn.Module:
    from modalrec.models.base import ModelContext
    from modalrec.models.iisan.model import IISAN, IISANConfig, states_from_cache
    from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
    from modalrec.models.towers.config import TowerConfig

    split = prep["split"]
    ctx = ModelContext.for_split(split, seed=args.seed)
    common = {"dim": args.dim, "max_len": args.max_len, "dropout": args.dropout, "n_layers": 2, "n_heads": 2}
    if method in ENCODER_METHODS:
        from modalrec.features.encoders.hub import load_hf_text
        from modalrec.models.iisan.peft_baselines import (
            EncoderFinetune,
            EncoderFinetuneConfig,
            tokenize_items,
        )

        module, tokenizer, _, _ = load_hf_text("minilm", local_files_only=True)
        ids, mask = tokenize_items(tokenizer, prep["dataset"].items.texts(TEMPLATES[args.dataset]), args.max_tokens)
        cfg = EncoderFinetuneConfig(**common, mode="full" if method == "fft" else "lora", lora_r=args.lora_r,
                                    lora_alpha=2.0 * args.lora_r, encode_batch=args.encode_batch,
                                    encoder_lr_scale=args.encoder_lr_scale)
        return EncoderFinetune.build(cfg, ctx, module, ids, mask)
    states = states_from_cache(prep["cache"], ("text", "image"))
    if method == "content":
        for m, s in states.items():  # frozen features = each encoder's last-layer pooled output
            ctx.item_features[m] = s.take([s.depth])[:, 0].float()  # [N+1, d_m]
            ctx.feature_missing[m] = s.missing
        tower = TowerConfig(kind="text+image", fusion=args.content_fusion, options=dict(FIXED_ITEM_LENGTH))
        return SASRec.build(SASRecConfig(**common, tower=tower, loss="inbatch"), ctx)
    adapters: dict[str, Any] = {"bottleneck": args.bottleneck, "adapter_dropout": args.adapter_dropout}
    if method == "iisan_text_norm":  # ablation: item vectors of fixed length, as the content tower's
        adapters["item_norm"] = args.item_norm
    if method.startswith("versa_paper"):  # the papers' item vectors; else IISAN-Versa's default (item_norm "auto")
        adapters["item_norm"] = None
    if method in ("iisan_text", "iisan_text_norm"):
        return IISAN.build(IISANConfig(**common, **adapters, modalities=["text"]), ctx, states)
    if method in ("iisan_versa", "versa_paper"):
        return IISAN.build(IISANConfig(**common, **adapters, layerdrop="group"), ctx, states)
    if method in ("versa_no_inter", "versa_paper_no_inter"):
        return IISAN.build(IISANConfig(**common, **adapters, layerdrop="group", use_inter=False), ctx, states)
    if method in ("versa_all", "versa_paper_all"):  # no LayerDrop: 6 text layers paired with the last 6 of 8 stages
        t, v = states["text"].depth, states["image"].depth
        n = min(t, v)
        return IISAN.build(IISANConfig(**common, **adapters, text_layers=list(range(t - n + 1, t + 1)),
                                       image_layers=list(range(v - n + 1, v + 1))), ctx, states)
    raise SystemExit(f"unknown method {method!r}; choose from {list(METHODS)}")


def train_and_test(method: str, prep: dict[str, Any], args: argparse.Namespace, epochs: int) -> dict[str, Any]:
    from modalrec.costs import PeakMemory
    from modalrec.data.sequences import TrainWindows
    from modalrec.evaluation.evaluator import Evaluator
    from modalrec.models.iisan.model import efficiency_report
    from modalrec.training.loop import TrainConfig, fit

    torch.manual_seed(args.seed)
    model = build(method, prep, args)
    split = prep["split"]
    ev = {part: Evaluator(getattr(split, part), split.n_items, ks=(10, 20), max_len=args.max_len)
          for part in ("valid", "test")}
    cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=0.0,
                      patience=args.patience, seed=args.seed, progress=False)
    started = time.perf_counter()
    with PeakMemory("cpu") as mem:
        hist = fit(model, TrainWindows(split.train, args.max_len), cfg, validate=lambda m: ev["valid"].run(m, "valid"))
    train_s = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        valid, test = ev["valid"].run(model, "valid"), ev["test"].run(model, "test")  # TEST once, best weights
    eff = efficiency_report(model, seconds_per_epoch=float(np.mean(hist.epoch_seconds)), memory=mem)
    out = {"test": _pct(test.overall), "valid": _pct(valid.overall), "test_events": int(test.counts["overall"]),
           "epochs_run": hist.epochs, "best_epoch": hist.best_epoch, "train_seconds_total": round(train_s, 1),
           "seconds_per_epoch_measured": eff["seconds_per_epoch"], "trainable_parameters": eff["trainable_parameters"],
           "peak_memory_mb": round(mem.peak_bytes / 2**20, 1),
           "peak_memory_is": "RSS of this method's own process while training (sampled), data and cache included"}
    out.update({k: eff[k] for k in ("layers", "gates") if k in eff})
    log.info("%s: valid %s test %s (%.0f s)", method, out["valid"], out["test"], train_s)
    return out


def _pct(metrics: dict[str, float | None]) -> dict[str, float | None]:
    keep = ("hr@10", "ndcg@10", "hr@20", "ndcg@20")
    return {k: None if metrics.get(k) is None else round(100.0 * float(metrics[k]), 3) for k in keep}


def cost_worker(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time `--cost-steps` optimizer steps (after one warm-up step) on full-data batches; peak RSS."""
    from modalrec.costs import PeakMemory
    from modalrec.data.sequences import TrainWindows
    from modalrec.models.iisan.model import efficiency_report

    prep = prepare(args, None, with_cache=method not in ENCODER_METHODS)
    torch.manual_seed(args.seed)
    model = build(method, prep, args)
    model.train()
    windows = TrainWindows(prep["split"].train, args.max_len)
    batches = (b for epoch in itertools.count(1) for b in windows.batches(args.batch_size, seed=args.seed, epoch=epoch))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)

    def step() -> None:
        loss = model.loss(next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.cost_warmup):  # lazy init, allocator
        step()
    times = []
    with PeakMemory("cpu") as mem:
        for _ in range(args.cost_steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    n_batches = windows.num_batches(args.batch_size)
    eff = efficiency_report(model, seconds_per_epoch=float(np.mean(times)) * n_batches, memory=mem)
    return {"method": method, **{k: v for k, v in eff.items() if k not in ("gates", "cache_size_mb")},
            "seconds_per_step": float(np.mean(times)), "step_seconds": times, "steps_per_epoch": n_batches,
            "seconds_per_epoch_is": "extrapolated: mean step time x steps_per_epoch (full training split)"}


def worker(part: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """One method of one part ("cost", "full" or "subset"), run inside its own process."""
    if part == "cost":
        return cost_worker(method, args)
    prep = prepare(args, args.subset_users if part == "subset" else None)
    return train_and_test(method, prep, args, (args.subset_epochs or args.epochs) if part == "subset" else args.epochs)


def run_worker(part: str, method: str, argv: list[str]) -> dict[str, Any]:
    """`worker` in a fresh subprocess: the peak RSS is that method's alone (a process keeps its high-water mark)."""
    passthrough = [a for i, a in enumerate(argv) if not a.startswith("--out") and not (i > 0 and argv[i - 1] == "--out")]
    log.info("%s: %s", part, method)
    proc = subprocess.run([sys.executable, __file__, *passthrough, "--worker", f"{part}:{method}"],
                          capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][7:])
    log.error("%s %s failed:\n%s", part, method, proc.stderr[-2000:])
    return {"error": proc.stderr[-2000:]}


def claims(out: dict[str, Any], command: str) -> dict[str, Any]:
    """The IISAN-Versa target on this data, from the measured numbers only, each check met / not met with its
    numbers, and the ablations that bear on a failed one. Quality vs FFT, time and memory come from the part
    that trained FFT (its own per-method measured seconds per epoch and peak RSS; else the timed `cost` steps);
    quality vs content SASRec from the all-users part if it ran both, else the subset."""
    parts = {"full": out.get("full", {}).get("results", {}), "subset": out.get("subset", {}).get("results", {})}
    cost = out.get("cost", {})
    caps = {"full": out["args"]["epochs"], "subset": out["args"].get("subset_epochs") or out["args"]["epochs"]}
    names = {"full": "all users", "subset": _subset_name(out)}

    def metric(part: str, m: str, key: str = "ndcg@10", split: str = "test") -> float | None:
        return parts[part].get(m, {}).get(split, {}).get(key)

    def ratio(values: dict[str, Any], m: str, key: str) -> float | None:
        a, b = values.get(m, {}).get(key), values.get("iisan_versa", {}).get(key)
        return None if a is None or not b else round(a / b, 2)

    ours: dict[str, Any] = {}
    for part, results in parts.items():
        for m, r in results.items():
            if "test" not in r:
                ours[f"{names[part]}: {LABELS.get(m, m)}"] = "failed"
                continue
            ours[f"{names[part]}: {LABELS.get(m, m)}"] = (
                f"TEST NDCG@10 {r['test']['ndcg@10']} %, HR@10 {r['test']['hr@10']} %, best epoch {r['best_epoch']} "
                f"of {caps[part]}, {r['seconds_per_epoch_measured']:.3g} s/epoch, peak RSS "
                + (f"{r['peak_memory_mb']:.0f} MB" if "peak_memory_mb" in r else "not recorded"))
    fft_part = next((p for p in ("subset", "full") if metric(p, "fft") is not None and metric(p, "iisan_versa") is not None), None)
    for m in ("fft", "lora"):
        label = "FFT" if m == "fft" else "LoRA"
        if fft_part is not None and m in parts[fft_part]:
            ours[f"{label} / Versa seconds per epoch ({names[fft_part]})"] = ratio(parts[fft_part], m, "seconds_per_epoch_measured")
            ours[f"{label} / Versa peak RSS ({names[fft_part]})"] = ratio(parts[fft_part], m, "peak_memory_mb")
        if m in cost and "iisan_versa" in cost:
            ours[f"{label} / Versa seconds per epoch (all users, timed steps)"] = ratio(cost, m, "seconds_per_epoch")
            ours[f"{label} / Versa peak RSS (all users, timed steps)"] = ratio(cost, m, "peak_memory_mb")
    time_key = next((k for k in ours if k.startswith("FFT / Versa seconds")), None)
    mem_key = next((k for k in ours if k.startswith("FFT / Versa peak RSS")), None)
    content_part = next((p for p in ("full", "subset") if metric(p, "content") is not None
                         and metric(p, "iisan_versa") is not None), None)
    checks: dict[str, bool | None] = {
        "versa_ge_fft_quality": None if fft_part is None else _ge(metric(fft_part, "iisan_versa"), metric(fft_part, "fft")),
        "time_10x_less_than_fft": None if time_key is None else _ge(ours[time_key], 10.0),
        "memory_2x_less_than_fft": None if mem_key is None else _ge(ours[mem_key], 2.0),
        "versa_ge_content_sasrec": None if content_part is None else _ge(metric(content_part, "iisan_versa"),
                                                                         metric(content_part, "content")),
    }
    said = {
        "versa_ge_fft_quality": lambda: f"Versa {_valid_test(parts[fft_part], 'iisan_versa')} vs FFT "
                                        f"{_valid_test(parts[fft_part], 'fft')} (VALID / TEST NDCG@10 %, checked on "
                                        f"TEST, {names[fft_part]})",
        "time_10x_less_than_fft": lambda: f"FFT / Versa seconds per epoch {ours[time_key]}",
        "memory_2x_less_than_fft": lambda: f"FFT / Versa peak RSS {ours[mem_key]}",
        "versa_ge_content_sasrec": lambda: f"Versa {_valid_test(parts[content_part], 'iisan_versa')} vs content "
                                           f"SASRec {_valid_test(parts[content_part], 'content')} (VALID / TEST "
                                           f"NDCG@10 %, checked on TEST, {names[content_part]})",
    }
    verdicts = [f"{TARGETS[name]}: {'not measured in this run' if ok is None else ('met' if ok else 'NOT MET')}"
                + ("" if ok is None else f" ({said[name]()})") for name, ok in checks.items()]
    for name, part, other in (("versa_ge_fft_quality", fft_part, "fft"), ("versa_ge_content_sasrec", content_part, "content")):
        if checks[name] is not None:
            on_valid = _ge(metric(part, "iisan_versa", split="valid"), metric(part, other, split="valid"))
            if on_valid is not None and on_valid != checks[name]:
                verdicts.append(f"'{TARGETS[name]}' on VALID instead: {'met' if on_valid else 'NOT MET'}")
    resumed = out.get("resumed", {}).get(fft_part or "", [])
    if fft_part is not None and time_key and time_key.startswith("FFT / Versa seconds per epoch (" + names[fft_part]) \
            and ("fft" in resumed) != ("iisan_versa" in resumed):
        verdicts.append(f"FFT's and Versa's seconds per epoch ({names[fft_part]}) were measured in different runs "
                        "(--resume) of a shared machine, under different load")
    if fft_part is not None and "lora" in parts[fft_part]:  # LoRA's quality next to FFT's (and Versa's)
        verdicts.append(f"fine-tuned MiniLM vs IISAN-Versa ({names[fft_part]}; VALID / TEST NDCG@10 %): " + ", ".join(
            f"{LABELS[m]} {_valid_test(parts[fft_part], m)}" for m in ("fft", "lora", "iisan_versa")
            if m in parts[fft_part]))
    def ablations(part: str) -> str:  # every other variant of that part: which design choice falls short
        others = [m for m in parts[part] if m not in ("content", "iisan_versa", "fft", "lora") and "test" in parts[part][m]]
        return ", ".join(f"{LABELS.get(m, m)} {_valid_test(parts[part], m)}" for m in others)

    missed: dict[str, list[str]] = {part: [] for part in parts}  # per part, the quality targets it failed
    for name, part, other in (("versa_ge_fft_quality", fft_part, "fft"), ("versa_ge_content_sasrec", content_part, "content")):
        if checks[name] is False:
            missed[part].append(f"'{TARGETS[name]}'")
            adapters = [m for m in parts[part] if m.startswith(("iisan", "versa")) and metric(part, m, split="valid") is not None]
            best = max(adapters, key=lambda m: metric(part, m, split="valid"))  # type: ignore[arg-type, return-value]
            reaches = _ge(metric(part, best, split="valid"), metric(part, other, split="valid"))
            verdicts.append(f"best adapter variant on VALID ({names[part]}): {LABELS.get(best, best)} "
                            f"{_valid_test(parts[part], best)}, {'at or above' if reaches else 'below'} "
                            f"{LABELS[other]} on VALID")
    for part in parts:
        if ablations(part):
            why_for = f" for {' and '.join(missed[part])}" if missed[part] else ""
            verdicts.append(f"ablations{why_for} ({names[part]}; VALID / TEST NDCG@10 %): {ablations(part)}")
    requested = {"full": out["args"]["quality"], "subset": out["args"]["subset_methods"] if out.get("subset") else ""}
    for part, results in parts.items():
        unrun = [LABELS.get(m, m) for m in requested[part].split(",") if m and m not in results]
        if unrun:
            verdicts.append(f"{names[part]}: not run (the run was stopped before them): {', '.join(unrun)}")
        capped = [LABELS.get(m, m) for m, r in results.items() if r.get("best_epoch") == caps[part]]
        if capped:
            verdicts.append(f"{names[part]}: best VALID epoch = the {caps[part]}-epoch cap: {', '.join(capped)}")
    described = out["subset"] if parts["subset"] and not parts["full"] else out  # the part the checks read
    return {
        "system": "IISAN-Versa",
        "claim": "IISAN-Versa (text + image side adapters over cached hidden states) reaches full fine-tuning's "
                 "quality at >= 10x less time per epoch and >= 2x less memory, and beats the frozen-feature "
                 "content SASRec",
        "protocol": f"{out['dataset']['name']} ({names['subset'] if described is not out else 'all users'}; "
                    f"{described['split']['test']['events']} TEST events), "
                    "leave-one-out, full ranking, TEST once after VALID early stopping; SASRec over each item "
                    "tower, same batches and epochs; each method in its own process (seconds per training epoch, "
                    "peak RSS)" + (f"; FFT's MiniLM at lr x {out['args'].get('encoder_lr_scale', 1.0)}" if fft_part else "")
                    + f"; CPU, {out['threads']} thread(s)",
        "ours": ours, "checks": checks,
        "target_met": all(v is True for v in checks.values()),
        "why": "; ".join(verdicts),
        "command": command,
    }


def _valid_test(results: dict[str, Any], m: str) -> str:
    r = results.get(m, {})
    return f"{r.get('valid', {}).get('ndcg@10')} / {r.get('test', {}).get('ndcg@10')}"


def _subset_name(out: dict[str, Any]) -> str:
    sub = out.get("subset")
    if not sub:
        return "subset"
    history = sub.get("history", "all")
    return f"first {sub['users']} users" + ("" if history == "all" else f", last {history} events each")


def _ge(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else bool(a >= b)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(TEMPLATES), default="ml100k")
    p.add_argument("--data-dir", type=Path, default=ML100K)
    p.add_argument("--builtin-users", type=int, default=600)
    p.add_argument("--builtin-items", type=int, default=800)
    p.add_argument("--cache-root", type=Path, default=Path(".cache/hidden"))
    p.add_argument("--quality", default="content,iisan_text,iisan_versa,versa_no_inter,versa_all",
                   help="methods trained on all users (comma list; empty = none)")
    p.add_argument("--subset-users", type=int, default=150, help="0 = no subset part")
    p.add_argument("--subset-history", type=int, default=0,
                   help="keep each subset user's last N events only (0 = all)")
    p.add_argument("--subset-methods", default="content,iisan_text,iisan_versa,lora,fft")
    p.add_argument("--cost-methods", default="iisan_text,iisan_versa,content,lora,fft")
    p.add_argument("--cost-steps", type=int, default=3)
    p.add_argument("--cost-warmup", type=int, default=1)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--subset-epochs", type=int, default=None, help="default: --epochs")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--bottleneck", type=int, default=64)
    p.add_argument("--adapter-dropout", type=float, default=0.1)
    p.add_argument("--content-fusion", default="mlp")
    p.add_argument("--item-norm", type=float, default=3.0, help="item-vector length of iisan_text_norm")
    p.add_argument("--max-tokens", type=int, default=64, help="item-text tokens for FFT / LoRA")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--encoder-lr-scale", type=float, default=0.05,
                   help="FFT: MiniLM's lr = --lr x this (pretrained weights; the rest of the model trains at --lr)")
    p.add_argument("--encode-batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=[f"{part}:{m}" for part in ("cost", "full", "subset") for m in METHODS],
                   default=None, help=argparse.SUPPRESS)
    p.add_argument("--claims-from", type=Path, default=None,
                   help="recompute the claims object of an existing result JSON (rewritten in place); runs nothing")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--resume", action="store_true",
                   help="reuse the methods --out already holds when it was written with the same settings")
    raw = list(argv if argv is not None else sys.argv[1:])
    args = p.parse_args(raw)
    if args.claims_from:
        old = json.loads(args.claims_from.read_text())
        old["claims"] = claims(old, old["claims"]["command"])
        emit_json(old, args.claims_from)
        return old
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        part, _, method = args.worker.partition(":")
        print("RESULT " + json.dumps(worker(part, method, args)))
        return {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    prep = prepare(args, None)
    out: dict[str, Any] = {
        "benchmark": "iisan_versa",
        "dataset": prep["dataset"].describe(), "split": prep["split"].describe(),
        "protocol": "leave-one-out, full ranking over all items, user's history masked, pessimistic ties; metrics "
                    "in %; best epoch on VALID NDCG@10 (early stopping), TEST once; same batches for every method",
        "encoders": {"text": f"all-MiniLM-L6-v2 (packaged), template {TEMPLATES[args.dataset]!r}, layers 0..6",
                     "image": f"{IMAGE_ENCODER[args.dataset]} (packaged), stem + 7 stages + head, pooled"},
        "cache": {"dir": str(prep["cache_dir"]), "mode": prep["cache_mode"],
                  "seconds_this_run": round(prep["cache_seconds"], 1),
                  "size_mb": round(prep["cache"].size_bytes() / 2**20, 2),
                  "layers": {m: prep["cache"].layers(m) for m in prep["cache"].modalities},
                  "layer_dims": {m: prep["cache"].layer_dims(m) for m in prep["cache"].modalities}},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "worker"},
        "threads": torch.get_num_threads(),
    }
    command = "nice -n 10 python benchmarks/iisan_versa.py " + " ".join(raw)

    def save(complete: bool) -> dict[str, Any]:
        """Write what has been measured so far (a long run that is stopped keeps its finished parts)."""
        out["complete"], out["total_seconds"] = complete, round(time.perf_counter() - started, 1)
        result = {"claims": claims(out, command), **out}
        if complete:
            emit_json(result, args.out)
        elif args.out:
            write_json_atomic(args.out, json.loads(json.dumps(result, default=str)))
        return result

    def measure(part: str, m: str) -> dict[str, Any]:
        if m in earlier.get(part, {}):
            out.setdefault("resumed", {}).setdefault(part, []).append(m)
            return earlier[part][m]
        return run_worker(part, m, raw)

    earlier = finished_earlier(args, p)
    out["cost"] = {}
    for m in [m for m in args.cost_methods.split(",") if m]:
        out["cost"][m] = measure("cost", m)
        save(False)
    out["full"] = {"results": {}}
    for m in [m for m in args.quality.split(",") if m]:
        out["full"]["results"][m] = measure("full", m)
        save(False)
    if args.subset_users:
        sub = prepare(args, args.subset_users, with_cache=False)
        out["subset"] = {"users": args.subset_users, "history": args.subset_history or "all",
                         "split": sub["split"].describe(), "results": {}}
        for m in [m for m in args.subset_methods.split(",") if m]:
            out["subset"]["results"][m] = measure("subset", m)
            save(False)
    return save(True)


def finished_earlier(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    """--resume: per part, the methods the --out file already holds (without an error) when it was written with
    the same settings (method lists aside; the subset's settings only matter for the subset part)."""
    if not (args.resume and args.out and args.out.exists()):
        return {}
    old = json.loads(args.out.read_text())
    stored = old.get("args", {})

    def same(keys: list[str]) -> bool:  # a setting the earlier run did not have yet counts as its default
        norm = lambda v: str(v) if isinstance(v, Path) else v
        return all(norm(stored.get(k, parser.get_default(k))) == norm(getattr(args, k)) for k in keys)

    lists = {"quality", "cost_methods", "subset_methods", "out", "resume", "claims_from", "worker"}
    subset_keys = {"subset_users", "subset_history", "subset_epochs"}
    shared = [k for k in vars(args) if k not in lists | subset_keys]
    found = {"cost": old.get("cost", {}), "full": old.get("full", {}).get("results", {}),
             "subset": old.get("subset", {}).get("results", {})}
    keep = {part: same(shared + (sorted(subset_keys) if part == "subset" else [])) for part in found}
    out = {part: {m: r for m, r in found[part].items() if "error" not in r} for part in found if keep[part]}
    log.info("resume: reusing %s", {part: sorted(r) for part, r in out.items()})
    return out


if __name__ == "__main__":
    main()
